"""Int8 weight-only quantization of linear layers (per output channel, symmetric).

Each targeted ``nn.Linear`` becomes an :class:`Int8Linear` holding ``int8`` weights and one
scale per output channel (``max |w| / 127`` of its row): weight memory falls by 4× against
float32, and every weight is within half a step (``scale / 2``) of the original. Activations
stay in the model's compute dtype.

Kernels (torch's own, nothing hand-written): on CPU, decoding steps (a few rows) run in
``aten._weight_int8pack_mm``; larger products, and every product on CUDA, use the weight
dequantized into the activations' dtype for that one call (torch's CUDA ``_weight_int8pack_mm``
is a one-thread-per-output loop, slower than dequantizing and calling cuBLAS). The weights stay
int8 in memory either way.

The transform runs on a built model, also on the ``meta`` device: ``load_model(...,
quantize="int8")`` quantizes the empty model and then each weight as it is read
(:meth:`Int8Linear.load_checkpoint_tensor`), so the float weights never exist all at once.
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

    def load_checkpoint_tensor(self, name: str, tensor: torch.Tensor) -> None:
        """Take the checkpoint's float ``weight`` (quantized here) or ``bias``."""
        if name == "weight":
            self.weight, self.scales = quantize_weight(tensor)
        elif name == "bias" and self.bias is not None:
            self.bias = nn.Parameter(tensor, requires_grad=self.bias.requires_grad)
        else:
            raise KeyError(f"Int8Linear has no checkpoint tensor {name!r}")

    def dequantized(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight as floats (``dtype``, default the scales' float32)."""
        w = self.weight.to(self.scales.dtype) * self.scales[:, None]
        return w if dtype is None else w.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if x.device.type == "cpu" and flat.shape[0] <= KERNEL_MAX_ROWS:
            out = torch.ops.aten._weight_int8pack_mm(
                flat.contiguous(), self.weight, self.scales.to(x.dtype)
            )
        else:
            out = F.linear(flat, self.dequantized(x.dtype))
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8(model: nn.Module, groups: Sequence[str] = DEFAULT_GROUPS) -> list[str]:
    """Replace the linear layers of ``groups`` by :class:`Int8Linear`; returns their names.

    Works on a model on the ``meta`` device too (then :func:`cheers.checkpoint.load_model`
    fills the layers from a checkpoint).

    Raises:
        CheersError: for ``projectors``: the issue's int8 scope is the LLM, the ViT and the
            flow heads; the projectors (about 1 % of the weights) stay in the compute dtype.
    """
    if "projectors" in groups:
        raise CheersError(
            "the projectors stay in the compute dtype (about 1 % of the weights); leave "
            "'projectors' out of the int8 groups"
        )
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
