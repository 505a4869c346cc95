"""The training objective on packed batches: one step for a whole batch, no per-sample Python.

:class:`~cheers.training.objective.Objective` splices each sample's image tokens in a Python
loop, which is right for any data but leaves a GPU idle. Here the samples are laid out ahead
of time (in data workers) as left-padded arrays in which every image slot already holds its
P positions; on the device the image tokens of the whole batch are scattered into the text in
one indexed copy and read back the same way. The losses are the same sums as the
``Objective``'s (docs/architecture.md §9), which the tests check on the same batch.

Layout of a packed batch (numpy in the workers, tensors on the device):

- ``ids`` (B, T): token ids, 0 at image positions and padding;
- ``target`` (B, T): the label of position i + 1 at i (``IGNORE`` where nothing is learned);
- ``block`` (B, T): −1 for text and padding, k for the k-th image of the row;
- ``valid`` (B, T): real positions;
- ``images`` (N, R, R, 3) uint8: every image slot of the batch, row by row, in order;
- ``noised`` (N,): generation targets (noised to x_t), the others are read at t = 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cheers.data.examples import GENERATION, IGNORE, Example
from cheers.model import Cheers
from cheers.samplers import noise
from cheers.samplers.schedule import time_shift
from cheers.sequence import IMAGE_PLACEHOLDER, omni_mask
from cheers.training.objective import T_EPS

PackedRow = tuple[list[int], list[int], list[int], list[bool]]  # ids, target, block, noised


def pack_example(example: Example, tokens_per_image: int) -> PackedRow:
    """One example with every image slot expanded to its P positions."""
    ids, labels, block, slot = [], [], [], 0
    for tok, lab in zip(example.input_ids, example.labels, strict=True):
        if tok == IMAGE_PLACEHOLDER:
            ids += [0] * tokens_per_image
            labels += [IGNORE] * tokens_per_image
            block += [slot] * tokens_per_image
            slot += 1
        else:
            ids.append(tok)
            labels.append(lab)
            block.append(-1)
    noised = [role == GENERATION for role in example.roles]
    return ids, [*labels[1:], IGNORE], block, noised


def collate(rows: Sequence[PackedRow], images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Left-pad packed rows into arrays; ``images`` (H, W, 3) uint8, one per slot, in order."""
    length, b = max(len(r[0]) for r in rows), len(rows)
    out = {
        "ids": np.zeros((b, length), np.int64),
        "target": np.full((b, length), IGNORE, np.int64),
        "block": np.full((b, length), -1, np.int64),
        "valid": np.zeros((b, length), bool),
    }
    for i, (ids, target, block, _) in enumerate(rows):
        n = len(ids)
        out["ids"][i, length - n :] = ids
        out["target"][i, length - n :] = target
        out["block"][i, length - n :] = block
        out["valid"][i, length - n :] = True
    noised = [x for r in rows for x in r[3]]
    if len(images) != len(noised):
        raise ValueError(f"{len(images)} images for {len(noised)} image slots")
    out["images"] = np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
    out["noised"] = np.array(noised, bool)
    return out


def to_device(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """The arrays as tensors on ``device``; images become ``pixels`` (N, 3, R, R) in [0, 1]."""
    out = {
        k: torch.from_numpy(v).to(device, non_blocking=True)
        for k, v in batch.items()
        if isinstance(v, np.ndarray)
    }
    out["pixels"] = out.pop("images").permute(0, 3, 1, 2).float() / 255
    return out


def draw_t(
    noised: torch.Tensor, alpha: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """t per image: s(u) with the sampler's shift α for generation targets, 1 for the others."""
    u = torch.rand(noised.shape, device=noised.device, generator=generator)
    u = u.clamp(T_EPS, 1 - T_EPS)
    return torch.where(noised, time_shift(u, alpha), torch.ones_like(u))


def packed_losses(
    model: Cheers,
    batch: dict[str, torch.Tensor],
    t: torch.Tensor,
    x0: torch.Tensor,
    heads: bool = True,
) -> dict[str, torch.Tensor]:
    """Summed losses of a packed batch (on the device), with ``t`` and noise ``x0`` per image.

    Returns ``text`` (summed cross-entropy) and ``text_n``, ``right`` (whether each labelled
    token is the argmax) and ``chosen`` (where the labels are); with ``heads``, ``image``
    (summed squared velocity error) and ``image_n``.
    """
    d = model.config.text_config.hidden_size
    embeds = model.embed(batch["ids"]).reshape(-1, d)
    where = (batch["block"].reshape(-1) >= 0).nonzero()[:, 0]
    if len(t):  # a batch of text-only samples has no image path to run
        with torch.no_grad():
            x1 = model.encode_latent(batch["pixels"]).float()
        tt = t[:, None, None, None]
        x_t = noise(x1, x0, tt)
        image = model.image_tokens(x_t)
        embeds = embeds.index_copy(0, where, image.tokens.reshape(-1, d).to(embeds.dtype))
    embeds = embeds.reshape(*batch["ids"].shape, d)
    positions = (batch["valid"].long().cumsum(1) - 1).clamp(min=0)
    hidden = model.transformer(embeds, positions, omni_mask(batch["block"], batch["valid"]))
    chosen = batch["target"] != IGNORE
    logits = model.logits(hidden[chosen]).float()
    target = batch["target"][chosen]
    out = {
        "text": F.cross_entropy(logits, target, reduction="sum"),
        "text_n": chosen.sum(),
        "right": logits.argmax(-1) == target,
        "chosen": chosen,
    }
    if heads and len(t):
        image_hidden = hidden.reshape(-1, d)[where].reshape(len(t), -1, d)
        v = model.velocity(image_hidden, image.patch_embeds, t, x_t).velocity.float()
        goal = torch.where(tt == 1, torch.zeros_like(x1), x1 - x0)  # u = x1 − x0, 0 at t = 1
        out["image"] = (v - goal).pow(2).sum()
        out["image_n"] = torch.tensor(v.numel(), device=v.device)
    return out


def rows_right(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per row: every labelled token is the argmax — the greedy answer is exactly the label."""
    wrong = torch.zeros_like(out["chosen"])
    wrong[out["chosen"]] = ~out["right"]
    return ~wrong.any(1)


__all__ = ["collate", "draw_t", "pack_example", "packed_losses", "rows_right", "to_device"]
