"""What the benchmarks need of a pipeline, as typing protocols.

The benchmarks and harness integrations use only these methods of
:class:`~cheers.pipeline.CheersPipeline`, so any object with them can be scored: the tests
score fakes whose right answers are known. Each benchmark asks for the narrowest protocol it
needs (text-to-image, understanding or editing); :class:`EvalPipeline` is all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from PIL import Image


class LatentConfig(Protocol):
    """The model config fields that size one image's initial noise."""

    @property
    def latent_channels(self) -> int: ...

    @property
    def grid_size(self) -> int: ...


class HasConfig(Protocol):
    @property
    def config(self) -> LatentConfig: ...


class ImageOutput(Protocol):
    """What an image request returns: ``images`` (PIL images with ``output_type="pil"``)."""

    @property
    def images(self) -> Sequence[Image.Image] | Any: ...


class DrawingPipeline(Protocol):
    """What any image-producing benchmark needs: the output side and the noise shape."""

    @property
    def resolution(self) -> int: ...

    @property
    def model(self) -> HasConfig: ...


class TextToImagePipeline(DrawingPipeline, Protocol):
    """``text_to_image(prompts, num_inference_steps=, guidance_scale=, time_shift=, sampler=,
    num_images_per_prompt=, latents=, dummy_image=, step_cache=, output_type=)``."""

    def text_to_image(self, prompt: str | Sequence[str], **kwargs: Any) -> ImageOutput: ...


class EditingPipeline(DrawingPipeline, Protocol):
    """``edit(images, instructions, num_inference_steps=, guidance_scale=, time_shift=,
    sampler=, strength=, latents=, output_type=)``."""

    def edit(self, image: Any, instruction: str | Sequence[str], **kwargs: Any) -> ImageOutput: ...


class UnderstandingPipeline(Protocol):
    """``understand(images, questions, max_new_tokens=, temperature=, top_p=)``: one answer a
    question (a list for a list of questions)."""

    def understand(
        self, images: Any, question: str | Sequence[str], **kwargs: Any
    ) -> str | list[str]: ...


class ChatPipeline(Protocol):
    """``chat(text, max_new_tokens=, temperature=, top_p=)``: a text-only answer."""

    def chat(self, messages: Any, **kwargs: Any) -> str | list[str]: ...


class EvalPipeline(TextToImagePipeline, EditingPipeline, UnderstandingPipeline, Protocol):
    """Everything ``cheers eval`` may call: what :class:`~cheers.pipeline.CheersPipeline` is."""


__all__ = [
    "ChatPipeline",
    "DrawingPipeline",
    "EditingPipeline",
    "EvalPipeline",
    "ImageOutput",
    "TextToImagePipeline",
    "UnderstandingPipeline",
]
