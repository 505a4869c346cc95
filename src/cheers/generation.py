"""Generation loops over a prefilled KV cache: the image ODE and text decoding.

These functions work on already assembled LLM inputs (see :mod:`cheers.sequence`); turning
prompts and images into those inputs is the pipeline's job (:mod:`cheers.pipeline`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cheers.model import Cheers
from cheers.modules.language import KVCache
from cheers.sampling import apply_guidance, euler_step, final_step, sample_token
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


def prefill(model: Cheers, batch: Batch, room: int) -> Prefix:
    """Run the prompt once and keep its keys and values, with ``room`` free cache positions."""
    b, t = batch.valid.shape
    cache = model.new_kv_cache(b, t + room)
    mask = omni_mask(batch.block, batch.valid)
    hidden = model.transformer(batch.embeds, batch.positions, mask, cache, 0)
    return Prefix(batch, cache, hidden)


@dataclass
class FlowTrace:
    """Everything one image sampling run computed, step by step (for tests and inspection)."""

    t: list[torch.Tensor] = field(default_factory=list)
    x_t: list[torch.Tensor] = field(default_factory=list)
    v_cond: list[torch.Tensor] = field(default_factory=list)
    v_uncond: list[torch.Tensor] = field(default_factory=list)
    v: list[torch.Tensor] = field(default_factory=list)


def sample_latents(
    model: Cheers,
    prefix: Prefix,
    x: torch.Tensor,
    times: torch.Tensor,
    guidance_scale: float | None = None,
    trace: FlowTrace | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Integrate the flow from ``x`` at ``times[0]`` to t = 1 and return the final latent.

    With guidance the prefix holds 2B rows, the B conditional ones first and their
    unconditional twins after; ``x`` always has B rows. Each step appends the P image tokens
    of x_t after the prefix (overwriting the previous step's), so after the loop the cache
    holds the tokens of the last evaluation, as in the reference.
    """
    guided = guidance_scale is not None
    rows = prefix.batch.valid.shape[0]
    if rows != x.shape[0] * (2 if guided else 1):
        raise ValueError(
            f"the prefix has {rows} rows but the latents {x.shape[0]}; with guidance the "
            "prefix must hold the conditional rows followed by the unconditional ones"
        )
    p = model.tokens_per_image
    positions = prefix.batch.lengths[:, None] + torch.arange(p, device=x.device)
    mask = appended_block_mask(prefix.batch.valid, p)
    x = x.float()
    n = len(times)
    for k in range(n):
        t = times[k]
        x_in = torch.cat([x, x]) if guided else x
        image = model.image_tokens(x_in)
        hidden = model.transformer(image.tokens, positions, mask, prefix.cache, prefix.length)
        t_batch = t.to(x.device).expand(x_in.shape[0])
        v_all = model.velocity(hidden, image.patch_embeds, t_batch).velocity.float()
        if guided:
            v_cond, v_uncond = v_all.chunk(2)
            v = apply_guidance(v_cond, v_uncond, guidance_scale)
        else:
            v_cond, v_uncond, v = v_all, None, v_all
        if trace is not None:
            trace.t.append(t)
            trace.x_t.append(x)
            trace.v_cond.append(v_cond)
            if v_uncond is not None:
                trace.v_uncond.append(v_uncond)
            trace.v.append(v)
        x = euler_step(x, v, times[k], times[k + 1]) if k < n - 1 else final_step(x, v, n)
        if callback is not None:
            callback(k + 1, n)
    return x


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
class TextOutput:
    tokens: torch.Tensor  # (B, n): generated ids, `pad_id` after a row's EOS
    logits: list[torch.Tensor]  # the logits (B, V) that chose each token


def decode_text(
    model: Cheers,
    cache: KVCache,
    key_valid: torch.Tensor,
    positions: torch.Tensor,
    start: int,
    logits: torch.Tensor,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> TextOutput:
    """Autoregressive decoding from the logits of the last fed token.

    ``key_valid`` (B, start) marks the cache entries each row may attend to, ``positions``
    (B,) the RoPE position of the next token. Stops after ``max_new_tokens`` or when every
    row has produced EOS (which is kept in the output).
    """
    b = logits.shape[0]
    done = torch.zeros(b, dtype=torch.bool, device=logits.device)
    tokens: list[torch.Tensor] = []
    chosen_by: list[torch.Tensor] = []
    positions = positions.clone()
    for i in range(max_new_tokens):
        token = sample_token(logits, temperature, top_p, generator)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        tokens.append(token)
        chosen_by.append(logits)
        done |= token == eos_id
        if bool(done.all()) or i == max_new_tokens - 1:
            break
        logits, key_valid = feed_token(model, cache, key_valid, token, positions, start)
        positions += 1
        start += 1
    out = torch.stack(tokens, 1) if tokens else logits.new_zeros(b, 0, dtype=torch.long)
    return TextOutput(out, chosen_by)
