"""The training objective (docs/architecture.md §9): text cross-entropy plus flow-matching MSE.

A batch goes through the same unified vision path as inference: every image becomes a latent
x1; generation targets are noised to x_t = t·x1 + (1−t)·x0, understanding images stay at t = 1;
x_t → decoder projector → ViT → LLM tokens spliced into the text; the LLM's hidden states at
each image's positions go through the flow heads to a velocity, compared with u = x1 − x0 (0 at
t = 1). Losses are returned as sums with their counts so that any split of a global batch over
processes or micro-batches gives the same mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cheers.data.examples import (
    DUMMY,
    IGNORE,
    UNDERSTANDING,
    Example,
    apply_guidance_dropout,
    load_slot_image,
)
from cheers.errors import DataError
from cheers.model import Cheers
from cheers.samplers import noise
from cheers.samplers.schedule import time_shift as shift_time
from cheers.sequence import IMAGE_PLACEHOLDER, left_pad, omni_mask, splice
from cheers.tokenizer import CheersTokenizer
from cheers.training.randomness import sample_generator

T_EPS = 1e-6


@dataclass
class TrainBatch:
    """Examples with their images preprocessed and their randomness drawn."""

    examples: list[Example]
    pixels: torch.Tensor  # (N, 3, R, R), every image slot of every example, in order
    t: torch.Tensor  # (N,)
    noise: torch.Tensor  # (N, 4z, G, G)
    skipped: list[str]  # sources dropped because an image could not be read


def make_batch(
    items: Sequence[tuple[int, Example]],
    tokenizer: CheersTokenizer,
    model_config,
    seed: int,
    guidance_dropout: float,
    on_error: str = "fail",
    time_shift: float = 1.0,
) -> TrainBatch:
    """Preprocess images and draw t, x0 and the guidance dropout for (uid, example) pairs.

    Generation targets get t = s(u) for u uniform, with the sampler's shift
    s(u) = α·u / (1 + (α−1)·u) of α = ``time_shift`` (1: t uniform; below 1: nearer noise).
    """
    r = model_config.image_size
    shape = (model_config.latent_channels, model_config.grid_size, model_config.grid_size)
    examples, pixels, ts, noises, skipped = [], [], [], [], []
    for uid, example in items:
        g = sample_generator(seed, uid)
        dropped = torch.rand((), generator=g).item() < guidance_dropout
        if example.is_generation and dropped:
            example = apply_guidance_dropout(example, tokenizer)
        try:
            images = [
                load_slot_image(path, role, r, example.source)
                for path, role in zip(example.images, example.roles, strict=True)
            ]
        except DataError:
            if on_error == "fail":
                raise
            skipped.append(example.source)
            continue
        for role in example.roles:
            if role == UNDERSTANDING:
                t = 1.0
            elif role == DUMMY:
                t = 0.0
            else:
                u = torch.rand((), generator=g).clamp(T_EPS, 1 - T_EPS)
                t = float(shift_time(u, time_shift))  # α = 1 returns u exactly
            ts.append(t)
            noises.append(torch.randn(shape, generator=g))
        examples.append(example)
        pixels += images
    if not examples:
        return TrainBatch(
            [], torch.zeros(0, 3, r, r), torch.zeros(0), torch.zeros(0, *shape), skipped
        )
    return TrainBatch(examples, torch.stack(pixels), torch.tensor(ts), torch.stack(noises), skipped)


@dataclass
class LossSums:
    text: torch.Tensor  # summed cross-entropy
    text_count: int
    image: torch.Tensor  # summed squared error
    image_count: int


class Objective(nn.Module):
    """Wraps the model so that one ``forward`` computes the losses (what DDP/FSDP need).

    A :class:`TrainBatch` gives the joint losses; a :class:`~cheers.training.vae.VAEBatch` the
    autoencoder's (or, with ``latents_only``, its latents for the BatchNorm statistics). One
    wrapper serves every stage, so a sharded model is wrapped once.
    """

    def __init__(self, model: Cheers) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch, latents_only: bool = False):
        from cheers.training.vae import VAEBatch, vae_losses

        if isinstance(batch, VAEBatch):
            return vae_losses(self.model, batch, latents_only)
        return self._joint(batch)

    def _joint(self, batch: TrainBatch) -> LossSums:
        model = self.model
        device, dtype = model.device, model.dtype
        if not batch.examples:
            zero = model.lm_head.weight.sum() * 0.0
            return LossSums(zero, 0, zero, 0)
        with torch.no_grad():
            x1 = model.encode_latent(batch.pixels.to(device)).float()
        t = batch.t.to(device)
        x0 = batch.noise.to(device)
        tt = t[:, None, None, None]
        x_t = noise(x1, x0, tt)
        image = model.image_tokens(x_t.to(dtype))

        # Splice each example's image tokens into its text; labels follow the same layout.
        sequences, labels, k = [], [], 0
        for example in batch.examples:
            ids = torch.tensor(example.input_ids, device=device)
            n = len(example.roles)
            tokens = [image.tokens[k + j] for j in range(n)]
            k += n
            sequences.append(splice(ids, model.embed(ids.clamp(min=0)), tokens, IMAGE_PLACEHOLDER))
            labels.append(_expand_labels(example, model.tokens_per_image))
        packed = left_pad(sequences)
        mask = omni_mask(packed.block, packed.valid)
        hidden = model.transformer(packed.embeds, packed.positions, mask)

        # Text: position i predicts label i+1.
        target = torch.full(packed.valid.shape, IGNORE, dtype=torch.long, device=device)
        for row, lab in enumerate(labels):
            target[row, target.shape[1] - len(lab) :] = lab.to(device)
        target = target[:, 1:]
        chosen = target != IGNORE
        logits = model.logits(hidden[:, :-1][chosen]).float()
        text = F.cross_entropy(logits, target[chosen], reduction="sum")

        # Images: the hidden states of each image block, in the order the images were listed.
        p = model.tokens_per_image
        blocks = []
        for row, example in enumerate(batch.examples):
            for j in range(len(example.roles)):
                where = (packed.block[row] == j).nonzero()[:, 0]
                blocks.append(hidden[row, where])
        image_hidden = torch.stack(blocks)
        assert image_hidden.shape[1] == p
        out = model.velocity(image_hidden, image.patch_embeds, t.to(dtype), x_t)
        velocity = out.velocity.float()
        target_v = torch.where(tt == 1, torch.zeros_like(x1), x1 - x0)
        image_loss = (velocity - target_v).pow(2).sum()
        return LossSums(text, int(chosen.sum()), image_loss, velocity.numel())


def _expand_labels(example: Example, tokens_per_image: int) -> torch.Tensor:
    out: list[int] = []
    for tok, lab in zip(example.input_ids, example.labels, strict=True):
        out += [IGNORE] * tokens_per_image if tok == IMAGE_PLACEHOLDER else [lab]
    return torch.tensor(out)


__all__ = ["LossSums", "Objective", "TrainBatch", "make_batch"]
