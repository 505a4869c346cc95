"""Text decoding with the same shapes at every token, for CUDA graphs.

:func:`cheers.generation.decode_text` appends each token at a growing cache length, so every
step has new shapes: a compiled step keeps dynamic sizes, and the host still launches each of
its kernels, which at one token per step is most of the time on a GPU (measured on an H100:
0.89 s of wall time for 0.22 s of GPU work, docs/performance.md §4). Here every step looks the
same: the token's keys and values are written at a tensor slot, attention covers the whole
pre-allocated cache under a mask that hides the slots not written yet, so one compiled graph
serves every token, and ``mode="reduce-overhead"`` replays it as a CUDA graph (one launch a
token). The tokens are those of :func:`~cheers.generation.decode_text` up to float rounding
(the masked slots add exact zeros to the attention).

    >>> options = {"mode": "reduce-overhead"}                                  # doctest: +SKIP
    >>> state = StaticDecodeState.after_prefill(model, cache, valid, pos, length, logits, options)
    >>> decode_from(model, state, max_new_tokens=128, eos_id=eos, pad_id=pad)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from cheers.generation import DecodeState
from cheers.model import Cheers
from cheers.modules.language import KVCache


@dataclass
class StaticDecodeState(DecodeState):
    """A :class:`~cheers.generation.DecodeState` whose steps all have the same shapes."""

    mask: torch.Tensor = field(default=None)  # (B, 1, 1, max_len) bool: the slots to attend
    slot: torch.Tensor = field(default=None)  # (1,) long: the cache slot of the next token
    step: Callable[..., torch.Tensor] = field(default=None)  # (token, positions, slot, mask)
    copy_logits: bool = False  # a CUDA graph's output is overwritten by its next replay

    @classmethod
    def after_prefill(
        cls,
        model: Cheers,
        cache: KVCache,
        key_valid: torch.Tensor,
        positions: torch.Tensor,
        start: int,
        logits: torch.Tensor,
        compile_options: dict[str, Any] | None = None,
    ) -> StaticDecodeState:
        """The state after a prefill of ``start`` positions (arguments as for
        :func:`~cheers.generation.decode_text`); ``compile_options`` (e.g.
        ``{"mode": "reduce-overhead"}``) compile the step, ``None`` runs it eagerly."""
        mask = torch.zeros(len(logits), 1, 1, cache.max_len, dtype=torch.bool, device=logits.device)
        mask[:, 0, 0, :start] = key_valid
        step = _step_function(model, cache)
        if compile_options is not None:
            for tensor in (*cache.keys, *cache.values):  # written in place by every replay
                torch._dynamo.mark_static_address(tensor)
            step = torch.compile(step, fullgraph=True, **compile_options)
        return cls.begin(
            cache,
            key_valid,
            positions,
            start,
            logits,
            mask=mask,
            slot=torch.tensor([start], device=logits.device),
            step=step,
            copy_logits=compile_options is not None,
        )

    def advance(self, model: Cheers, token: torch.Tensor) -> None:
        """Feed ``token`` (B,) at the next slot and move to the logits of the one after it."""
        if self.start >= self.cache.max_len:
            raise ValueError(f"KV cache overflow: it holds {self.cache.max_len} positions")
        self.mask.index_fill_(3, self.slot, True)
        logits = self.step(token[:, None], self.positions[:, None], self.slot, self.mask)
        self.logits = logits.clone() if self.copy_logits else logits
        self.positions = self.positions + 1
        self.slot += 1
        self.start += 1


def _step_function(model: Cheers, cache: KVCache) -> Callable[..., torch.Tensor]:
    def step(
        token: torch.Tensor, positions: torch.Tensor, slot: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        hidden = model.transformer(model.embed(token), positions, mask, cache, slot)
        return model.logits(hidden[:, -1])

    return step
