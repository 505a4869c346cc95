"""A 4-bit KV cache: SAW-INT4 (token-wise INT4 after a block-diagonal Hadamard rotation).

Keys and values are stored as 4-bit integers, two a byte, with a float16 scale and zero per
token and KV head (min–max over the head dimension). With ``rotate=True`` (SAW-INT4, the
``"int4"`` cache) each head vector is first multiplied by a block-diagonal Hadamard matrix R
(orthogonal, blocks of up to 128 channels), which spreads outlier channels over their block
before rounding. Queries get the same rotation, so scores are unchanged before quantization
(q R · k R = q · k), and the attention output is rotated back (P · V R · Rᵀ = P · V). With
``rotate=False`` it is naive INT4 (the ``"int4-naive"`` baseline).

The cache has :class:`~cheers.modules.language.KVCache`'s interface (layers, rows, select, the
growing and the tensor-slot writes of static decoding), so every decoding path takes it.
Writing quantizes the new tokens; reading dequantizes the positions up to them (the new ones
included), in the compute dtype.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange

from cheers.config import TextConfig

MAX_ROTATION_BLOCK = 128
LEVELS = 15  # the largest 4-bit integer
SCALE_DTYPE = torch.float16


def rotation_block(head_dim: int) -> int:
    """The Hadamard block: the largest power of two dividing ``head_dim``, at most 128."""
    block = 1
    while head_dim % (block * 2) == 0 and block * 2 <= MAX_ROTATION_BLOCK:
        block *= 2
    return block


def hadamard(size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The orthonormal Sylvester–Hadamard matrix of a power-of-two ``size``."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"a Hadamard matrix needs a power-of-two size, got {size}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < size:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h / math.sqrt(size)).to(dtype)


def block_hadamard(head_dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """R (D, D): :func:`hadamard` blocks on the diagonal."""
    block = rotation_block(head_dim)
    return torch.block_diag(*[hadamard(block, dtype)] * (head_dim // block))


def quantize_tokens(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (…, D) → packed 4-bit integers (…, D/2) and float16 scale and zero (…, 1)."""
    low, high = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    zero = low.to(SCALE_DTYPE)
    scale = ((high - low) / LEVELS).clamp(min=1e-6).to(SCALE_DTYPE)
    q = torch.round((x - zero.to(x.dtype)) / scale.to(x.dtype)).clamp(0, LEVELS).to(torch.uint8)
    pairs = rearrange(q, "... (n two) -> ... n two", two=2)
    return pairs[..., 0] | (pairs[..., 1] << 4), scale, zero


