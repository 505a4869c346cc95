"""What a run trains and what its checkpoints hold: whole modules, or LoRA adapters.

- :class:`FullTuning`: each stage trains its module groups (``trainable``); a checkpoint's
  model part is a released-format ``model/`` folder, from which a resumed run reloads.
- :class:`LoraTuning` (``[model.lora]``): the released weights of ``from_pretrained`` stay
  frozen and only the adapters train; a checkpoint's model part is an ``adapter/`` folder in the
  PEFT layout (``adapter_config.json`` + ``adapter_model.safetensors``), and a resumed run
  rebuilds the base model and puts the saved adapters back on it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cheers.checkpoint import save_state
from cheers.errors import CheckpointError
from cheers.model import Cheers
from cheers.tokenizer import CheersTokenizer
from cheers.training.recipe import MODULE_GROUPS, NEVER_TRAINED, StageConfig
from cheers.transforms.lora import (
    PREFIX,
    LoraConfig,
    apply_lora,
    load_lora,
    read_config,
    save_adapter,
)


def set_trainable(model: Cheers, groups: tuple[str, ...]) -> list[nn.Parameter]:
    """Train the parameters of the module ``groups`` (never those in ``NEVER_TRAINED``) and
    freeze the rest; returns the trainable ones."""
    prefixes = tuple(p for g in groups for p in MODULE_GROUPS[g])
    params = []
    for name, param in model.named_parameters():
        train = name.startswith(prefixes) and not name.startswith(NEVER_TRAINED)
        param.requires_grad_(train)
        if train:
            params.append(param)
    return params


class FullTuning:
    """Whole modules train; checkpoints hold the full model."""

    part = "model"  # the model part's folder inside a checkpoint
    adapters = False

    def resume_from(self, checkpoint: Path) -> Path | None:
        """The model folder a resumed run loads (``None``: build it as a new run does)."""
        return checkpoint / self.part

    def attach(self, model: Cheers, checkpoint: Path | None) -> None:
        """Change the built model before training (nothing to do here)."""

    def trainable(self, model: Cheers, stage: StageConfig) -> list[nn.Parameter]:
        return set_trainable(model, stage.trainable_groups())

    def save(
        self, state: dict[str, torch.Tensor], model: Cheers, tok: CheersTokenizer, folder: Path
    ) -> None:
        """Write the model part of a checkpoint from the gathered ``state``."""
        save_state(state, model.config, folder / self.part)
        tok.save(folder / self.part)


class LoraTuning:
    """Only LoRA adapters train, on the frozen weights of ``base``."""

    part = "adapter"
    adapters = True

    def __init__(self, config: LoraConfig, base: str) -> None:
        self.config, self.base = config, base

    def resume_from(self, checkpoint: Path) -> Path | None:  # noqa: ARG002 - the Tuning interface
        return None  # the frozen base is rebuilt from from_pretrained, the adapters attached

    def attach(self, model: Cheers, checkpoint: Path | None) -> None:
        """Put fresh adapters on ``model`` (``B = 0``: it computes what the base does), or the
        adapters of ``checkpoint`` when resuming.

        Raises:
            CheckpointError: when the checkpoint's adapters differ from ``[model.lora]``.
        """
        if checkpoint is None:
            apply_lora(model, self.config)
            return
        saved = read_config(checkpoint / self.part)
        if saved != self.config:
            raise CheckpointError(
                f"--resume: {checkpoint / self.part} holds adapters {saved}, but [model.lora] "
                f"now asks for {self.config}; keep [model.lora] as it was or start a new run"
            )
        load_lora(model, checkpoint / self.part)  # freezes all but the adapters, as apply_lora

    # The Tuning interface: what trains may depend on the stage (FullTuning), not here.
    def trainable(self, model: Cheers, stage: StageConfig) -> list[nn.Parameter]:  # noqa: ARG002
        return [p for p in model.parameters() if p.requires_grad]

    def save(
        self,
        state: dict[str, torch.Tensor],
        model: Cheers,  # noqa: ARG002 - the Tuning interface: a LoRA saves only its layers
        tok: CheersTokenizer,  # noqa: ARG002 - the Tuning interface
        folder: Path,
    ) -> None:
        adapter = {PREFIX + k: v for k, v in state.items() if ".lora_" in k}
        save_adapter(adapter, self.config, folder / self.part, base=self.base)


def make_tuning(lora: LoraConfig | None, base: str | None) -> FullTuning | LoraTuning:
    """:class:`LoraTuning` for a recipe with ``[model.lora]``, else :class:`FullTuning`."""
    return FullTuning() if lora is None else LoraTuning(lora, base or "")
