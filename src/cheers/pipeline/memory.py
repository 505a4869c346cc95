"""Memory-aware admission: what a call will allocate, estimated before it allocates anything.

    >>> budget = MemoryBudget()                        # what the device has free, when asked
    >>> need = image_call(model.config, torch.bfloat16, images=16, guided=True, prompt_tokens=40)
    >>> budget.check(need, "cuda:0", fix="ask for fewer images per call")   # doctest: +SKIP

A call's working memory (beyond the weights, which are resident) is the largest of what its
stages hold at once: the prompt's key/value cache for the whole call, plus the biggest transient
of one stage (a language-model layer over the sequence, a ViT layer over the patches, a decoder
level of the autoencoder over the full-resolution image). :func:`image_call` and
:func:`text_call` add these up from the model config; the formulas are written once here and
each term is an upper bound of what the code holds (attention scores as if materialised, three
live tensors per residual block). :class:`MemoryBudget` compares an estimate with what the
device has free (CUDA: the driver's free memory plus the allocator's reusable cache; CPU:
``MemAvailable``) or with a fixed limit, and refuses a call that cannot fit with
:class:`MemoryLimitError`, naming both numbers and the fix. The server uses
:meth:`MemoryBudget.rows_that_fit` to split a batch instead of failing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cheers.config import CheersConfig
from cheers.errors import CheersError

#: Live copies of a layer's hidden states: the residual, the normed input, attention output
#: and the query (keys and values are the cache's or smaller with grouped heads).
_HIDDEN_COPIES = 4
#: Live copies of the MLP's width: gate, up and their product.
_MLP_COPIES = 3
#: Live full-size feature maps at the autoencoder's finest level: a residual block's input,
#: normalised input, inner and output maps, the upsampled input and the output convolution's
#: normalised input (about five were measured on a CPU: benchmarks/memory_estimate.py).
_CONV_COPIES = 6
#: Room for what the terms leave out (masks, positions, small buffers, allocator rounding).
MARGIN = 1.25


class MemoryLimitError(CheersError):
    """A call would need more memory than the device has (or the limit allows)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a call needs at its peak; ``parts`` names each term, ``what`` the call."""

    total: int
    what: str
    parts: dict[str, int] = field(default_factory=dict)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def kv_cache_bytes(config: CheersConfig, dtype: torch.dtype, rows: int, length: int) -> int:
    """Keys and values of every layer for ``rows`` sequences of ``length`` positions."""
    t = config.text_config
    return (
        2
        * t.num_hidden_layers
        * rows
        * length
        * t.num_key_value_heads
        * t.head_dim
        * (_itemsize(dtype))
    )


def language_layer_bytes(
    config: CheersConfig, dtype: torch.dtype, rows: int, new: int, context: int | None = None
) -> int:
    """One language-model layer over ``new`` positions of ``rows`` rows, attending to
    ``context`` positions (default ``new``: a prefill)."""
    t, b = config.text_config, _itemsize(dtype)
    context = new if context is None else context
    width = _HIDDEN_COPIES * t.hidden_size + _MLP_COPIES * t.intermediate_size
    scores = t.num_attention_heads * new * context
    return rows * (new * width + scores) * b


def vision_layer_bytes(
    config: CheersConfig, dtype: torch.dtype, images: int, patches: int | None = None
) -> int:
    """One ViT layer over the ``patches`` (default: the native image's) of ``images`` images."""
    v, b = config.vision_representation_config, _itemsize(dtype)
    p = v.num_patches if patches is None else patches
    width = _HIDDEN_COPIES * v.hidden_size + v.intermediate_size
    return images * (p * width + v.num_attention_heads * p * p) * b


def decoder_bytes(config: CheersConfig, dtype: torch.dtype, images: int) -> int:
    """The autoencoder decoder over ``images`` images: its largest level (the channels coming
    in from the coarser level or going out, whichever is more, × side²), or the single-head
    attention of its middle block (scores and softmax over the coarsest grid), whichever is
    more. The decoder projector that feeds the ViT has the same shape."""
    d = config.vae_decoder_config
    mult, last = d.ch_mult, len(d.ch_mult) - 1
    levels = [
        d.ch * max(mult[j], mult[min(j + 1, last)]) * (d.resolution // 2**j) ** 2
        for j in range(last + 1)
    ]
    positions = (d.resolution // 2**last) ** 2
    return images * max(_CONV_COPIES * max(levels), 2 * positions**2) * _itemsize(dtype)


def image_call(
    config: CheersConfig,
    dtype: torch.dtype,
    images: int,
    *,
    guided: bool,
    prompt_tokens: int,
    size: tuple[int, int] | None = None,
) -> MemoryEstimate:
    """A text-to-image or edit call making ``images`` images from prompts of at most
    ``prompt_tokens`` tokens (image tokens of the prompt included), guided or not. At a
    ``size`` (height, width) larger than native, a bound: the native estimate for as many
    images as the area ratio squared (tokens grow with the area, attention with its square)."""
    if size is not None and size[0] * size[1] > config.image_size**2:
        ratio = math.ceil(size[0] * size[1] / config.image_size**2)
        bound = image_call(
            config, dtype, images * ratio**2, guided=guided, prompt_tokens=prompt_tokens
        )
        guidance = "with guidance" if guided else "without guidance"
        what = f"{images} image(s) of {size[1]}x{size[0]} {guidance}"
        return MemoryEstimate(bound.total, what, bound.parts)
    rows = images * (2 if guided else 1)
    tokens = config.tokens_per_image
    length = prompt_tokens + tokens
    parts = {
        "kv_cache": kv_cache_bytes(config, dtype, rows, length),
        "language_layer": max(
            language_layer_bytes(config, dtype, rows, prompt_tokens),  # the prefill
            language_layer_bytes(config, dtype, rows, tokens, length),  # a step
        ),
        "vision_layer": vision_layer_bytes(config, dtype, images),
        # The decoder projector runs on every step's latents, the decoder on the final ones.
        "decoder": decoder_bytes(config, dtype, images),
    }
    transient = max(parts["language_layer"], parts["vision_layer"], parts["decoder"])
    total = math.ceil((parts["kv_cache"] + transient) * MARGIN)
    side = config.image_size
    guidance = "with guidance" if guided else "without guidance"
    return MemoryEstimate(total, f"{images} image(s) of {side}x{side} {guidance}", parts)


def text_call(
    config: CheersConfig,
    dtype: torch.dtype,
    rows: int,
    *,
    prompt_tokens: int,
    new_tokens: int,
    images: int = 0,
) -> MemoryEstimate:
    """A text call answering ``rows`` conversations of at most ``prompt_tokens`` tokens (image
    tokens included) with up to ``new_tokens`` new tokens each, reading ``images`` images."""
    length = prompt_tokens + new_tokens
    vocab = config.text_config.vocab_size
    parts = {
        "kv_cache": kv_cache_bytes(config, dtype, rows, length),
        "language_layer": language_layer_bytes(config, dtype, rows, prompt_tokens),
        "vision_layer": vision_layer_bytes(config, dtype, images),
        "decoder": decoder_bytes(config, dtype, images),
        "logits": rows * vocab * 4,  # float32 scores of the last position
    }
    transient = max(parts["language_layer"], parts["vision_layer"], parts["decoder"])
    total = math.ceil((parts["kv_cache"] + transient + parts["logits"]) * MARGIN)
    what = f"{rows} conversation(s) of up to {prompt_tokens} + {new_tokens} tokens"
    return MemoryEstimate(total, what, parts)


def available_bytes(device: torch.device | str) -> int | None:
    """Bytes a call on ``device`` may allocate now (``None``: unknown, nothing is checked)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type == "cpu":
        return _mem_available()
    return None


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def human_bytes(n: int) -> str:
    """``n`` bytes in MiB or GiB, for messages."""
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


@dataclass
class MemoryBudget:
    """How much memory one call may use: ``limit`` bytes, or (``None``) what the device has
    free when the call comes (:func:`available_bytes`, or ``free`` when given)."""

    limit: int | None = None
    free: Callable[[torch.device | str], int | None] | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            raise CheersError(
                f"the memory limit must be a positive number of bytes, got {self.limit}"
            )

    def allowed(self, device: torch.device | str) -> tuple[int | None, str]:
        """The bytes a call may use on ``device`` and where that number comes from."""
        if self.limit is not None:
            return self.limit, "the memory limit"
        free = available_bytes if self.free is None else self.free
        return free(device), f"free memory on {torch.device(device)}"

    def check(self, need: MemoryEstimate, device: torch.device | str, fix: str) -> None:
        """Raise :class:`MemoryLimitError` when ``need`` does not fit on ``device``.

        ``fix`` says what the caller can change (fewer images, a shorter answer, …).
        """
        allowed, source = self.allowed(device)
        if allowed is not None and need.total > allowed:
            raise MemoryLimitError(
                f"{need.what} need about {human_bytes(need.total)} of working memory but "
                f"{source} is {human_bytes(allowed)}; {fix}"
            )

    def rows_that_fit(
        self, estimate: Callable[[int], MemoryEstimate], rows: int, device: torch.device | str
    ) -> int:
        """The most of ``rows`` rows (≥ 0) whose ``estimate(rows)`` fits on ``device`` now."""
        allowed, _ = self.allowed(device)
        if allowed is None or estimate(rows).total <= allowed:
            return rows
        low, high = 0, rows  # estimate(low) fits (0 always), estimate(high) does not
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if estimate(mid).total <= allowed else (low, mid)
        return low


__all__ = [
    "MARGIN",
    "MemoryBudget",
    "MemoryEstimate",
    "MemoryLimitError",
    "available_bytes",
    "decoder_bytes",
    "human_bytes",
    "image_call",
    "kv_cache_bytes",
    "language_layer_bytes",
    "text_call",
    "vision_layer_bytes",
]