def dequantize_tokens(
    packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """The inverse of :func:`quantize_tokens` up to rounding, in ``dtype``."""
    q = torch.stack([packed & 0xF, packed >> 4], -1)
    q = rearrange(q, "... n two -> ... (n two)").to(dtype)
    return q * scale.to(dtype) + zero.to(dtype)


class Int4Store:
    """One tensor kind (keys or values) of one layer: packed integers, scales, zeros."""

    def __init__(self, packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> None:
        self.packed, self.scale, self.zero = packed, scale, zero

    @classmethod
    def empty(cls, shape: tuple[int, ...], device: torch.device | str) -> Int4Store:
        *lead, d = shape
        return cls(
            torch.zeros(*lead, d // 2, dtype=torch.uint8, device=device),
            torch.zeros(*lead, 1, dtype=SCALE_DTYPE, device=device),
            torch.zeros(*lead, 1, dtype=SCALE_DTYPE, device=device),
        )

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.packed, self.scale, self.zero

    def map(self, fn) -> Int4Store:
        return Int4Store(*(fn(t) for t in self.tensors()))

    def write(self, x: torch.Tensor, start: int | torch.Tensor) -> None:
        parts = quantize_tokens(x)
        for stored, part in zip(self.tensors(), parts, strict=True):
            if isinstance(start, torch.Tensor):
                stored.index_copy_(2, start, part)
            else:
                stored[:, :, start : start + x.shape[2]] = part

    def read(self, end: int | None, dtype: torch.dtype) -> torch.Tensor:
        packed, scale, zero = (t if end is None else t[:, :, :end] for t in self.tensors())
        return dequantize_tokens(packed, scale, zero, dtype)


class Int4KVCache:
    """Every layer's 4-bit keys and values for (B, Hkv, max_len, D) (see the module doc)."""

    def __init__(
        self,
        cfg: TextConfig,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device | str,
        rotate: bool = True,
    ) -> None:
        shape = (batch_size, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.max_len, self.dtype = max_len, dtype
        self.kind = "int4" if rotate else "int4-naive"
        self.rotation = block_hadamard(cfg.head_dim, dtype).to(device) if rotate else None
        self.keys = [Int4Store.empty(shape, device) for _ in range(cfg.num_hidden_layers)]
        self.values = [Int4Store.empty(shape, device) for _ in range(cfg.num_hidden_layers)]

    def layer(self, index: int) -> Int4LayerCache:
        return Int4LayerCache(self.keys[index], self.values[index], self.rotation, self.dtype)

    def _with(self, fn) -> Int4KVCache:
        view = object.__new__(Int4KVCache)
        view.max_len, view.dtype, view.rotation = self.max_len, self.dtype, self.rotation
        view.kind = self.kind
        view.keys = [s.map(fn) for s in self.keys]
        view.values = [s.map(fn) for s in self.values]
        return view

    def rows(self, n: int) -> Int4KVCache:
        """A view of the first ``n`` batch rows sharing this cache's memory."""
        return self._with(lambda t: t[:n])

    def select(self, index: torch.Tensor) -> Int4KVCache:
        """Keep only the batch rows in ``index``."""
        kept = self._with(lambda t: t.index_select(0, index))
        self.keys, self.values = kept.keys, kept.values
        return self

    @property
    def batch_size(self) -> int:
        return self.keys[0].packed.shape[0] if self.keys else 0

    @property
    def device(self) -> torch.device:
        return self.keys[0].packed.device

    def tensors(self) -> list[torch.Tensor]:
        """Every stored tensor (what static decoding marks as static addresses)."""
        return [t for store in (*self.keys, *self.values) for t in store.tensors()]


class Int4LayerCache:
    """One layer's view: writes quantize, reads dequantize; queries and outputs are rotated."""

    def __init__(
        self,
        keys: Int4Store,
        values: Int4Store,
        rotation: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> None:
        self.keys, self.values, self.rotation, self.dtype = keys, values, rotation, dtype

    def update(
        self, k: torch.Tensor, v: torch.Tensor, start: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`LayerCache.update <cheers.modules.language.LayerCache.update>`; the
        keys and values come back dequantized (rotated, when the cache rotates)."""
        capacity = self.keys.packed.shape[2]
        if not isinstance(start, torch.Tensor) and start + k.shape[2] > capacity:
            raise ValueError(
                f"KV cache overflow: need {start + k.shape[2]} positions, have {capacity}"
            )
        k, v = self.rotate_queries(k), self.rotate_queries(v)
        self.keys.write(k, start)
        self.values.write(v, start)
        end = None if isinstance(start, torch.Tensor) else start + k.shape[2]
        return self.keys.read(end, k.dtype), self.values.read(end, v.dtype)

    def rotate_queries(self, x: torch.Tensor) -> torch.Tensor:
        """x (…, D) · R: the basis the keys are stored in."""
        return x if self.rotation is None else x @ self.rotation.to(x.dtype)

    def restore_outputs(self, out: torch.Tensor) -> torch.Tensor:
        """Attention outputs (B, T, H·D) of rotated values, rotated back per head (· Rᵀ)."""
        if self.rotation is None:
            return out
        d = self.rotation.shape[0]
        heads = rearrange(out, "b t (h d) -> b t h d", d=d) @ self.rotation.T.to(out.dtype)
        return rearrange(heads, "b t h d -> b t (h d)")
