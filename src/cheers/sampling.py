"""Sampling as small pure functions: the time grid, Euler steps, guidance, token choice."""

from __future__ import annotations

import torch


def time_shift(t: torch.Tensor, alpha: float) -> torch.Tensor:
    """s(t) = α·t / (1 + (α−1)·t); α < 1 spends more steps near noise (t = 0)."""
    return alpha * t / (1 + (alpha - 1) * t)


def timesteps(num_steps: int, shift: float, t0: float = 0.0) -> torch.Tensor:
    """The shifted times at which the velocity is evaluated, from ``t0`` to 1 inclusive.

    Text-to-image uses ``num_steps`` points from 0; editing starts at ``t0`` with
    ``int((1 − t0)·num_steps)`` points (the reference's ``int(0.9·n)`` for t0 = 0.1).
    """
    if num_steps < 2:
        raise ValueError(f"num_inference_steps must be at least 2, got {num_steps}")
    if not 0.0 <= t0 < 1.0:
        raise ValueError(f"the start time t0 must be in [0, 1), got {t0}")
    n = num_steps if t0 == 0.0 else int((1.0 - t0) * num_steps + 1e-9)
    if n < 2:
        raise ValueError(
            f"start time {t0} leaves {n} of {num_steps} steps; raise num_inference_steps"
        )
    return time_shift(torch.linspace(t0, 1.0, n), shift)


def euler_step(x: torch.Tensor, v: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """x ← x + v·(t_next − t)."""
    return x + v * (t_next - t)


def final_step(x: torch.Tensor, v: torch.Tensor, num_points: int) -> torch.Tensor:
    """The reference's extra step at t = 1: x + v/N (N = number of grid points)."""
    return x + v / num_points


def apply_guidance(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v_u + s·(v_c − v_u)."""
    return v_uncond + scale * (v_cond - v_uncond)


def sample_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V): argmax at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return logits.argmax(-1)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    scaled = logits.float() / temperature
    if not torch.isfinite(scaled).all() and torch.isfinite(logits).all():
        # A temperature so small that finite logits / T overflow float32: the distribution is
        # the one-hot at the argmax, the limit of T → 0 (softmax would give inf − inf = NaN).
        # Logits that are not finite themselves still fail loudly below.
        return logits.argmax(-1)
    probs = torch.softmax(scaled, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
    outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    if generator is not None and generator.device != sorted_probs.device:
        # A CPU generator (e.g. from an int seed) keeps results identical across devices.
        choice = torch.multinomial(sorted_probs.cpu(), 1, generator=generator)
        choice = choice.to(sorted_probs.device)
    else:
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
    return order.gather(-1, choice)[:, 0]
