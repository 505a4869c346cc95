"""Requests → LLM inputs: the rows the pipeline prefills for every kind of request.

A row is a prompt's token ids (made by the chat template, images as ``<image>`` slots), the
LLM tokens of its images and an optional causal prefix (the reference's dummy image in front of
image-less requests). :class:`InputBuilder` makes those rows for text-to-image, editing,
understanding and chat requests and embeds them (:func:`cheers.sequence.splice`); the loops of
:mod:`cheers.pipeline.drawing` and :mod:`cheers.pipeline.answering` prefill and run them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from cheers.errors import ContextLengthError, PromptError
from cheers.image import ImageInput, make_dummy_image, preprocess_understanding
from cheers.model import Cheers
from cheers.pipeline.arguments import as_list
from cheers.sequence import IMAGE_PLACEHOLDER, splice, unconditional_ids
from cheers.tokenizer import CheersTokenizer

IMAGE_IN_PROMPT = "<im_start><image><im_end>"
Messages = Sequence[Mapping[str, str]]
#: One text request: its ids, the LLM tokens of its images (one per slot) and the causal prefix.
TextRow = tuple[list[int], list[torch.Tensor], torch.Tensor | None]


@dataclass
class ImageRows:
    """One row per generated image: ids, image tokens and causal prefix of each, and the ids of
    the unconditional branch when a negative prompt replaces the ``<no_mean>`` row."""

    ids: list[list[int]]
    images: list[list[torch.Tensor]]
    prefixes: list[torch.Tensor | None]
    negatives: list[list[int]] | None = None


class InputBuilder:
    """Prompts and images → token ids, image tokens and embedded sequences for ``model``."""

    def __init__(self, model: Cheers, tokenizer: CheersTokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.special = tokenizer.special

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------ ids and tokens
    def chat_ids(self, messages: Messages) -> list[int]:
        # Only the template makes control tokens; image units become image slots.
        return self.tokenizer.apply_chat_template(messages, tokenize=True, image_placeholders=True)

    def generation_ids(self, content: str) -> list[int]:
        """A user turn, the assistant's generation prompt, then `<im_start>` opening the image."""
        return [*self.chat_ids([{"role": "user", "content": content}]), self.special.im_start]

    def uncond_ids(self, ids: list[int]) -> list[int]:
        keep = {self.special.im_start, self.special.im_end, self.special.image, IMAGE_PLACEHOLDER}
        return unconditional_ids(ids, keep, self.special.no_mean)

    def pixels(
        self, images: Sequence[ImageInput], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``images`` letterboxed to the model's R×R (the understanding geometry, §2), or to
        ``size`` = (height, width): the source of an edit at another size."""
        canvas = self.model.config.image_size if size is None else size
        batch = [preprocess_understanding(im, canvas) for im in images]
        return torch.stack(batch).to(self.device)

    def dummy_tokens(
        self,
        n: int,
        dummy_image: ImageInput | bool | None,
        generators: Sequence[torch.Generator | None],
    ) -> torch.Tensor | None:
        """LLM tokens of the placeholder image put in front of image-less requests, or None.

        Random dummies are drawn from ``generators`` (one shared, or one per request); a given
        image is encoded once and shared by every request.
        """
        if dummy_image is None:
            dummy_image = self.model.config.dummy_image_prefix
        if dummy_image is False:
            return None
        if dummy_image is not True:
            return self.model.understanding_tokens(self.pixels([dummy_image])).expand(n, -1, -1)
        gens = list(generators) if len(generators) == n else [generators[0]] * n
        cpu = [g if g is None or g.device.type == "cpu" else None for g in gens]
        dummies = [make_dummy_image(g) for g in cpu]
        return self.model.understanding_tokens(self.pixels(dummies))

    # ------------------------------------------------------------- sequences
    def sequences(self, row_ids, row_images, prefixes) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for i, ids in enumerate(row_ids):
            ids_t = torch.tensor(ids, device=self.device)
            embeds = self.model.embed(ids_t.clamp(min=0))
            out.append(splice(ids_t, embeds, row_images[i], self.special.image, prefixes[i]))
        return out

    def check_context(self, length: int, room: int) -> None:
        limit = self.model.config.text_config.max_position_embeddings
        if length + room > limit:
            raise ContextLengthError(
                f"the request needs {length + room} positions ({length} for the prompt and images, "
                f"{room} to generate) but the model's context is {limit}; shorten the prompt, use "
                "fewer images or lower max_new_tokens"
            )

    # ----------------------------------------------------------- request rows
    def text_to_image_rows(
        self,
        prompts: list[str],
        negative_prompt: str | Sequence[str] | None,
        num_images_per_prompt: int,
        dummy_image: ImageInput | bool | None,
        generators: Sequence[torch.Generator | None],
    ) -> ImageRows:
        """Rows of :meth:`CheersPipeline.text_to_image`: ``num_images_per_prompt`` per prompt,
        with the dummy image drawn from ``generators`` (one, or one per image)."""
        ids = [self.generation_ids(p) for p in prompts]
        negatives = None
        if negative_prompt is not None:
            negs = as_list(negative_prompt, "negative_prompt")
            if len(negs) == 1:
                negs = negs * len(prompts)
            if len(negs) != len(prompts):
                raise PromptError(
                    f"{len(negs)} negative prompts for {len(prompts)} prompts; pass one, or one "
                    "per prompt"
                )
            negatives = [self.generation_ids(n) for n in negs for _ in range(num_images_per_prompt)]
        for p, i in zip(prompts, ids, strict=True):
            if self.special.image in i:
                raise PromptError(
                    f"the text-to-image prompt {p!r} contains an <image> placeholder but no image "
                    "is given; use edit() or understand() for requests with an input image"
                )
        prompt_gens = generators[::num_images_per_prompt] if len(generators) > 1 else generators
        dummy = self.dummy_tokens(len(prompts), dummy_image, prompt_gens)
        prefixes = [
            None if dummy is None else dummy[i]
            for i in range(len(prompts))
            for _ in range(num_images_per_prompt)
        ]
        row_ids = [i for i in ids for _ in range(num_images_per_prompt)]
        return ImageRows(row_ids, [[]] * len(row_ids), prefixes, negatives)

    def edit_rows(self, instructions: list[str], tokens: torch.Tensor) -> ImageRows:
        """Rows of :meth:`CheersPipeline.edit`: each instruction with its source image's
        generation tokens ``tokens[i]`` in its one image slot."""
        row_ids = []
        for text in instructions:
            content = text if IMAGE_IN_PROMPT in text else f"{IMAGE_IN_PROMPT}\n{text}"
            ids = self.generation_ids(content)
            if ids.count(self.special.image) != 1:
                raise PromptError(f"an edit instruction needs exactly one image, got {text!r}")
            row_ids.append(ids)
        row_images = [[tokens[i]] for i in range(len(instructions))]
        return ImageRows(row_ids, row_images, [None] * len(row_ids))

    def understanding_rows(
        self, questions: list[str], groups: list[list[ImageInput]]
    ) -> list[TextRow]:
        """Rows of :meth:`CheersPipeline.understand`: each question with its group of images
        (their units put in front unless the question places them)."""
        flat = [im for group in groups for im in group]
        tokens = self.model.understanding_tokens(self.pixels(flat)) if flat else None
        rows, k = [], 0
        for text, group in zip(questions, groups, strict=True):
            if IMAGE_IN_PROMPT not in text:
                text = IMAGE_IN_PROMPT * len(group) + "\n" + text
            ids = self.chat_ids([{"role": "user", "content": text}])
            rows.append((ids, [tokens[k + j] for j in range(len(group))], None))
            k += len(group)
        return rows

    def chat_rows(
        self,
        conversations: list[str | Messages],
        dummy_image: ImageInput | bool | None,
        generator: torch.Generator | None,
    ) -> list[TextRow]:
        """Rows of :meth:`CheersPipeline.chat`: each conversation (a prompt or messages) after
        the dummy image drawn from ``generator``."""
        dummy = self.dummy_tokens(len(conversations), dummy_image, [generator])
        rows = []
        for i, conv in enumerate(conversations):
            if isinstance(conv, str):
                conv = [{"role": "user", "content": conv}]
            ids = self.chat_ids(conv)
            rows.append((ids, [], None if dummy is None else dummy[i]))
        return rows
