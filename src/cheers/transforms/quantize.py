"""Int8 weight-only quantization of linear layers (per output channel, symmetric).

Each targeted ``nn.Linear`` becomes an :class:`Int8Linear` holding ``int8`` weights and one
scale per output channel (``max |w| / 127`` of its row): weight memory falls by 4× against
float32, and every weight is within half a step (``scale / 2``) of the original. Decoding
steps (a few rows) run in torch's own int8 weight kernel (``aten._weight_int8pack_mm``),
larger products with the dequantized weight. Activations stay in the compute dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cheers.errors import CheersError
from cheers.transforms.targets import linear_targets, replace_module

# torch's int8 weight kernel is made for decoding (a few rows); measured on this CPU it was
# slower than a product with the dequantized weight for whole prompts and images.
KERNEL_MAX_ROWS = 8
DEFAULT_GROUPS = ("llm_attention", "llm_mlp", "vit", "semantic_head", "detail_head")


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(int8 weight, float32 scales)`` with ``weight ≈ q · scale[:, None]``."""
    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


class Int8Linear(nn.Module):
    """A linear layer with int8 weights and per-output-channel scales."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        q, scales = quantize_weight(linear.weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", q)
        self.register_buffer("scales", scales)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        self.compute_dtype = linear.weight.dtype

    def dequantized(self) -> torch.Tensor:
        return self.weight.to(self.scales.dtype) * self.scales[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = None
        if flat.shape[0] <= KERNEL_MAX_ROWS:
            try:
                out = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales.to(x.dtype))
            except (RuntimeError, NotImplementedError):  # dtypes or devices it does not take
                out = None
        if out is None:
            out = F.linear(flat, self.dequantized().to(x.dtype))
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


def quantize_int8(model: nn.Module, groups: Sequence[str] = DEFAULT_GROUPS) -> list[str]:
    """Replace the linear layers of ``groups`` by :class:`Int8Linear`; returns their names.

    Raises:
        CheersError: for ``projectors``: they are small, and the time embedder's first layer
            sets the flow heads' compute dtype, so they stay in it.
    """
    if "projectors" in groups:
        raise CheersError("the projectors stay in the compute dtype; leave 'projectors' out")
    names = [name for name, _ in linear_targets(model, groups)]
    for name in names:
        replace_module(model, name, Int8Linear(model.get_submodule(name)))
    return names


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (tied tensors counted once)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


__all__ = ["DEFAULT_GROUPS", "Int8Linear", "quantize_int8", "quantize_weight", "weight_bytes"]
