"""2- and 4-bit uniform weight-only linear layers, and round-to-nearest (RTN) as their baseline.

A quantized weight is an integer part ``q`` in ``[0, 2^bits − 1]`` times a floating scale plus a
floating zero, one scale and one zero per output row and group of ``group_size`` input columns
(``group_size=0``: one per row)::

    w[o, i] ≈ scales[o, i // g] · q[o, i] + zeros[o, i // g]

The integers are packed ``8 / bits`` to a byte along the input dimension (the first column in
the lowest bits); scales and zeros are stored in float16 (at group 64 that is 0.5 bit a weight
on top of the integers). How ``q``, ``scales`` and ``zeros`` are chosen is the quantizer's
business: :func:`rtn` (min–max grid, rounding) here, :mod:`cheers.transforms.decoupleq` (the
layer-output error minimised over both) there; both give a :class:`LowBitLinear`.

Kernels: on the CPU, decoding steps (≤ 8 rows) of a 4-bit layer with a group size torch's int4
kernel takes run in ``aten._weight_int4pack_mm_for_cpu`` (torch's own weight-only int4 kernel,
scales and zeros per group: the same format); everything else (more rows, 2 bits, other
devices) multiplies by the weight dequantized for that one call. The packed integers stay in
memory either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from cheers.errors import CheckpointError, CheersError
from cheers.transforms.targets import replace_module

BITS = (2, 4)
DEFAULT_GROUP_SIZE = 64
#: The issue's scope: the language model first (its weights are 60 % of the model's).
DEFAULT_LOWBIT_GROUPS = ("llm_attention", "llm_mlp")
SCALE_DTYPE = torch.float16
# torch's CPU int4 kernel takes these group sizes (aten/src/ATen/native/cpu/int4mm_kernel.cpp).
_INT4_KERNEL_GROUPS = (32, 64, 128, 256)
# It is made for decoding: measured on this CPU (one thread, a 1536 → 8960 layer) it takes 21 ms
# for one row against 90 ms dequantizing first, but 1.3 s for 64 rows against 99 ms.
KERNEL_MAX_ROWS = 8


@dataclass(frozen=True)
class LowBitSpec:
    """Bits of the integer part and input columns per scale/zero (0: one per output row)."""

    bits: int = 4
    group_size: int = DEFAULT_GROUP_SIZE

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise CheersError(f"unsupported bits {self.bits!r}; use one of {BITS}")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise CheersError(f"group_size must be an int, got {self.group_size!r}")
        if self.group_size < 0 or self.group_size % 8:
            raise CheersError(
                f"unsupported group size {self.group_size}; use a positive multiple of 8 "
                "(e.g. 64 or 128) or 0 for one scale per output channel"
            )

    @property
    def levels(self) -> int:
        return 2**self.bits

    def group(self, in_features: int) -> int:
        """The group size of a layer with ``in_features`` inputs."""
        return self.group_size or in_features

    def check_layer(self, name: str, in_features: int) -> None:
        """Raise :class:`CheersError` unless the groups tile the layer's inputs and bytes."""
        g = self.group(in_features)
        if in_features % g or in_features % (8 // self.bits):
            raise CheersError(
                f"group size {self.group_size} does not divide the {in_features} inputs of "
                f"{name}; choose a group size that divides every quantized layer's input width "
                "(64 fits both models' LLM layers; the official ViT's 4304-wide MLP needs 16) "
                "or 0 (per output channel)"
            )


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Integers in ``[0, 2^bits)`` (…, n) → uint8 (…, n·bits/8), the first one in the low bits."""
    per_byte = 8 // bits
    q = rearrange(q.to(torch.uint8), "... (n k) -> ... n k", k=per_byte)
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=q.device)
    return (q << shifts).sum(-1, dtype=torch.uint8)


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """The inverse of :func:`pack`: uint8 (…, m) → integers (…, m·8/bits) as uint8."""
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
    q = (packed[..., None] >> shifts) & (2**bits - 1)
    return rearrange(q, "... n k -> ... (n k)")


def dequantize(
    q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``scales · q + zeros`` per group: q (out, in), scales and zeros (out, in / g)."""
    groups = scales.shape[1]
    w = rearrange(q.to(dtype), "o (n g) -> o n g", n=groups)
    w = w * scales.to(dtype)[..., None] + zeros.to(dtype)[..., None]
    return rearrange(w, "o n g -> o (n g)")


def grouped_min_max(weight: torch.Tensor, spec: LowBitSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row and group: the min–max grid's ``(scales, zeros)``, float32 (out, in / g)."""
    w = rearrange(weight.detach().float(), "o (n g) -> o n g", g=spec.group(weight.shape[1]))
    low, high = w.amin(-1), w.amax(-1)
    scales = ((high - low) / (spec.levels - 1)).clamp(min=1e-8)
    return scales, low


def round_to_grid(
    weight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, spec: LowBitSpec
) -> torch.Tensor:
    """The nearest grid integers of every weight, for given scales and zeros (any sign)."""
    groups = scales.shape[1]
    w = rearrange(weight.detach().float(), "o (n g) -> o n g", n=groups)
    s = torch.where(scales.abs() < 1e-12, torch.full_like(scales, 1e-12), scales)
    q = torch.round((w - zeros[..., None]) / s[..., None]).clamp(0, spec.levels - 1)
    return rearrange(q, "o n g -> o (n g)").to(torch.uint8)


def rtn(weight: torch.Tensor, spec: LowBitSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest on the min–max grid: ``(q, scales, zeros)``."""
    scales, zeros = grouped_min_max(weight, spec)
    return round_to_grid(weight, scales, zeros, spec), scales, zeros


class LowBitLinear(nn.Module):
    """A linear layer with 2- or 4-bit packed weights, a scale and a zero per group."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        spec: LowBitSpec,
        bias: bool,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.spec = in_features, out_features, spec
        groups = in_features // spec.group(in_features)
        packed = in_features * spec.bits // 8
        self.register_buffer(
            "qweight", torch.zeros(out_features, packed, dtype=torch.uint8, device=device)
        )
        self.register_buffer(
            "scales", torch.ones(out_features, groups, dtype=SCALE_DTYPE, device=device)
        )
        self.register_buffer(
            "zeros", torch.zeros(out_features, groups, dtype=SCALE_DTYPE, device=device)
        )
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None
        # torch's CPU int4 kernel layout, with the tensors it was built from (rebuilt when
        # they are replaced, e.g. by a load or the refinement of the floats).
        self._int4: tuple[torch.Tensor, ...] | None = None

    @classmethod
    def from_parts(
        cls,
        linear: nn.Linear,
        spec: LowBitSpec,
        q: torch.Tensor,
        scales: torch.Tensor,
        zeros: torch.Tensor,
    ) -> LowBitLinear:
        """The quantized twin of ``linear`` with integers ``q`` (out, in) and floats per group."""
        layer = cls(linear.in_features, linear.out_features, spec, linear.bias is not None)
        layer.set_parts(q, scales, zeros)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().clone())
        return layer

    def set_parts(self, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> None:
        self.qweight = pack(q, self.spec.bits)
        self.set_floats(scales, zeros)

    def set_floats(self, scales: torch.Tensor, zeros: torch.Tensor) -> None:
        self.scales = scales.detach().to(SCALE_DTYPE).contiguous()
        self.zeros = zeros.detach().to(SCALE_DTYPE).contiguous()
        self._int4 = None

    def load_checkpoint_tensor(self, name: str, tensor: torch.Tensor) -> None:
        """Take a quantized folder's ``qweight`` (uint8), ``scales``/``zeros`` or ``bias``."""
        if name == "qweight":
            if tensor.dtype != torch.uint8 or tensor.shape != self.qweight.shape:
                raise CheersError(
                    f"qweight must be uint8 {tuple(self.qweight.shape)}, got {tensor.dtype} "
                    f"{tuple(tensor.shape)}"
                )
            self.qweight = tensor
        elif name in ("scales", "zeros"):
            setattr(self, name, tensor.to(SCALE_DTYPE))
        elif name == "bias" and self.bias is not None:
            self.bias = nn.Parameter(tensor, requires_grad=self.bias.requires_grad)
        else:
            raise KeyError(f"LowBitLinear has no checkpoint tensor {name!r}")
        self._int4 = None

    def integers(self) -> torch.Tensor:
        """The integer part (out, in), uint8."""
        return unpack(self.qweight, self.spec.bits)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight as floats (out, in)."""
        return dequantize(self.integers(), self.scales, self.zeros, dtype)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._int4 = None

    def _int4_kernel_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """torch's CPU int4 layout of this layer, built on first use; None where it does not
        apply (2 bits, off the CPU, a group size or output width the kernel does not take, an
        input neither float32 nor bfloat16, scales being trained)."""
        g = self.spec.group(self.in_features)
        if (
            self.spec.bits != 4
            or x.device.type != "cpu"
            or g not in _INT4_KERNEL_GROUPS
            or self.out_features % 16  # the kernel's packing tiles the outputs by 16
            or x.dtype not in (torch.float32, torch.bfloat16)
            or (torch.is_grad_enabled() and (self.scales.requires_grad or self.zeros.requires_grad))
        ):
            return None
        built_from = (self.qweight, self.scales, self.zeros)
        if self._int4 is None or any(
            a is not b for a, b in zip(self._int4[:3], built_from, strict=True)
        ):
            q = self.integers().to(torch.int32)
            weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
            # The kernel computes (q − 8) · scale + zero: our zero is the weight at q = 0.
            zero = self.zeros.float() + 8 * self.scales.float()
            scales_and_zeros = torch.stack([self.scales.float(), zero], -1)
            layout = rearrange(scales_and_zeros, "o n two -> n o two").contiguous()
            self._int4 = (*built_from, weight, layout)
        return self._int4[3], self._int4[4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        kernel = self._int4_kernel_inputs(x) if flat.shape[0] <= KERNEL_MAX_ROWS else None
        if kernel is not None:
            weight, scales_and_zeros = kernel
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(
                flat.contiguous(),
                weight,
                self.spec.group(self.in_features),
                scales_and_zeros.to(x.dtype),
            )
        else:
            out = F.linear(flat, self.dequantized(x.dtype))
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        g = self.spec.group_size or "row"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bits={self.spec.bits}, group_size={g}"
        )


# ------------------------------------------------------------------------------ folder format
#: The quantization methods a folder may name, and its config.json key (cheers.quantization).
METHODS = ("decoupleq", "rtn")
CONFIG_KEY = "quantization_config"


def restore_structure(model: nn.Module, source: str) -> list[str]:
    """Put empty :class:`LowBitLinear` layers where the config's ``quantization_config`` says
    (on the ``meta`` device, before a load fills them); returns their names.

    Raises:
        CheckpointError: a ``quantization_config`` that is not one of ours or names layers this
            config's model does not have.
    """
    entry = model.config.extra[CONFIG_KEY]
    problem = None
    if not isinstance(entry, dict) or entry.get("quant_method") not in METHODS:
        problem = f"quant_method must be one of {METHODS}"
    elif not isinstance(entry.get("modules"), list) or not entry["modules"]:
        problem = "it lists no quantized modules"
    if problem is None:
        try:
            spec = LowBitSpec(entry.get("bits"), entry.get("group_size"))
        except CheersError as err:
            problem = str(err)
    if problem is not None:
        raise CheckpointError(
            f"the quantization_config in {source} is not readable: {problem}; re-run "
            "`cheers quantize` from the float model"
        )
    for name in entry["modules"]:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            layer = None
        if not isinstance(layer, nn.Linear):
            raise CheckpointError(
                f"the quantization_config in {source} names {name!r}, which is no linear layer "
                "of the model its config.json describes; the folder's config and weights do "
                "not belong together: re-run `cheers quantize`"
            )
        try:
            spec.check_layer(name, layer.in_features)
        except CheersError as err:
            raise CheckpointError(f"{source}: {err}") from err
        replace_module(
            model,
            name,
            LowBitLinear(
                layer.in_features,
                layer.out_features,
                spec,
                layer.bias is not None,
                device=layer.weight.device,
            ),
        )
    return list(entry["modules"])


__all__ = [
    "BITS",
    "CONFIG_KEY",
    "DEFAULT_GROUP_SIZE",
    "DEFAULT_LOWBIT_GROUPS",
    "METHODS",
    "LowBitLinear",
    "LowBitSpec",
    "dequantize",
    "grouped_min_max",
    "pack",
    "restore_structure",
    "round_to_grid",
    "rtn",
    "unpack",
]
