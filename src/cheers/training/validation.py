"""Validation losses: the training objective over a fixed JSONL set, with fixed t and noise.

Every sample draws its t, noise and guidance dropout from its own seeded stream (as in
training), and the losses are summed before they are divided, so the result depends only on
the model, the file and the seed, not on the batch size. It is what the learning curves and
the ablations in the docs compare.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from cheers.data.examples import GENERATION, UNDERSTANDING, Example
from cheers.data.loader import DataSource, TrainingData
from cheers.errors import DataError
from cheers.model import Cheers
from cheers.tokenizer import CheersTokenizer
from cheers.training.objective import Objective, make_batch


@dataclass(frozen=True)
class ValidationLosses:
    """Mean per-token text cross-entropy and mean per-element flow-matching MSE.

    ``flow`` is averaged as the training loss is: over the latent elements of every image slot,
    understanding images included (their target velocity is 0 at t = 1).
    """

    text: float | None  # None when the set trains no text token
    flow: float | None  # None when the set has no image slot
    samples: int


def validation_losses(
    model: Cheers,
    tokenizer: CheersTokenizer,
    path: str | Path,
    *,
    seed: int = 1,
    batch_size: int = 32,
    max_length: int = 256,
    image_root: str | None = None,
    shift_images: bool = False,
    shift_prompts: bool = False,
) -> ValidationLosses:
    """The objective's losses over every sample of the JSONL file ``path``, without gradients.

    ``shift_images`` gives every understanding image slot the image of the next understanding
    slot in the file (cyclically): the text loss then says how much the answers rely on the
    image at all (equal losses: the model answers from the question alone).

    ``shift_prompts`` gives every text-to-image sample (one generated image, nothing to look
    at) the prompt of the next such sample in the file (cyclically), keeping its own image, t
    and noise: the flow loss then says how much generation relies on the prompt (equal losses:
    the model draws the same whatever it is asked for).

    Raises:
        DataError: when the file has no usable sample, ``batch_size`` < 1, or a shift has
            fewer than two samples to shift between.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be ≥ 1, got {batch_size}")
    data = TrainingData(
        [DataSource(str(path), image_root=image_root)],
        tokenizer,
        model.tokens_per_image,
        max_length,
    )
    examples = data.examples
    if shift_images:
        examples = _shifted_images(examples)
    if shift_prompts:
        examples = _shifted_prompts(examples)
    objective = Objective(model)
    was_training = model.training
    model.eval()
    text = flow = 0.0
    text_count = flow_count = 0
    items = list(enumerate(examples))
    try:
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                sums = objective(make_batch(chunk, tokenizer, model.config, seed, 0.0))
                text += float(sums.text)
                flow += float(sums.image)
                text_count += sums.text_count
                flow_count += sums.image_count
    finally:
        model.train(was_training)
    return ValidationLosses(
        text=text / text_count if text_count else None,
        flow=flow / flow_count if flow_count else None,
        samples=len(items),
    )


def _shifted_images(examples: list[Example]) -> list[Example]:
    slots = [
        (i, j) for i, e in enumerate(examples) for j, r in enumerate(e.roles) if r == UNDERSTANDING
    ]
    if len(slots) < 2:
        raise DataError(
            "shift_images needs at least two understanding images in the set; use a set with "
            "questions about images, or leave shift_images off"
        )
    images = [list(e.images) for e in examples]
    for (i, j), (k, m) in zip(slots, slots[1:] + slots[:1], strict=True):
        images[i][j] = examples[k].images[m]
    return [
        dataclasses.replace(e, images=tuple(im)) for e, im in zip(examples, images, strict=True)
    ]


def _shifted_prompts(examples: list[Example]) -> list[Example]:
    text_to_image = [i for i, e in enumerate(examples) if e.roles == (GENERATION,)]
    if len(text_to_image) < 2:
        raise DataError(
            "shift_prompts needs at least two text-to-image samples in the set; use a set with "
            "prompts to draw, or leave shift_prompts off"
        )
    out = list(examples)
    for i, k in zip(text_to_image, text_to_image[1:] + text_to_image[:1], strict=True):
        out[i] = dataclasses.replace(
            examples[i], input_ids=examples[k].input_ids, labels=examples[k].labels
        )
    return out


__all__ = ["ValidationLosses", "validation_losses"]
