"""Run checkpoints: atomic saves, pruning, the optimizer state without pickle, exact resume.

``<output_dir>/checkpoints/step-NNNNNNN/`` holds the model part (a released-format ``model/``
folder, or an ``adapter/`` folder for a LoRA run: see :mod:`cheers.training.tuning`),
``optimizer.safetensors`` (AdamW state by parameter name and the RNG state) and
``trainer_state.json`` (stage, step, data-stream position). A checkpoint is written to a
temporary folder and renamed into place; ``checkpoints/latest`` is replaced after it, so a crash
at any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cheers._files import atomic_write
from cheers.data.loader import StreamState
from cheers.errors import CheckpointError
from cheers.training.recipe import TrainConfig


@dataclass
class ResumePoint:
    """Where a run continues: its latest checkpoint folder and what ``trainer_state.json`` says."""

    folder: Path
    state: dict[str, Any]

    @property
    def stage_index(self) -> int:
        return self.state["stage_index"]

    @property
    def stage_step(self) -> int:
        return self.state["stage_step"]

    @property
    def step(self) -> int:
        return self.state["step"]

    @property
    def stream(self) -> StreamState:
        return StreamState(**self.state["stream"])

    @property
    def skipped(self) -> list[str]:
        return self.state.get("skipped", [])


def open_run(ckpt_dir: Path, config: TrainConfig, resume: bool, main: bool) -> ResumePoint | None:
    """The point to resume from (``None`` for a new run), after checking that the request fits
    the folder: ``--resume`` needs a checkpoint; a new run must not overwrite one.

    Raises:
        CheckpointError: naming the folder and what to do instead.
    """
    if not resume:
        if main and (ckpt_dir / "latest").exists():
            raise CheckpointError(
                f"{ckpt_dir.parent} already holds a run; pass --resume to continue it or choose "
                "another run.output_dir"
            )
        return None
    folder = latest_checkpoint(ckpt_dir)
    if folder is None:
        raise CheckpointError(f"--resume: no checkpoint in {ckpt_dir}; start without --resume")
    point = ResumePoint(folder, json.loads((folder / "trainer_state.json").read_text()))
    _check_stages_kept(point.state, config, folder)
    return point


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint ``folder/latest`` names, or ``None`` when there is none yet."""
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    if not (path / "trainer_state.json").is_file():
        raise CheckpointError(f"{pointer} names {path}, which is incomplete; remove it to restart")
    return path


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def gather(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state dicts on the CPU; a collective: every
    process calls it."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (
        get_model_state_dict(model, options=options),
        get_optimizer_state_dict(model, optimizer, options=options),
    )


def write_checkpoint(
    ckpt_dir: Path,
    step: int,
    save_model_part: Any,
    optim_state: dict,
    trainer_state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write one checkpoint atomically, point ``latest`` at it and prune old ones.

    ``save_model_part(folder)`` writes the model part into the temporary folder.
    """
    name = checkpoint_name(step)
    tmp = ckpt_dir / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model_part(tmp)
    tensors, groups = _flatten_optimizer(optim_state)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "trainer_state.json").write_text(
        # A stage's last checkpoint records param_groups None: the next stage starts afresh.
        json.dumps({"param_groups": groups, **trainer_state}, indent=2)
    )
    final = ckpt_dir / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write(ckpt_dir / "latest", lambda f: f.write(name.encode()))
    prune(ckpt_dir, keep_last)
    return final


def trainer_state(
    config: TrainConfig,
    index: int,
    stage_step: int,
    step: int,
    stream: StreamState,
    skipped: list[str],
    world: int,
) -> dict[str, Any]:
    """What ``trainer_state.json`` records; a finished stage resumes at the next one's start."""
    state: dict[str, Any] = {
        "step": step,
        "stage_index": index,
        "stage_name": config.stages[index].name,
        "stage_names": [stage.name for stage in config.stages[: index + 1]],
        "stage_step": stage_step,
        "stream": {"window_start": stream.window_start, "served": stream.served},
        "skipped": skipped,
        "world_size": world,
    }
    if stage_step == config.stages[index].steps:
        if index + 1 < len(config.stages):
            state.update(stage_index=index + 1, stage_step=0)
            state["stream"] = {"window_start": 0, "served": 0}
            state["param_groups"] = None
        else:
            state["finished"] = True
    return state


def prune(ckpt_dir: Path, keep_last: int) -> None:
    """Remove all but the newest ``keep_last`` (at least one) checkpoints."""
    done = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir())
    for old in done[: -max(1, keep_last)]:
        shutil.rmtree(old, ignore_errors=True)


def load_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, point: ResumePoint) -> None:
    """Restore the optimizer state and the RNG state of ``point`` (nothing when the checkpoint
    ended a stage: the next stage starts with a fresh optimizer)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    groups = point.state.get("param_groups")
    if groups is None:
        return
    tensors = load_file(str(point.folder / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng.torch"))
    set_optimizer_state_dict(
        model,
        optimizer,
        _unflatten_optimizer(tensors, groups),
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=False),
    )


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors = {}
    for name, values in state["state"].items():
        for key, value in values.items():
            tensors[f"state.{name}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    groups = []
    for group in state["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    return tensors, groups


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[str, dict] = {}
    for key, value in tensors.items():
        name, slot = key.removeprefix("state.").rsplit(".", 1)
        state.setdefault(name, {})[slot] = value
    fixed = []
    for group in groups:
        g = dict(group)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        fixed.append(g)
    return {"state": state, "param_groups": fixed}


def _check_stages_kept(state: dict, config: TrainConfig, checkpoint: Path) -> None:
    """A resumed run may append stages, not replace the ones it has run (their state would be
    attributed to another stage)."""
    ran = state.get("stage_names")
    if ran is None:  # checkpoints written before the names were recorded
        return
    now = [stage.name for stage in config.stages[: len(ran)]]
    if now != ran:
        raise CheckpointError(
            f"--resume: {checkpoint} was written after the stages {ran}, but the config now "
            f"lists {now} in their place; keep the stages that already ran as they were (new "
            "ones can be appended at the end) or start a new run in another run.output_dir"
        )
