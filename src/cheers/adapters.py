"""LoRA adapters on released models: the ``--lora DIR[:scale]`` flag and merging to a folder.

The adapter mechanics (wrapping layers, the PEFT files) are :mod:`cheers.transforms.lora`;
this module works on model *folders*: it reads the flag's text, and folds an adapter into a
released model and writes the result as a released-format folder that
:meth:`cheers.CheersPipeline.from_pretrained` loads like any other.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cheers.checkpoint import load_model, resolve_model_path, save_model
from cheers.errors import CheckpointError, ConfigError
from cheers.tokenizer import CheersTokenizer
from cheers.transforms.lora import CONFIG_FILE, WEIGHTS_FILE, load_lora, merge_lora


@dataclass(frozen=True)
class LoraSpec:
    """An adapter folder and the factor its effect is multiplied by."""

    folder: Path
    scale: float = 1.0


def parse_lora_spec(text: str) -> LoraSpec:
    """Read ``DIR`` or ``DIR:SCALE`` (the ``--lora`` flag).

    The scale is what follows the last colon when it reads as a number; a folder whose own
    name ends in ``:something`` that is not a number is taken whole.

    Raises:
        ConfigError: for a scale that is not a finite number.
        CheckpointError: when the folder does not hold an adapter.
    """
    folder, scale = text, 1.0
    head, colon, tail = text.rpartition(":")
    if colon and head:
        try:
            scale = float(tail)
        except ValueError:
            if not Path(text).is_dir():
                raise ConfigError(
                    f"--lora {text!r}: the scale {tail!r} after the last ':' is not a number; "
                    "write --lora DIR or --lora DIR:0.8"
                ) from None
        else:
            folder = head
            if not math.isfinite(scale):
                raise ConfigError(
                    f"--lora {text!r}: the scale must be a finite number, got {tail!r}; "
                    "write e.g. --lora DIR:0.8"
                )
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise CheckpointError(
            f"--lora {text!r}: {str(path)!r} is not a folder; pass the folder that holds "
            f"{CONFIG_FILE} and {WEIGHTS_FILE} (a LoRA run writes it as checkpoints/*/adapter)"
        )
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (path / name).is_file()]
    if missing:
        raise CheckpointError(
            f"--lora {text!r}: {path} holds no {' or '.join(missing)}, so it is not a LoRA "
            "adapter folder; pass the folder a LoRA run writes (checkpoints/*/adapter)"
        )
    return LoraSpec(path, scale)


def merge_lora_folder(
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str],
    out: str | os.PathLike[str],
    scale: float = 1.0,
) -> Path:
    """Fold ``adapter`` (at ``scale``) into the released model ``base`` and write the result,
    with ``base``'s tokenizer, as a released-format folder ``out``.

    The merge is done in float32 and saved in the base model's stored dtype.

    Raises:
        CheckpointError: when the adapter does not fit the base model, or ``out`` is ``base``.
    """
    base_path = resolve_model_path(base)
    out = Path(out)
    if out.exists() and out.resolve() == base_path.resolve():
        raise CheckpointError(
            f"lora merge: the output folder {out} is the base model's folder; write the merged "
            "model to a new folder"
        )
    model = load_model(base_path, dtype=torch.float32)
    stored = model.config.extra.get("torch_dtype", "float32")
    load_lora(model, adapter, scale=scale)
    merge_lora(model)
    dtype = getattr(torch, str(stored), torch.float32)
    if isinstance(dtype, torch.dtype) and dtype != torch.float32 and dtype.is_floating_point:
        model = model.to(dtype)
    save_model(model, out)
    CheersTokenizer.from_folder(base_path).save(out)
    return out


__all__ = ["LoraSpec", "merge_lora_folder", "parse_lora_spec"]
