"""Text decoding with the same shapes at every token and every request, for CUDA graphs.

:func:`cheers.pipeline.loops.start_decoding` appends each token at a growing cache length, so every
step has new shapes: a compiled step keeps dynamic sizes, and the host still launches each of
its kernels, which at one token per step is most of the time on a GPU (measured on an H100:
0.89 s of wall time for 0.22 s of GPU work, docs/performance.md §4). Here every step looks the
same: the token's keys and values are written at a tensor slot, attention covers the whole
pre-allocated cache under a mask that hides the slots not written yet, so one compiled graph
serves every token, and ``mode="reduce-overhead"`` replays it as a CUDA graph (one launch a
token). The cache is kept between requests, as gpt-fast's ``setup_caches`` keeps one: one
cache with the rows of the largest batch so far, and per batch size a mask, a slot and the
step over the cache's first rows, so the graph recorded for the first request of a size
serves the later ones too. The tokens are those of growing decoding up to float rounding
(the masked slots add exact zeros to the attention).

    >>> pipe.enable_static_decoding(max_length=2048, compile_options={"mode": "reduce-overhead"})
    ... # doctest: +SKIP

or, below the pipeline, a :class:`StaticDecoding` in place of
:func:`~cheers.pipeline.loops.start_decoding`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from cheers.model import Cheers
from cheers.modules.language import KVCache
from cheers.pipeline.loops import DecodeState, Prefix, prefill, start_decoding
from cheers.sequence import Batch


@dataclass
class StaticDecodeState(DecodeState):
    """A :class:`~cheers.pipeline.loops.DecodeState` whose steps all have the same shapes."""

    mask: torch.Tensor = field(default=None)  # (B, 1, 1, max_len) bool: the slots to attend
    slot: torch.Tensor = field(default=None)  # (1,) long: the cache slot of the next token
    step: Callable[..., torch.Tensor] = field(default=None)  # (token, positions, slot, mask)
    copy_logits: bool = False  # a CUDA graph's output is overwritten by its next replay

    def advance(self, model: Cheers, token: torch.Tensor) -> None:  # noqa: ARG002 - DecodeState.advance
        """Feed ``token`` (B,) at the next slot and move to the logits of the one after it."""
        if self.start >= self.cache.max_len:
            raise ValueError(f"KV cache overflow: it holds {self.cache.max_len} positions")
        self.mask.index_fill_(3, self.slot, True)
        logits = self.step(token[:, None], self.positions[:, None], self.slot, self.mask)
        self.logits = logits.clone() if self.copy_logits else logits
        self.positions = self.positions + 1
        self.slot += 1
        self.start += 1


class StaticDecoder:
    """Decoding over one batch size's view of a kept cache: its mask and slot, and the step
    over them (compiled once, with ``compile_options``, when they are given)."""

    def __init__(
        self, model: Cheers, cache: KVCache, compile_options: dict[str, Any] | None = None
    ) -> None:
        self.model = model
        self.cache = cache
        batch_size, device = cache.batch_size, cache.device
        self.mask = torch.zeros(batch_size, 1, 1, cache.max_len, dtype=torch.bool, device=device)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)
        self.compiled = compile_options is not None
        step = _step_function(model, cache)
        if self.compiled:
            # Written in place between and by the replays, never reallocated: a CUDA graph
            # reads them where they are instead of copying them in.
            for tensor in (*cache.tensors(), self.mask, self.slot):
                torch._dynamo.mark_static_address(tensor)
            step = torch.compile(step, fullgraph=True, **compile_options)
        self.step = step

    def begin(
        self,
        key_valid: torch.Tensor,
        positions: torch.Tensor,
        start: int,
        logits: torch.Tensor,
    ) -> StaticDecodeState:
        """The state after a prefill of ``start`` positions into :attr:`cache` (arguments as
        for :meth:`DecodeState.begin <cheers.pipeline.loops.DecodeState.begin>`)."""
        self.mask.zero_()
        self.mask[:, 0, 0, :start] = key_valid
        self.slot.fill_(start)
        return StaticDecodeState.begin(
            self.cache,
            key_valid,
            positions,
            start,
            logits,
            mask=self.mask,
            slot=self.slot,
            step=self.step,
            copy_logits=self.compiled,
        )


class StaticDecoding:
    """A :data:`~cheers.pipeline.loops.StartDecoding` with static shapes: prompts are prefilled into
    a kept cache of ``max_length`` positions and decoded by their batch size's
    :class:`StaticDecoder`. A prompt plus its room longer than ``max_length`` falls back to
    :func:`~cheers.pipeline.loops.start_decoding` (same tokens, growing shapes).

    One cache serves every batch size, with as many rows as the largest batch so far
    (``2 × layers × rows × kv-heads × max_length × head-dim`` values); a smaller batch decodes
    on its first rows. A larger batch replaces the cache, and with it the decoders (and their
    compiled steps). Each batch size compiles once. :meth:`clear` frees everything. Requests
    must not overlap (one decoding at a time, as the pipeline runs them).
    """

    def __init__(self, max_length: int = 2048, compile_options: dict[str, Any] | None = None):
        if max_length < 1:
            raise ValueError(f"max_length must be a positive number of positions, got {max_length}")
        self.max_length = max_length
        self.compile_options = compile_options
        self._model: Cheers | None = None
        self._cache: KVCache | None = None
        self._decoders: dict[int, StaticDecoder] = {}

    def __call__(self, model: Cheers, batch: Batch, room: int) -> tuple[Prefix, DecodeState]:
        b, t = batch.valid.shape
        if t + room > self.max_length:
            return start_decoding(model, batch, room)
        decoder = self.decoder(model, b)
        prefix = prefill(model, batch, room, cache=decoder.cache)
        logits = model.logits(prefix.hidden[:, -1])
        return prefix, decoder.begin(batch.valid, batch.lengths, prefix.length, logits)

    def decoder(self, model: Cheers, batch_size: int) -> StaticDecoder:
        """The decoder of ``batch_size`` rows, built on first use (on a new cache when the
        batch is larger than the kept one, or the model, its device, its dtype or its KV
        format changed)."""
        cache = self._cache
        if (
            cache is None
            or cache.batch_size < batch_size
            or self._model is not model
            or cache.device != model.device
            or cache.dtype != model.dtype
            or cache.kind != model.kv_cache
        ):
            self.clear()
            self._model, self._cache = model, model.new_kv_cache(batch_size, self.max_length)
            cache = self._cache
        decoder = self._decoders.get(batch_size)
        if decoder is None:
            decoder = StaticDecoder(model, cache.rows(batch_size), self.compile_options)
            self._decoders[batch_size] = decoder
        return decoder

    def clear(self) -> None:
        """Free the kept cache and every decoder with its compiled step."""
        self._model = self._cache = None
        self._decoders.clear()


def _step_function(model: Cheers, cache: KVCache) -> Callable[..., torch.Tensor]:
    def step(
        token: torch.Tensor, positions: torch.Tensor, slot: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        hidden = model.transformer(model.embed(token), positions, mask, cache, slot)
        return model.logits(hidden[:, -1])

    return step
