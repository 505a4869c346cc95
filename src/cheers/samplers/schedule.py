"""The flow-time schedule as small pure functions: the shifted time grid and the Euler updates.

See docs/architecture.md §10.
"""

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
