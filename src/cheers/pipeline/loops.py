"""Generation loops over a prefilled KV cache: the image ODE and text decoding.

These functions work on already assembled LLM inputs (see :mod:`cheers.sequence`); turning
prompts and images into those inputs is :mod:`cheers.pipeline.llm_inputs`' job. The shape
follows flux's ``sampling.py`` (prepare the context once, then a denoising loop that calls the
model's velocity once per step and a sampler's ``step``) and gpt-fast's ``generate.py``
(prefill, then one token at a time from a decoding state, with a per-token callback).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import torch

from cheers.errors import SamplerError
from cheers.model import Cheers, FlowContext
from cheers.modules.language import KVCache
from cheers.samplers import EulerSampler, FlowMatchSampler, StepCache
from cheers.sequence import Batch, appended_block_mask, omni_mask


@dataclass
class Prefix:
    """A prefilled prompt: its inputs, the KV cache holding them and the final hidden states."""

    batch: Batch
    cache: KVCache
    hidden: torch.Tensor  # (B, T, D)

    @property
    def length(self) -> int:
        return self.batch.embeds.shape[1]


def prefill(model: Cheers, batch: Batch, room: int, cache: KVCache | None = None) -> Prefix:
    """Run the prompt once and keep its keys and values, with ``room`` free cache positions:
    in a new cache, or from the start of ``cache`` (one kept between requests)."""
    b, t = batch.valid.shape
    if cache is None:
        cache = model.new_kv_cache(b, t + room)
    elif cache.batch_size != b or cache.max_len < t + room:
        raise ValueError(
            f"the cache holds {cache.batch_size} rows of {cache.max_len} positions; this prompt "
            f"needs {b} rows of {t} + {room}"
        )
    mask = omni_mask(batch.block, batch.valid)
    hidden = model.transformer(batch.embeds, batch.positions, mask, cache, 0)
    return Prefix(batch, cache, hidden)


def image_token_count(model: Cheers, latents: torch.Tensor) -> int:
    """P, the LLM tokens of one image on the grid of ``latents`` (…, G_h, G_w): one per
    k×k cell (k the token merge), so the native grid gives ``model.tokens_per_image``."""
    k = model.config.token_merge
    return (latents.shape[-2] // k) * (latents.shape[-1] // k)


def flow_context(
    model: Cheers,
    prefix: Prefix,
    batch_size: int,
    guidance_scale: float | None = None,
    guidance_interval: tuple[float, float] | None = None,
    tokens: int | None = None,
) -> FlowContext:
    """Where the P image tokens of x_t go after a prefilled prompt of B (or 2B guided) rows
    (``tokens`` = P; ``None``: the native image's)."""
    rows = prefix.batch.valid.shape[0]
    if rows != batch_size * (1 if guidance_scale is None else 2):
        raise ValueError(
            f"the prefix has {rows} rows but the latents {batch_size}; with guidance the "
            "prefix must hold the conditional rows followed by the unconditional ones"
        )
    interval = (0.0, 1.0) if guidance_interval is None else tuple(guidance_interval)
    if len(interval) != 2 or not 0.0 <= interval[0] <= interval[1] <= 1.0:
        raise SamplerError(
            f"guidance_interval must be (lo, hi) with 0 ≤ lo ≤ hi ≤ 1, got {guidance_interval!r}"
        )
    p = model.tokens_per_image if tokens is None else tokens
    device = prefix.batch.valid.device
    positions = prefix.batch.lengths[:, None] + torch.arange(p, device=device)
    mask = appended_block_mask(prefix.batch.valid, p)
    return FlowContext(prefix.cache, prefix.length, positions, mask, guidance_scale, interval)


@dataclass
class FlowTrace:
    """Everything one image sampling run computed, step by step (for tests and inspection)."""

    t: list[torch.Tensor] = field(default_factory=list)
    x_t: list[torch.Tensor] = field(default_factory=list)
    v_cond: list[torch.Tensor] = field(default_factory=list)
    v_uncond: list[torch.Tensor] = field(default_factory=list)
    v: list[torch.Tensor] = field(default_factory=list)


#: ``on_step_end(step, t, latents)`` → replacement latents or None (keep them).
StepEnd = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None]


