"""Images drawn inside a conversation: the next reply of each conversation is an image.

A :class:`DrawRequest` is a conversation (messages whose contents mark images with
``<im_start><image><im_end>``, and those images in order) whose next assistant turn opens an
image: the prompt is the conversation, the assistant's generation prompt (or the start of its
reply, when the messages end with an assistant message) and ``<im_start>``, and the image is
sampled after it, seeing every earlier turn and image. With a ``source`` the sampling starts from
that image as in :meth:`~cheers.pipeline.CheersPipeline.edit`.

The two single-turn tasks are special cases, computed the same way: a conversation of one user
message draws exactly what :meth:`~cheers.pipeline.CheersPipeline.text_to_image` draws for that
prompt and seed (the dummy image in front of image-less requests included), and
``[user: "<im_start><image><im_end>\\n" + instruction]`` with that image as ``images`` and
``source`` exactly what :meth:`~cheers.pipeline.CheersPipeline.edit` makes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from cheers.errors import PromptError
from cheers.image import ImageInput
from cheers.pipeline.arguments import latent_grid, to_generator
from cheers.pipeline.drawing import initial_noise
from cheers.pipeline.llm_inputs import IMAGE_IN_PROMPT, ImageRows, InputBuilder
from cheers.samplers import noise


@dataclass
class DrawRequest:
    """One conversation whose next reply is an image.

    ``seed`` is an int or a ``torch.Generator`` (consumed: the dummy image, then the noise);
    ``source`` is the image an edit starts from (it must also be among ``images``, marked in
    the messages, for the model to see it).
    """

    messages: Sequence[Mapping[str, str]]
    images: Sequence[ImageInput] = ()
    source: ImageInput | None = None
    seed: int | torch.Generator | None = None


def draw_ids(inputs: InputBuilder, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """The prompt ids of a drawing: the conversation, the assistant's turn (its generation
    prompt, or the unfinished last assistant message), then ``<im_start>`` opening the image."""
    special = inputs.special
    if not messages:
        raise PromptError("a drawing needs a conversation; pass at least one user message")
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role") not in ("user", "assistant"):
        raise PromptError(
            "the conversation of a drawing must end with the user's request (or the start of "
            f"the assistant's reply), got {last!r}"
        )
    if last["role"] == "user":
        return [*inputs.chat_ids(messages), special.im_start]
    closed = inputs.tokenizer.apply_chat_template(
        messages, add_generation_prompt=False, tokenize=True, image_placeholders=True
    )
    end = [special.eos, *inputs.tokenizer.encode("\n")]  # what closes a turn
    if closed[-len(end) :] != end:  # pragma: no cover - the template always ends a turn so
        raise PromptError("the chat template did not close the last turn as expected")
    return [*closed[: -len(end)], special.im_start]


def draw_rows(
    inputs: InputBuilder,
    requests: Sequence[DrawRequest],
    generators: Sequence[torch.Generator | None],
) -> ImageRows:
    """One image row per request: its ids, its images' tokens, and the dummy image in front of
    a request without images (drawn from its generator, as text-to-image does)."""
    ids = []
    for i, req in enumerate(requests):
        row = draw_ids(inputs, req.messages)
        if row.count(inputs.special.image) != len(req.images):
            raise PromptError(
                f"request {i}: the messages mark {row.count(inputs.special.image)} images but "
                f"{len(req.images)} are given; put one {IMAGE_IN_PROMPT} per image"
            )
        ids.append(row)
    flat = [im for req in requests for im in req.images]
    tokens = inputs.model.understanding_tokens(inputs.pixels(flat)) if flat else None
    images, prefixes, k = [], [], 0
    for req, gen in zip(requests, generators, strict=True):
        n = len(req.images)
        images.append([tokens[k + j] for j in range(n)] if n else [])
        dummy = None if n else inputs.dummy_tokens(1, None, [gen])
        prefixes.append(None if dummy is None else dummy[0])
        k += n
    return ImageRows(ids, images, prefixes)


def drawing_start(
    inputs: InputBuilder,
    requests: Sequence[DrawRequest],
    strength: float,
    size: tuple[int, int] | None = None,
) -> tuple[ImageRows, torch.Tensor, float]:
    """The rows, the starting latents and the start time of the requests' drawings (one batch:
    all edits, starting from their sources at t0 = 1 − ``strength``, or all from noise), of
    ``size`` = (height, width) pixels (``None``: native)."""
    if not requests:
        raise PromptError("draw() got no requests; pass at least one DrawRequest")
    edits = [req.source is not None for req in requests]
    if any(edits) and not all(edits):
        raise PromptError(
            "draw() takes requests that all have a source (edits) or none (drawings from "
            "noise) in one call: they sample different time grids; split them into two calls"
        )
    generators = [to_generator(req.seed) for req in requests]
    rows = draw_rows(inputs, requests, generators)
    config = inputs.model.config
    grid = None if size is None else latent_grid(config, size)
    x = initial_noise(inputs.model, len(requests), None, generators, grid)
    if not all(edits):
        return rows, x, 0.0
    t0 = 1.0 - strength
    x1 = inputs.model.encode_latent(inputs.pixels([req.source for req in requests], size))
    return rows, noise(x1.float(), x, t0), t0
