"""From records to model inputs: token ids with image slots, labels, and image batches.

Each conversation is tokenised turn by turn, so we know which tokens are the assistant's:
those are trained (docs/architecture.md §9), including the `<im_start>` that begins an image and
the turn's closing `<|im_end|>`, but not the image tokens nor the forced `<im_end>` after an image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cheers.data.records import Record
from cheers.errors import DataError, ImageError
from cheers.image import preprocess_generation, preprocess_understanding
from cheers.sequence import IMAGE_PLACEHOLDER
from cheers.tokenizer import DATA_PLACEHOLDERS, DEFAULT_SYSTEM_PROMPT, CheersTokenizer

IGNORE = -100
UNDERSTANDING, GENERATION, DUMMY = "und", "gen", "dummy"


@dataclass(frozen=True)
class Example:
    """A tokenised sample. ``input_ids`` hold ``IMAGE_PLACEHOLDER`` at each image slot."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # aligned with input_ids; IGNORE where nothing is learned
    roles: tuple[str, ...]  # per image slot: UNDERSTANDING, GENERATION or DUMMY
    images: tuple[str, ...]  # file per slot ("" for the dummy)
    source: str

    @property
    def is_generation(self) -> bool:
        return GENERATION in self.roles

    def sequence_length(self, tokens_per_image: int) -> int:
        """Length of the LLM sequence once every slot holds its P tokens."""
        return len(self.input_ids) + len(self.roles) * (tokens_per_image - 1)


def tokenize(
    record: Record, tokenizer: CheersTokenizer, tokens_per_image: int, max_length: int
) -> Example:
    """Render a record with the chat template and mark what is trained."""
    special = tokenizer.special
    ids: list[int] = []
    labels: list[int] = []
    roles: list[str] = []

    def add(token_ids: list[int], trained: bool) -> None:
        for tok in token_ids:
            if tok in (special.image, special.image_gen):
                roles.append(UNDERSTANDING if tok == special.image else GENERATION)
                ids.append(IMAGE_PLACEHOLDER)
                labels.append(IGNORE)
            else:
                ids.append(tok)
                labels.append(tok if trained and tok != special.im_end else IGNORE)

    messages = list(record.messages)
    if messages[0][0] != "system":
        messages.insert(0, ("system", DEFAULT_SYSTEM_PROMPT))
    for role, content in messages:
        assistant = role == "assistant"
        add([special.im_start_chat, *tokenizer.encode(f"{role}\n")], trained=False)
        # The released format writes <im_start><image><im_end> (and <image_gen>) in turns: those
        # units are image slots; any other special-token text in a turn is plain text.
        add(tokenizer.encode(content, allowed_special=DATA_PLACEHOLDERS), trained=assistant)
        add([special.eos], trained=assistant)
        add(tokenizer.encode("\n"), trained=False)
    images = [str(p) for p in record.images]
    if not roles:
        # docs/architecture.md §9: a text-only sample gets a black dummy image in front, at t = 0.
        ids.insert(0, IMAGE_PLACEHOLDER)
        labels.insert(0, IGNORE)
        roles.append(DUMMY)
        images.append("")
    example = Example(tuple(ids), tuple(labels), tuple(roles), tuple(images), record.source)
    length = example.sequence_length(tokens_per_image)
    if length > max_length:
        raise DataError(
            f"{record.source}: the sample needs {length} positions ({len(roles)} image(s) of "
            f"{tokens_per_image} tokens) but max_length is {max_length}; shorten it, raise "
            "max_length, or set bad_samples = 'skip'"
        )
    if not any(label != IGNORE for label in labels):
        raise DataError(f"{record.source}: the assistant turns contain nothing to learn")
    return example


def apply_guidance_dropout(example: Example, tokenizer: CheersTokenizer) -> Example:
    """The unconditional version of a generation sample (docs/architecture.md §9).

    Every token except the image slots, `<im_start>` and `<im_end>` becomes `<no_mean>`; only
    `<im_start>` stays trained.
    """
    special = tokenizer.special
    keep = {IMAGE_PLACEHOLDER, special.im_start, special.im_end}
    ids = tuple(i if i in keep else special.no_mean for i in example.input_ids)
    labels = tuple(
        lab if tok == special.im_start else IGNORE
        for tok, lab in zip(example.input_ids, example.labels, strict=True)
    )
    return Example(ids, labels, example.roles, example.images, example.source)


def load_slot_image(path: str, role: str, resolution: int, source: str) -> torch.Tensor:
    """Pixels (3, R, R) for one image slot, preprocessed for its role (docs/architecture.md §2)."""
    if role == DUMMY:
        return torch.zeros(3, resolution, resolution)
    try:
        if role == UNDERSTANDING:
            return preprocess_understanding(path, resolution)
        return preprocess_generation(path, resolution)
    except ImageError as err:
        raise DataError(f"{source}: {err}") from err
