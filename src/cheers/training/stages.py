"""Stage kinds: what a stage draws from the data, how it makes a batch, and how its two losses
combine. The trainer's loop knows only this interface (:class:`Stage`).

- :class:`JointStage` (``kind = "cheers"``): the joint objective (text cross-entropy + flow
  matching) over every sample of the data.
- :class:`VAEStage` (``kind = "vae"``): the autoencoder from scratch over the data's distinct
  images (reconstruction + ``kl_weight`` · KL); at its end the latent statistics are measured
  and the decoder projector starts as a copy of the decoder.

Both return losses as (first, second) sums with counts known before the forward pass, so any
split of a global batch over processes and micro-batches gives the same mean.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cheers.data.examples import IGNORE
from cheers.data.loader import TrainingData
from cheers.errors import ConfigError
from cheers.model import Cheers
from cheers.tokenizer import CheersTokenizer
from cheers.training.objective import LossSums, TrainBatch, make_batch
from cheers.training.recipe import DataConfig, StageConfig
from cheers.training.vae import (
    VAEBatch,
    VAELossSums,
    finish_vae,
    make_vae_batch,
    vae_images,
)


class Stage(ABC):
    """One stage kind behind the trainer's loop.

    ``source`` is what the :class:`~cheers.data.loader.BatchStream` draws indices from;
    ``batch`` turns ``(uid, index)`` pairs of it into a batch for the wrapped objective.
    """

    def __init__(self, config: StageConfig, model: Cheers) -> None:
        self.config = config
        self.model = model

    @property
    @abstractmethod
    def source(self) -> Any:
        """The items the stage's batch stream draws from (``length`` / ``epoch_order``)."""

    @abstractmethod
    def batch(self, items: Sequence[tuple[int, int]], seed: int) -> Any:
        """The batch of ``(uid, index into source)`` pairs, its randomness drawn from ``seed``."""

    @abstractmethod
    def counts(self, batch: Any) -> tuple[int, int]:
        """How many elements each of the two loss sums of ``batch`` covers."""

    @abstractmethod
    def parts(self, out: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The two loss sums of the objective's output."""

    #: Weight of the second loss (per element) against the first.
    second_weight: float = 1.0

    def skipped(self, batch: Any) -> list[str]:  # noqa: ARG002 - the Stage interface
        """Sources dropped from ``batch`` because an image could not be read."""
        return []

    def finish(self, wrapped: nn.Module, seed: int) -> None:  # noqa: B027 - optional hook
        """Work done once after the stage's last step (nothing by default)."""


class JointStage(Stage):
    """The joint objective: text cross-entropy plus flow matching over every sample."""

    def __init__(
        self,
        config: StageConfig,
        model: Cheers,
        data: TrainingData,
        tokenizer: CheersTokenizer,
        data_config: DataConfig,
    ) -> None:
        super().__init__(config, model)
        if config.data_weights is not None:
            data = data.reweighted(config.data_weights)
        self.data, self.tokenizer, self.on_error = data, tokenizer, data_config.bad_samples
        self.second_weight = config.image_loss_weight

    @property
    def source(self) -> TrainingData:
        return self.data

    def batch(self, items: Sequence[tuple[int, int]], seed: int) -> TrainBatch:
        return make_batch(
            [(uid, self.data.examples[i]) for uid, i in items],
            self.tokenizer,
            self.model.config,
            seed,
            self.config.guidance_dropout,
            self.on_error,
            time_shift=self.config.time_shift,
        )

    def counts(self, batch: TrainBatch) -> tuple[int, int]:
        text = sum(sum(1 for lab in e.labels if lab != IGNORE) for e in batch.examples)
        cfg = self.model.config
        return text, len(batch.t) * cfg.latent_channels * cfg.grid_size**2

    def parts(self, out: LossSums) -> tuple[torch.Tensor, torch.Tensor]:
        return out.text, out.image

    def skipped(self, batch: TrainBatch) -> list[str]:
        return batch.skipped


class _ImageList:
    """The VAE stage's image list, with the interface BatchStream expects."""

    def __init__(self, images: list[tuple[str, str, str]]) -> None:
        self.items = images

    def length(self, index: int) -> int:  # noqa: ARG002 - the loader's length(index)
        return 0

    def epoch_order(self, seed: int, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        return torch.randperm(len(self.items), generator=g).tolist()


class VAEStage(Stage):
    """The autoencoder from scratch over the data's distinct images."""

    def __init__(self, config: StageConfig, model: Cheers, data: TrainingData) -> None:
        super().__init__(config, model)
        self.images = _ImageList(vae_images(data.examples))
        self.second_weight = config.kl_weight

    @property
    def source(self) -> _ImageList:
        return self.images

    def batch(self, items: Sequence[tuple[int, int]], seed: int) -> VAEBatch:
        return make_vae_batch([(uid, self.images.items[i]) for uid, i in items], self.model, seed)

    def counts(self, batch: VAEBatch) -> tuple[int, int]:
        return batch.pixels.numel(), batch.noise.numel()

    def parts(self, out: VAELossSums) -> tuple[torch.Tensor, torch.Tensor]:
        return out.recon, out.kl

    def finish(self, wrapped: nn.Module, seed: int) -> None:
        """Latent statistics over (at most) the first 64 batches of the stage's images."""
        images, size = self.images.items, self.config.batch_size
        n = min(len(images), 64 * size)

        def batches():
            for k in range(0, n, size):
                yield self.batch([(i, i) for i in range(k, min(k + size, n))], seed)

        self.model.eval()
        finish_vae(self.model, wrapped, batches())
        self.model.train()


def make_stages(
    stages: Sequence[StageConfig],
    model: Cheers,
    data: TrainingData,
    tokenizer: CheersTokenizer,
    data_config: DataConfig,
) -> list[Stage]:
    """One :class:`Stage` per configured stage.

    Raises:
        ConfigError: for a ``vae`` stage when the data holds no images, or ``data_weights``
            that do not give one weight per data file.
    """
    out: list[Stage] = []
    for i, config in enumerate(stages):
        if config.kind == "vae":
            stage = VAEStage(config, model, data)
            if not stage.images.items:
                raise ConfigError(
                    f"stages[{i}] ({config.name!r}) is a 'vae' stage but the data has no "
                    "images; add samples with images to [data] files or remove the stage"
                )
        else:
            weights = config.data_weights
            if weights is not None and len(weights) != len(data.weights):
                raise ConfigError(
                    f"stages[{i}] ({config.name!r}) gives {len(weights)} data_weights for "
                    f"{len(data.weights)} [data] files; give one weight per file, in order"
                )
            stage = JointStage(config, model, data, tokenizer, data_config)
        out.append(stage)
    return out
