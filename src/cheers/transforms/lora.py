"""LoRA: low-rank adapters on linear layers, saved and loaded in the PEFT layout.

``apply_lora`` wraps each targeted ``nn.Linear`` so that it computes
``W x + b + (α / r) · B A dropout(x)`` with ``A`` (r × in) random and ``B`` (out × r) zero, so
the adapted model starts equal to the base one, and freezes everything else. An adapter
folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` with the names PEFT
uses (``base_model.model.<module>.lora_A.weight``), so PEFT tools read it. ``merge_lora``
folds the adapters into the weights (a plain model again); ``unload_lora`` removes them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cheers._files import atomic_write
from cheers.errors import CheckpointError, CheersError
from cheers.transforms.targets import check_groups, linear_targets, replace_module

PREFIX = "base_model.model."
CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"


@dataclass(frozen=True)
class LoraConfig:
    """Rank, scale ``alpha / rank``, dropout and the module groups adapted."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = field(default=("llm_attention", "llm_mlp"))

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise CheersError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if not (isinstance(self.alpha, int | float) and math.isfinite(self.alpha)):
            raise CheersError(f"LoRA alpha must be a finite number, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise CheersError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "targets", check_groups(tuple(self.targets)))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, scale: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scale = scale
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, **_like(base))
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, **_like(base))
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (model code reads a layer's dtype and device from it)."""
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(self.dropout(x))) * self.scale

    def merged(self) -> nn.Linear:
        """The base layer with ``scale · B A`` added to its weight."""
        delta = (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scale
        self.base.weight.data += delta.to(self.base.weight.dtype)
        return self.base


def _like(layer: nn.Linear) -> dict:
    return {"device": layer.weight.device, "dtype": layer.weight.dtype}


def apply_lora(model: nn.Module, config: LoraConfig) -> list[str]:
    """Wrap the targeted linear layers and freeze every other parameter; returns their names.

    Raises:
        CheersError: when the model already holds adapters or no layer matches.
    """
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise CheersError("the model already holds LoRA adapters; unload or merge them first")
    names = [name for name, _ in linear_targets(model, config.targets)]
    if not names:
        raise CheersError(f"no linear layer matches the LoRA targets {config.targets}")
    model.requires_grad_(False)
    for name in names:
        base = model.get_submodule(name)
        replace_module(model, name, LoRALinear(base, config.rank, config.scale, config.dropout))
    return names


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights under PEFT's names."""
    state = {}
    for name, layer in lora_layers(model).items():
        state[f"{PREFIX}{name}.lora_A.weight"] = layer.lora_A.weight.detach()
        state[f"{PREFIX}{name}.lora_B.weight"] = layer.lora_B.weight.detach()
    return state


def save_lora(
    model: nn.Module, config: LoraConfig, folder: str | os.PathLike[str], base: str = ""
) -> Path:
    """Write the adapters of ``model`` as ``adapter_config.json`` and
    ``adapter_model.safetensors`` (each atomically)."""
    if not lora_layers(model):
        raise CheersError("the model holds no LoRA adapters to save")
    return save_adapter(lora_state_dict(model), config, folder, base)


def save_adapter(
    state: dict[str, torch.Tensor],
    config: LoraConfig,
    folder: str | os.PathLike[str],
    base: str = "",
) -> Path:
    """Write an adapter folder from ``state`` (PEFT names, as :func:`lora_state_dict` gives:
    e.g. a state gathered from a sharded training run)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} is a file; pass a folder for the adapter")
    folder.mkdir(parents=True, exist_ok=True)
    modules = sorted({k.removeprefix(PREFIX).rsplit(".lora_", 1)[0] for k in state})
    peft = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base,
        "r": config.rank,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "bias": "none",
        "fan_in_fan_out": False,
        "target_modules": modules,
        "inference_mode": True,
        "cheers": asdict(config),  # the module groups, to rebuild the same adapters
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    tmp = folder / f".{WEIGHTS_FILE}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, folder / WEIGHTS_FILE)
    text = (json.dumps(peft, indent=2) + "\n").encode("utf-8")
    atomic_write(folder / CONFIG_FILE, lambda f: f.write(text))
    return folder


def read_config(folder: str | os.PathLike[str]) -> LoraConfig:
    """The :class:`LoraConfig` of an adapter folder written by :func:`save_lora`."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {CONFIG_FILE}; pass a LoRA adapter folder")
    data = json.loads(path.read_text())
    if data.get("peft_type") != "LORA":
        raise CheckpointError(f"{path}: peft_type is {data.get('peft_type')!r}, not 'LORA'")
    if "cheers" in data:
        c = data["cheers"]
        return LoraConfig(c["rank"], c["alpha"], c["dropout"], tuple(c["targets"]))
    raise CheckpointError(f"{path}: not written by cheers (no 'cheers' section)")


def load_lora(model: nn.Module, folder: str | os.PathLike[str], scale: float = 1.0) -> LoraConfig:
    """Add the adapters of ``folder`` to ``model``; ``scale`` multiplies their effect.

    Raises:
        CheckpointError: when the folder's names or shapes do not fit the model.
    """
    if not (isinstance(scale, int | float) and math.isfinite(scale)):
        raise CheersError(f"the LoRA scale must be a finite number, got {scale!r}")
    config = read_config(folder)
    apply_lora(model, config)
    state = load_file(str(Path(folder) / WEIGHTS_FILE))
    layers = lora_layers(model)
    expected = set(lora_state_dict(model))
    if set(state) != expected:
        unload_lora(model)
        missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        raise CheckpointError(
            f"{folder}: the adapter does not fit this model (missing {missing}, unexpected "
            f"{extra}); load it on the model it was trained for"
        )
    for name, layer in layers.items():
        for part in ("lora_A", "lora_B"):
            target = getattr(layer, part).weight
            tensor = state[f"{PREFIX}{name}.{part}.weight"]
            if tensor.shape != target.shape:
                unload_lora(model)
                raise CheckpointError(
                    f"{folder}: {name}.{part} has shape {tuple(tensor.shape)} but this model "
                    f"needs {tuple(target.shape)}; load the adapter on the model it was "
                    "trained for"
                )
            target.data.copy_(tensor.to(target.dtype))
        layer.scale = config.scale * scale
    return config


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its layer's weight; returns how many were merged."""
    layers = lora_layers(model)
    for name, layer in layers.items():
        replace_module(model, name, layer.merged())
    return len(layers)


def unload_lora(model: nn.Module) -> int:
    """Remove every adapter, restoring the base layers unchanged; returns how many."""
    layers = lora_layers(model)
    for name, layer in layers.items():
        replace_module(model, name, layer.base)
    return len(layers)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "LoRALinear",
    "LoraConfig",
    "apply_lora",
    "load_lora",
    "lora_state_dict",
    "merge_lora",
    "read_config",
    "save_adapter",
    "save_lora",
    "trainable_parameters",
    "unload_lora",
]
