"""What one batch of jobs asks of the pipeline: the work items, their batch keys, the calls.

Runs in the batcher's worker thread. Two image jobs share a batch when their
:class:`ImageSettings` are equal (same kind, steps, guidance, strength, negative prompt or
not); each job adds ``n`` rows, and image ``i`` of a job with seed ``s`` is drawn from seed
``s + i``, so it is exactly the image ``pipe(prompt, generator=s + i)`` makes alone (or
``pipe.edit(image, prompt, generator=s + i)``). Drawings inside a conversation (the Responses
API's image tool) are ``"draw"`` jobs: one image each, of a
:class:`~cheers.draw_requests.DrawRequest`, batched with other drawings of the same settings
(edits among edits), with a :class:`ProgressEvent` after every model evaluation.
All text jobs share one key: the pipeline's
:meth:`~cheers.pipeline.CheersPipeline.answer` decodes rows with different settings together.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image

from cheers.serving.batching import Job
from cheers.text_requests import TextRequest

if TYPE_CHECKING:
    from cheers.pipeline import CheersPipeline

#: The batch key of every text job.
TEXT_KEY = ("text",)


@dataclass(frozen=True)
class ImageSettings:
    """What image jobs must share to be generated in one model call (their batch key)."""

    kind: Literal["generate", "edit", "draw"]
    num_inference_steps: int
    guidance_scale: float
    strength: float | None = None  # edits (and drawings that edit) only
    negative: bool = False  # generations: whether the unconditional rows are a negative prompt


@dataclass(frozen=True)
class ImageWork:
    """One image request: ``n`` images of ``prompt`` from seeds ``seed``, ``seed + 1``…"""

    prompt: str
    n: int
    seed: int
    negative_prompt: str | None = None
    source: Image.Image | None = None  # the image to edit


#: Streamed to a text job after every decoding step in which it chose a text token.
@dataclass(frozen=True)
class TokenEvent:
    text: str


#: Streamed to a drawing job after each of the ``total`` model evaluations of its batch.
@dataclass(frozen=True)
class ProgressEvent:
    step: int
    total: int


class PipelineRunner:
    """Turns a batch of jobs into one pipeline call and splits the results back per job."""

    def __init__(self, pipeline: CheersPipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, key: Hashable, jobs: list[Job]) -> list[Any]:
        if key == TEXT_KEY:
            return self._text(jobs)
        if isinstance(key, ImageSettings):
            return self._images(key, jobs)
        raise ValueError(f"no runner for batch key {key!r}")

    def _images(self, settings: ImageSettings, jobs: list[Job]) -> list[Any]:
        if settings.kind == "draw":
            return self._drawings(settings, jobs)
        works: list[ImageWork] = [job.payload for job in jobs]
        prompts = [w.prompt for w in works for _ in range(w.n)]
        seeds = [w.seed + i for w in works for i in range(w.n)]
        common = {
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "generator": seeds,
        }
        if settings.kind == "edit":
            sources = [w.source for w in works for _ in range(w.n)]
            images = self.pipeline.edit(
                sources, prompts, strength=settings.strength, **common
            ).images
        else:
            negatives = None
            if settings.negative:
                negatives = [w.negative_prompt for w in works for _ in range(w.n)]
            images = self.pipeline.text_to_image(
                prompts, negative_prompt=negatives, **common
            ).images
        out, k = [], 0
        for w in works:
            out.append(images[k : k + w.n])
            k += w.n
        return out

    def _drawings(self, settings: ImageSettings, jobs: list[Job]) -> list[Image.Image]:
        def progress(step: int, total: int) -> None:
            for job in jobs:
                job.emit(ProgressEvent(step, total))

        strength = {} if settings.strength is None else {"strength": settings.strength}
        return self.pipeline.draw(
            [job.payload for job in jobs],
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            callback=progress,
            **strength,
        ).images

    def _text(self, jobs: list[Job]) -> list[Any]:
        requests: list[TextRequest] = [job.payload for job in jobs]

        def fan_out(pieces: list[str | None]) -> None:
            for job, piece in zip(jobs, pieces, strict=True):
                if piece is not None:
                    job.emit(TokenEvent(piece))

        return self.pipeline.answer(requests, stream=fan_out)