def sample_latents(
    model: Cheers,
    prefix: Prefix,
    x: torch.Tensor,
    times: torch.Tensor | FlowMatchSampler,
    guidance_scale: float | None = None,
    trace: FlowTrace | None = None,
    callback: Callable[[int, int], None] | None = None,
    *,
    guidance_interval: tuple[float, float] | None = None,
    step_cache: StepCache | None = None,
    on_step_end: StepEnd | None = None,
) -> torch.Tensor:
    """Integrate the flow from ``x`` at the first time to t = 1 and return the final latent.

    ``times`` is a sampler whose timesteps are set, or a time grid (then the reference's
    Euler sampler runs on it). With guidance the prefix holds 2B rows, the B conditional ones
    first and their unconditional twins after; ``x`` always has B rows. Each model evaluation
    writes the P image tokens of x_t after the prefix (overwriting the previous ones), so after
    the loop the cache holds the tokens of the last evaluation, as in the reference.
    ``callback(k, n)`` is called after each of the n evaluations, ``on_step_end`` after the
    sampler's step (it may return new latents).
    """
    if isinstance(times, FlowMatchSampler):
        sampler = times
        if len(sampler.timesteps) == 0 or sampler.step_index != 0:
            raise SamplerError("call sampler.set_timesteps() before each sampling run")
    else:
        sampler = EulerSampler()
        sampler.set_grid(times)
    tokens = image_token_count(model, x)
    context = flow_context(model, prefix, x.shape[0], guidance_scale, guidance_interval, tokens)
    if step_cache is not None:
        step_cache.reset()

    def evaluate(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model.flow_velocity(x_t, t, context)
        if trace is not None:
            trace.t.append(t)
            trace.x_t.append(x_t)
            trace.v_cond.append(out.cond)
            if out.uncond is not None:
                trace.v_uncond.append(out.uncond)
            trace.v.append(out.velocity)
        return out.velocity

    x = x.float()
    n = len(sampler.timesteps)
    for k, t in enumerate(sampler.timesteps):
        t = t.to(x.device)
        v = evaluate(x, t) if step_cache is None else step_cache(float(t), evaluate, x, t)
        x = sampler.step(v, t, x)
        if on_step_end is not None:
            replaced = on_step_end(k, t, x)
            if replaced is not None:
                if replaced.shape != x.shape:
                    raise SamplerError(
                        f"callback_on_step_end returned latents of shape {tuple(replaced.shape)}"
                        f", expected {tuple(x.shape)}"
                    )
                x = replaced.float()
        if callback is not None:
            callback(k + 1, n)
    return x


# ------------------------------------------------------------------ text decoding
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


def feed_token(
    model: Cheers,
    cache: KVCache,
    key_valid: torch.Tensor,
    token: torch.Tensor,
    positions: torch.Tensor,
    start: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append one token per row at cache offset ``start``; returns its logits and the key mask."""
    key_valid = torch.cat([key_valid, key_valid.new_ones(key_valid.shape[0], 1)], dim=1)
    hidden = model.transformer(
        model.embed(token[:, None]), positions[:, None], key_valid[:, None, :], cache, start
    )
    return model.logits(hidden[:, -1]), key_valid


@dataclass
class DecodeState:
    """Where text decoding stands: everything one step reads and advances."""

    cache: KVCache
    key_valid: torch.Tensor  # (B, start): the cache entries each row may attend to
    positions: torch.Tensor  # (B,): RoPE position of the next token
    start: int  # cache offset of the next token
    logits: torch.Tensor  # (B, V): the logits that choose the next token
    done: torch.Tensor  # (B,) bool: the row has produced EOS

    @classmethod
    def begin(
        cls,
        cache: KVCache,
        key_valid: torch.Tensor,
        positions: torch.Tensor,
        start: int,
        logits: torch.Tensor,
        **extra: Any,
    ) -> Self:
        """The state right after a prefill (no row done); ``extra``: a subclass's fields."""
        done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
        return cls(cache, key_valid, positions.clone(), start, logits, done, **extra)

    def advance(self, model: Cheers, token: torch.Tensor) -> None:
        """Feed ``token`` (B,) and move to the logits of the one after it."""
        self.logits, self.key_valid = feed_token(
            model, self.cache, self.key_valid, token, self.positions, self.start
        )
        self.positions = self.positions + 1
        self.start += 1


#: ``(model, batch, room)`` → the prefilled prompt and the state that decodes after it, with
#: ``room`` positions to spare: :func:`start_decoding`, or a
#: :class:`cheers.pipeline.static_decoding.StaticDecoding`.
StartDecoding = Callable[[Cheers, Batch, int], tuple[Prefix, DecodeState]]


def start_decoding(model: Cheers, batch: Batch, room: int) -> tuple[Prefix, DecodeState]:
    """Prefill ``batch`` into a new cache and begin decoding after it (growing shapes)."""
    prefix = prefill(model, batch, room)
    logits = model.logits(prefix.hidden[:, -1])
    state = DecodeState.begin(prefix.cache, batch.valid, batch.lengths, prefix.length, logits)
    return prefix, state


@dataclass
class TextOutput:
    tokens: torch.Tensor  # (B, n): generated ids, `pad_id` after a row's EOS
    logits: list[torch.Tensor]  # the logits (B, V) that chose each token


def decode_from(
    model: Cheers,
    state: DecodeState,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    on_token: Callable[[int, torch.Tensor], None] | None = None,
) -> TextOutput:
    """Autoregressive decoding from ``state`` (any :class:`DecodeState`, e.g. the
    static-shape one of :mod:`cheers.pipeline.static_decoding`), starting with the token its logits
    choose. Stops after ``max_new_tokens`` or when every row has produced EOS (which is kept in
    the output). ``on_token(i, ids)`` streams each step's ids (B,) as soon as they are chosen."""
    b = state.logits.shape[0]
    tokens: list[torch.Tensor] = []
    chosen_by: list[torch.Tensor] = []
    for i in range(max_new_tokens):
        token = sample_token(state.logits, temperature, top_p, generator)
        token = torch.where(state.done, torch.full_like(token, pad_id), token)
        tokens.append(token)
        chosen_by.append(state.logits)
        if on_token is not None:
            on_token(i, token)
        state.done |= token == eos_id
        if bool(state.done.all()) or i == max_new_tokens - 1:
            break
        state.advance(model, token)
    out = torch.stack(tokens, 1) if tokens else state.logits.new_zeros(b, 0, dtype=torch.long)
    return TextOutput(out, chosen_by)
