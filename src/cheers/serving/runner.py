"""What one batch of jobs asks of the pipeline: the work items, their batch keys, the calls.

Runs in the batcher's worker thread. Two image jobs share a batch when their
:class:`ImageSettings` are equal (same kind, steps, guidance, strength, negative prompt or
not); each job adds ``n`` rows, and image ``i`` of a job with seed ``s`` is drawn from seed
``s + i``, so it is exactly the image ``pipe(prompt, generator=s + i)`` makes alone (or
``pipe.edit(image, prompt, generator=s + i)``). Drawings inside a conversation (the Responses
API's image tool) are ``"draw"`` jobs: one image each, of a
:class:`~cheers.pipeline.draw_requests.DrawRequest`, batched with other drawings of the same
settings (edits among edits), with a :class:`ProgressEvent` after every model evaluation.
All text jobs share one key: the pipeline's
:meth:`~cheers.pipeline.CheersPipeline.answer` decodes rows with different settings together.

A batch the pipeline refuses as too large for the device's memory
(:class:`~cheers.pipeline.memory.MemoryLimitError`, raised before anything is allocated) is split in
halves, down to single images or conversations, instead of failing; since every image and answer
has its own seed, the split batch gives the same results. Only a single image or conversation
that cannot fit gets the error (a 400 that names the limit and the fix).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from PIL import Image

from cheers.pipeline.memory import MemoryLimitError
from cheers.pipeline.text_requests import TextRequest
from cheers.serving.batching import Job

if TYPE_CHECKING:
    from cheers.pipeline import CheersPipeline

#: The batch key of every text job.
TEXT_KEY = ("text",)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ImageSettings:
    """What image jobs must share to be generated in one model call (their batch key)."""

    kind: Literal["generate", "edit", "draw"]
    num_inference_steps: int
    guidance_scale: float
    strength: float | None = None  # edits (and drawings that edit) only
    negative: bool = False  # generations: whether the unconditional rows are a negative prompt
    height: int | None = None  # None: the model's native size
    width: int | None = None


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
        self.splits = 0  # batches split because they did not fit in memory

    def on_split(self, n: int) -> None:  # noqa: ARG002 - split_to_fit's on_split(n)
        self.splits += 1

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
        # One row per image: (work, seed); split_to_fit may run them in several calls.
        rows = [(w, w.seed + i) for w in works for i in range(w.n)]
        images = split_to_fit(lambda part: self._image_call(settings, part), rows, self.on_split)
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

    def _image_call(
        self, settings: ImageSettings, rows: Sequence[tuple[ImageWork, int]]
    ) -> list[Image.Image]:
        prompts = [w.prompt for w, _ in rows]
        common = {
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "generator": [seed for _, seed in rows],
            "height": settings.height,
            "width": settings.width,
        }
        if settings.kind == "edit":
            sources = [w.source for w, _ in rows]
            return list(
                self.pipeline.edit(sources, prompts, strength=settings.strength, **common).images
            )
        negatives = [w.negative_prompt for w, _ in rows] if settings.negative else None
        return list(
            self.pipeline.text_to_image(prompts, negative_prompt=negatives, **common).images
        )

    def _text(self, jobs: list[Job]) -> list[Any]:
        return split_to_fit(self._text_call, jobs, self.on_split)

    def _text_call(self, jobs: Sequence[Job]) -> list[Any]:
        requests: list[TextRequest] = [job.payload for job in jobs]

        def fan_out(pieces: list[str | None]) -> None:
            for job, piece in zip(jobs, pieces, strict=True):
                if piece is not None:
                    job.emit(TokenEvent(piece))

        return self.pipeline.answer(requests, stream=fan_out)


def split_to_fit(
    call: Callable[[Sequence[T]], Sequence[R]],
    items: Sequence[T],
    on_split: Callable[[int], None] | None = None,
) -> list[R]:
    """``call(items)``, or, when the pipeline refuses them as too large for memory (before
    allocating), ``call`` on each half in turn (recursively); one item that cannot fit raises.
    ``on_split(n)`` hears of every split of ``n`` items."""
    try:
        return list(call(items))
    except MemoryLimitError:
        if len(items) == 1:
            raise
    if on_split is not None:
        on_split(len(items))
    half = len(items) // 2
    return split_to_fit(call, items[:half], on_split) + split_to_fit(call, items[half:], on_split)
