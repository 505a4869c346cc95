"""What the component loaders share: the report, reading safetensors by name, key checks."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cheers.checkpoint import open_weights
from cheers.errors import CheckpointError
from cheers.model import Cheers

LLM_PREFIX = "model.language_model."
VIT_PREFIX = "model.vision_representation."
VAE_PREFIX = "model.vae_model."
PROJECTOR_PREFIX = "model.vae_decoder_projector."
LM_HEAD = "lm_head.weight"
EMBED = "embed_tokens.weight"

_IGNORABLE = re.compile(r"(^|\.)(rotary_emb\.inv_freq|position_ids)$")


# ---------------------------------------------------------------------------------- report
@dataclass
class LoadReport:
    """What one component loader did to the model, for logs and for tests.

    ``loaded_keys`` are model keys filled from the checkpoint; ``initialised`` model keys set by
    a documented rule instead (identity convolutions, mean-initialised rows, default latent
    statistics); ``kept`` model keys left exactly as they were; ``ignored`` checkpoint keys that
    were not used (e.g. SigLIP's text tower). ``notes`` explain each rule that fired.
    """

    component: str
    source: str
    loaded_keys: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        """Number of model tensors filled from the checkpoint."""
        return len(self.loaded_keys)

    def __str__(self) -> str:
        lines = [
            f"{self.component} from {self.source}: loaded {self.loaded} tensor(s), "
            f"initialised {len(self.initialised)}, kept {len(self.kept)}, "
            f"ignored {len(self.ignored)} checkpoint tensor(s)"
        ]
        lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)


# ------------------------------------------------------------------------- safetensors I/O
class _Tensors:
    """Names and shapes of the tensors in safetensors files, with reads of chosen names only.

    :func:`cheers.checkpoint.iter_tensors` reads every tensor; a full SigLIP checkpoint is
    mostly its text tower (a 256k-token embedding), so here only the names a loader uses are
    read, and shapes come from the headers so that everything is validated before any read.
    """

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._file_of: dict[str, Path] = {}
        for file in files:
            with open_weights(file) as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    self.shapes[name] = tuple(handle.get_slice(name).get_shape())
                    self._file_of[name] = file

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, tensor) for ``names``, opening each file once."""
        by_file: dict[Path, list[str]] = {}
        for name in names:
            by_file.setdefault(self._file_of[name], []).append(name)
        for file, group in by_file.items():
            with open_weights(file) as handle:
                # One tensor at a time: a shard never has to fit in memory at once.
                for name in group:
                    yield name, handle.get_tensor(name)

    def get(self, name: str) -> torch.Tensor:
        return next(self.read([name]))[1]


def _read_hf_config(folder: Path, what: str) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"no config.json in {folder}; pass the Hugging Face {what} folder as downloaded "
            "(it holds config.json and the *.safetensors weights)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); fix or re-download it") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object; re-download it")
    return data


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and math.isclose(a, b, rel_tol=1e-9)
    return a == b


def _shown(keys: list[str], limit: int = 10) -> str:
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _raise_problems(header: str, problems: list[str], fix: str) -> None:
    if problems:
        raise CheckpointError(f"{header}:\n  - " + "\n  - ".join(problems) + f"\n{fix}")


def _key_problems(
    expected: dict[str, tuple[int, ...]],
    found: dict[str, tuple[str, tuple[int, ...]]],
) -> list[str]:
    """Missing, unexpected and mis-shaped tensors.

    ``expected`` maps model keys to the model's shapes; ``found`` maps the model key each
    checkpoint tensor would fill to (checkpoint key, checkpoint shape).
    """
    problems: list[str] = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(found[k][0] for k in set(found) - set(expected))
    if missing:
        problems.append(f"{len(missing)} missing tensor(s) (model keys): {_shown(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_shown(unexpected)}")
    for key in sorted(set(expected) & set(found)):
        source_key, shape = found[key]
        if shape != expected[key]:
            problems.append(
                f"{source_key}: checkpoint shape {shape}, model shape {expected[key]} "
                f"(model key {key})"
            )
    return problems


def _model_shapes(model: Cheers, prefix: str) -> dict[str, tuple[int, ...]]:
    return {
        k: tuple(v.shape)
        for k, v in model.state_dict(keep_vars=True).items()
        if k.startswith(prefix)
    }


def _require_materialised(model: Cheers) -> None:
    # Copying into meta tensors would silently do nothing.
    if any(t.is_meta for t in model.state_dict(keep_vars=True).values()):
        raise CheckpointError(
            "the model has tensors on the meta device, so there is nowhere to copy weights to; "
            "build it on a real device, or call model.to_empty(device=...) first"
        )


@torch.no_grad()
def _copy(target: torch.Tensor, source: torch.Tensor) -> None:
    # copy_ converts dtype and device: the checkpoint's bf16/f32 become the model's dtype.
    target.copy_(source.to(dtype=target.dtype))


@torch.no_grad()
def _fill_rows_with_mean(weight: torch.Tensor, existing: int) -> None:
    """Set rows ``existing:`` of an embedding or output matrix to the mean of the others.

    New tokens start at the mean embedding rather than at random values: their input
    embedding then lies inside the distribution the pretrained layers were trained on, and
    (for the output projection) their logit starts at the average logit, so adding them
    barely moves the pretrained model's next-token distribution. Random rows of the usual
    init scale can get large logits and derail the first training steps.
    """
    mean = weight[:existing].float().mean(dim=0)
    weight[existing:] = mean.to(weight.dtype)


def _copy_all(
    model: Cheers, tensors: _Tensors, plan: dict[str, list[str]], report: LoadReport
) -> None:
    targets = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for source_key, tensor in tensors.read(plan):
            for key in plan[source_key]:
                _copy(targets[key], tensor)
                report.loaded_keys.append(key)
    report.loaded_keys.sort()
