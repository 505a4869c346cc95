"""2- and 4-bit weights for a whole model: calibration, decoupleQ or RTN, and the folder format.

    >>> pipe = CheersPipeline.from_pretrained("Cheers")                       # doctest: +SKIP
    >>> settings = QuantizeSettings(method="decoupleq", bits=2)               # doctest: +SKIP
    >>> quantize_model(pipe.model, settings, calibration_batches(pipe, "calib.jsonl"))
    >>> pipe.save_pretrained("Cheers-w2")   # a folder from_pretrained loads  # doctest: +SKIP

Calibration data is a JSONL file in the training format (:mod:`cheers.data.records`); its
samples go through the model as in training (understanding images at t = 1, generation targets
noised), so every quantized group sees the activations it sees in use. From them:

1. per layer, H = Σ x xᵀ of the layer's inputs, and decoupleQ's alternation
   (:mod:`cheers.transforms.decoupleq`) picks the integers and the floats;
2. per block (an LLM decoder layer, a ViT layer, a flow-head block), the integers stay and the
   floats of its quantized layers are refined with Adam on the block's output against the float
   block's, on the same calibration inputs (kept only where it lowers that error).

RTN needs no data; given some, the layer-output errors are measured and reported for it too.

**Folder format.** A quantized folder is a released-format folder whose ``config.json`` has a
``quantization_config`` (``quant_method`` ``decoupleq``/``rtn``, ``bits``, ``group_size``,
``modules``: the quantized layers' names) and whose weights hold, for each such layer,
``<name>.qweight`` (uint8, (out, in·bits/8), packed along the inputs, first column in the low
bits), ``<name>.scales`` and ``<name>.zeros`` (float16, (out, in / group_size)) and its ``bias``,
with ``w = scales · q + zeros`` per group; every other tensor as released.
:func:`cheers.checkpoint.load_model` rebuilds those layers from the config before reading
(:func:`cheers.transforms.lowbit.restore_structure`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from cheers.errors import CheckpointError, CheersError, DataError
from cheers.model import Cheers
from cheers.transforms.decoupleq import decoupleq_layer, output_error
from cheers.transforms.lowbit import (
    CONFIG_KEY,
    DEFAULT_GROUP_SIZE,
    DEFAULT_LOWBIT_GROUPS,
    METHODS,
    LowBitLinear,
    LowBitSpec,
    dequantize,
    rtn,
)
from cheers.transforms.targets import block_of, check_groups, linear_targets, replace_module

if TYPE_CHECKING:
    from cheers.pipeline import CheersPipeline
    from cheers.training.objective import TrainBatch


@dataclass(frozen=True)
class QuantizeSettings:
    """What ``cheers quantize`` does: method, bits, group size, layers, and decoupleQ's effort."""

    method: str = "decoupleq"
    bits: int = 4
    group_size: int = DEFAULT_GROUP_SIZE
    groups: tuple[str, ...] = DEFAULT_LOWBIT_GROUPS
    rounds: int = 4  # alternations of (integers | floats) per layer
    block_steps: int = 100  # Adam steps of the block-wise refinement of the floats (0: none)
    block_lr: float = 1e-3  # relative to each group's scale

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CheersError(f"unknown quantization method {self.method!r}; use one of {METHODS}")
        object.__setattr__(self, "groups", check_groups(tuple(self.groups)))
        if "projectors" in self.groups:
            raise CheersError(
                "the projectors stay in the compute dtype (about 1 % of the weights); leave "
                "'projectors' out of the quantized groups"
            )
        for name in ("rounds", "block_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CheersError(f"{name} must be an int ≥ 0, got {value!r}")
        self.spec  # noqa: B018 - validates bits and group size

    @property
    def spec(self) -> LowBitSpec:
        return LowBitSpec(self.bits, self.group_size)


# -------------------------------------------------------------------------- calibration data
def calibration_batches(
    pipe: CheersPipeline,
    path: str | os.PathLike[str] | None,
    samples: int = 64,
    batch_size: int = 4,
    seed: int = 0,
) -> list[TrainBatch]:
    """The first ``samples`` samples of the JSONL file ``path`` as batches the model runs.

    Raises:
        DataError: no path, a missing or unreadable file, a bad sample, or no samples.
    """
    from cheers.data.examples import tokenize
    from cheers.data.records import read_records
    from cheers.training.objective import make_batch

    if path is None or not os.fspath(path):
        raise DataError(
            "decoupleQ needs calibration data: pass --calibration FILE.jsonl (samples in the "
            "training format, e.g. a split written by `python -m cheers.shapes.dataset`)"
        )
    if samples < 1 or batch_size < 1:
        raise DataError(f"samples and batch_size must be ≥ 1, got {samples} and {batch_size}")
    records = read_records(path)[:samples]
    if not records:
        raise DataError(
            f"the calibration file {path} holds no samples; give a JSONL file with at least "
            "one sample in the training format"
        )
    model = pipe.model
    context = model.config.text_config.max_position_embeddings
    examples = [tokenize(r, pipe.tokenizer, model.tokens_per_image, context) for r in records]
    batches = []
    for start in range(0, len(examples), batch_size):
        items = list(enumerate(examples[start : start + batch_size], start=start))
        batches.append(make_batch(items, pipe.tokenizer, model.config, seed, 0.0))
    return batches


@dataclass
class Observations:
    """What the float model showed on the calibration data: H per layer, the calls per block."""

    hessians: dict[str, torch.Tensor] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    block_calls: dict[str, list[tuple[tuple, dict, torch.Tensor]]] = field(default_factory=dict)


@torch.no_grad()
def observe(
    model: Cheers, names: Sequence[str], batches: Sequence[TrainBatch], progress: bool = False
) -> Observations:
    """Run the calibration batches through ``model`` (as in training, no gradients) and record
    each layer's H = Σ x xᵀ and each block's inputs and output."""
    from cheers.training.objective import Objective

    seen = Observations()
    handles = []

    def accumulate(name: str, width: int):
        def hook(_module: nn.Module, args: tuple) -> None:
            x = args[0].detach().reshape(-1, width).float()
            if name not in seen.hessians:
                seen.hessians[name] = torch.zeros(width, width, device=x.device)
                seen.rows[name] = 0
            seen.hessians[name].addmm_(x.T, x)
            seen.rows[name] += x.shape[0]

        return hook

    def record(block: str):
        def hook(_module: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
            seen.block_calls.setdefault(block, []).append((args, kwargs, out.detach()))

        return hook

    blocks = sorted({b for b in map(block_of, names) if b is not None})
    for name in names:
        layer = model.get_submodule(name)
        handles.append(layer.register_forward_pre_hook(accumulate(name, layer.in_features)))
    for block in blocks:
        handles.append(
            model.get_submodule(block).register_forward_hook(record(block), with_kwargs=True)
        )
    bar = _bar(len(batches), "calibration", progress)
    try:
        objective = Objective(model)
        for batch in batches:
            objective(batch)
            if bar is not None:
                bar.update()
    finally:
        for handle in handles:
            handle.remove()
        if bar is not None:
            bar.close()
    return seen


# ----------------------------------------------------------------------------- the transform
@dataclass
class QuantizeReport:
    """Per layer the output error on the calibration data (RTN's, and the method's), and per
    block its output error before and after the refinement of the floats."""

    layer_errors: dict[str, tuple[float, float]] = field(default_factory=dict)
    block_errors: dict[str, tuple[float, float]] = field(default_factory=dict)

    def summary(self) -> str:
        lines = []
        if self.layer_errors:
            rtn_total = sum(a for a, _ in self.layer_errors.values())
            total = sum(b for _, b in self.layer_errors.values())
            lines.append(
                f"{len(self.layer_errors)} layers: summed output error {total:.4g} "
                f"(round-to-nearest: {rtn_total:.4g}, ratio {total / max(rtn_total, 1e-30):.3f})"
            )
        if self.block_errors:
            before = sum(a for a, _ in self.block_errors.values())
            after = sum(b for _, b in self.block_errors.values())
            lines.append(
                f"{len(self.block_errors)} blocks refined: output error {before:.4g} → {after:.4g}"
            )
        return "\n".join(lines)


def quantize_model(
    model: Cheers,
    settings: QuantizeSettings,
    batches: Sequence[TrainBatch] | None = None,
    progress: bool = False,
) -> QuantizeReport:
    """Replace the linear layers of ``settings.groups`` by :class:`LowBitLinear` in place and
    record the quantization in ``model.config`` (so that saving writes a loadable folder).

    Raises:
        CheersError: already quantized, a group size that does not fit a layer, or decoupleQ
            without calibration batches.
    """
    if CONFIG_KEY in model.config.extra or any(
        isinstance(m, LowBitLinear) for m in model.modules()
    ):
        raise CheersError("the model is quantized already; start from a float model folder")
    spec = settings.spec
    targets = list(linear_targets(model, settings.groups))
    if not targets:
        raise CheersError(f"no linear layers in the groups {list(settings.groups)}")
    for name, layer in targets:
        spec.check_layer(name, layer.in_features)
    if settings.method == "decoupleq" and not batches:
        raise CheersError("decoupleQ needs calibration batches (see calibration_batches)")
    names = [name for name, _ in targets]
    seen = observe(model, names, batches, progress) if batches else None
    report = QuantizeReport()
    bar = _bar(len(targets), f"{settings.method} {settings.bits}-bit layers", progress)
    for name, layer in targets:
        weight = layer.weight.detach().float()
        if settings.method == "decoupleq":
            hessian = seen.hessians[name] / max(seen.rows[name], 1)
            result = decoupleq_layer(weight, hessian, spec, settings.rounds)
            q, scales, zeros = result.q, result.scales, result.zeros
            report.layer_errors[name] = (result.rtn_error, result.error)
        else:
            q, scales, zeros = rtn(weight, spec)
            if seen is not None:
                hessian = seen.hessians[name] / max(seen.rows[name], 1)
                error = output_error(weight, dequantize(q, scales, zeros), hessian)
                report.layer_errors[name] = (error, error)
        quantized = LowBitLinear.from_parts(layer, spec, q, scales, zeros).to(weight.device)
        replace_module(model, name, quantized)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    if settings.method == "decoupleq" and settings.block_steps > 0:
        blocks = seen.block_calls
        bar = _bar(len(blocks), "block refinement", progress)
        for block, calls in blocks.items():
            report.block_errors[block] = refine_block(
                model.get_submodule(block), calls, settings.block_steps, settings.block_lr
            )
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
    model.config = dataclasses.replace(
        model.config, extra={**model.config.extra, CONFIG_KEY: config_entry(settings, names)}
    )
    return report


def refine_block(
    block: nn.Module, calls: Sequence[tuple[tuple, dict, torch.Tensor]], steps: int, lr: float
) -> tuple[float, float]:
    """Refine the scales and zeros of ``block``'s quantized layers (integers fixed) so that its
    output on the recorded ``calls`` matches the float block's; returns the relative squared
    error before and after (the refinement is kept only when it is lower)."""
    layers = [m for m in block.modules() if isinstance(m, LowBitLinear)]
    base = [(m.scales.float(), m.zeros.float()) for m in layers]
    rel_scale = [torch.zeros_like(s, requires_grad=True) for s, _ in base]
    rel_zero = [torch.zeros_like(s, requires_grad=True) for s, _ in base]
    norms = [float(out.float().pow(2).mean()) or 1.0 for _, _, out in calls]

    def loss(which: Sequence[int]) -> torch.Tensor:
        for m, (s, z), a, c in zip(layers, base, rel_scale, rel_zero, strict=True):
            m.scales, m.zeros = s * (1 + a), z + s * c  # differentiable in a and c
        total = torch.zeros(())
        for i in which:
            args, kwargs, out = calls[i]
            total = total + F.mse_loss(block(*args, **kwargs).float(), out.float()) / norms[i]
        return total / len(which)

    every = range(len(calls))
    with torch.no_grad():
        before = float(loss(every))
    optimizer = torch.optim.Adam([*rel_scale, *rel_zero], lr=lr)
    for step in range(steps):  # one recorded call a step, in turn
        value = loss([step % len(calls)])
        grads = torch.autograd.grad(value, [*rel_scale, *rel_zero])
        for tensor, grad in zip([*rel_scale, *rel_zero], grads, strict=True):
            tensor.grad = grad
        optimizer.step()
    with torch.no_grad():
        after = float(loss(every))
    for m, (s, z), a, c in zip(layers, base, rel_scale, rel_zero, strict=True):
        if after < before:
            m.set_floats(s * (1 + a.detach()), z + s * c.detach())
        else:
            m.set_floats(s, z)
    return before, min(before, after)


# ------------------------------------------------------------------------------ folder format
def config_entry(settings: QuantizeSettings, names: Sequence[str]) -> dict[str, Any]:
    return {
        "quant_method": settings.method,
        "bits": settings.bits,
        "group_size": settings.group_size,
        "modules": list(names),
    }


def quantize_folder(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: QuantizeSettings,
    calibration: str | os.PathLike[str] | None = None,
    samples: int = 64,
    progress: bool = False,
) -> tuple[Path, QuantizeReport]:
    """Quantize the float model folder ``model_path`` and write it, with its tokenizer, to
    ``out`` (the format above; the other tensors in the dtype they were stored in). Every
    check (data, group size, folders) runs before the slow work, and the files are written
    atomically, so a failure leaves ``out`` as it was.

    Raises:
        CheersError: a bad setting or output folder, or ``out`` is the model's own folder.
        DataError: missing or empty calibration data (decoupleQ).
        CheckpointError: a model folder that is quantized already.
    """
    from cheers.checkpoint import resolve_model_path, save_state
    from cheers.pipeline import CheersPipeline

    source = resolve_model_path(model_path)
    target = Path(out)
    if target.exists() and target.resolve() == source.resolve():
        raise CheersError(f"the output folder {target} is the model's own folder; pick a new one")
    pipe = CheersPipeline.from_pretrained(source, dtype="float32", device="cpu")
    if CONFIG_KEY in pipe.model.config.extra:
        raise CheckpointError(
            f"{source} holds quantized weights already; quantize the float model folder"
        )
    batches = None
    if settings.method == "decoupleq" or calibration is not None:
        batches = calibration_batches(pipe, calibration, samples)
    report = quantize_model(pipe.model, settings, batches, progress)
    stored = getattr(torch, str(pipe.model.config.extra.get("torch_dtype", "float32")), None)
    floats = {
        f"{name}.{part}"
        for name in pipe.model.config.extra[CONFIG_KEY]["modules"]
        for part in ("scales", "zeros")
    }
    state = {
        key: value.to(stored)
        if isinstance(stored, torch.dtype) and value.is_floating_point() and key not in floats
        else value
        for key, value in pipe.model.state_dict().items()
    }
    save_state(state, pipe.model.config, target)
    pipe.tokenizer.save(target)
    return target, report


def _bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr)


__all__ = [
    "Observations",
    "QuantizeReport",
    "QuantizeSettings",
    "calibration_batches",
    "observe",
    "quantize_folder",
    "quantize_model",
    "refine_block",
]
