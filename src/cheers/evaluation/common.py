"""Helpers shared by the Shapes benchmarks: samples, seeds, batching, noise and resizing.

The benchmarks only use the public :class:`~cheers.pipeline.CheersPipeline` API, so any object
with the same methods (``text_to_image``, ``understand``, ``edit``), a ``resolution`` and a
``model.config`` (``latent_channels``, ``grid_size``) can be scored; the tests rely on that to
score fake pipelines whose right answers are known.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from cheers.errors import CheersError

T = TypeVar("T")

# One independent seed stream per use, so that e.g. held-out prompts never share noise with
# benchmark prompts of the same index.
_SEED_STREAMS = {
    "generation": 0,
    "heldout_generation": 1,
    "editing": 2,
    "dummy": 3,
}


@dataclass
class EvalSample:
    """One judged item kept for the picture grid.

    ``image`` is what was judged (model output at the Shapes canvas, or the question's image);
    ``caption`` the prompt, question or instruction; ``correct`` the verdict. ``answer`` and
    ``gold`` are the model's and the right reply (understanding only); ``source`` the image
    that was edited (editing only). ``group`` is the reporting bucket (category, question kind
    or edit kind, ``heldout/`` prefixed for held-out items) and ``unit`` the index of the
    prompt/question/edit, shared by the images of one prompt.
    """

    image: Image.Image
    caption: str
    correct: bool
    group: str
    unit: int
    answer: str | None = None
    gold: str | None = None
    source: Image.Image | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def item_seed(seed: int, stream: str, index: int) -> int:
    """A 32-bit seed for item ``index`` of ``stream``, independent of batching and of the others.

    Raises:
        CheersError: on a negative seed or an unknown stream.
    """
    check_seed(seed)
    if stream not in _SEED_STREAMS:
        raise CheersError(f"unknown seed stream {stream!r}; expected one of {tuple(_SEED_STREAMS)}")
    seq = np.random.SeedSequence(seed, spawn_key=(_SEED_STREAMS[stream], index))
    return int(seq.generate_state(1, dtype=np.uint32)[0])


def check_seed(seed: int) -> None:
    """Raise :class:`CheersError` unless ``seed`` is a non-negative integer."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise CheersError(f"seed must be a non-negative integer, got {seed!r}")


def check_steps(num_inference_steps: int, guidance_scale: float | None, time_shift: float) -> None:
    """Validate the sampling settings before any (slow) model call."""
    if not isinstance(num_inference_steps, int) or num_inference_steps < 2:
        raise CheersError(f"num_inference_steps must be at least 2, got {num_inference_steps!r}")
    if guidance_scale is not None and not math.isfinite(guidance_scale):
        raise CheersError(f"guidance_scale must be a finite number or None, got {guidance_scale}")
    if not (math.isfinite(time_shift) and time_shift > 0):
        raise CheersError(f"time_shift must be a positive number, got {time_shift}")


def batches(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive chunks of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def latent_shape(pipe: Any) -> tuple[int, int, int]:
    """``(channels, grid, grid)`` of one image's initial noise for ``pipe``'s model."""
    cfg = pipe.model.config
    return (int(cfg.latent_channels), int(cfg.grid_size), int(cfg.grid_size))


def seeded_noise(pipe: Any, seeds: Sequence[int], per_seed: int = 1) -> torch.Tensor:
    """Initial noise for a batch: ``per_seed`` images drawn from each seed's own generator.

    Passing this as ``latents`` (instead of one generator for the whole call) makes every
    item's noise depend only on its own seed, so scores do not change with the batch size.
    """
    shape = (per_seed, *latent_shape(pipe))
    parts = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s)) for s in seeds]
    return torch.cat(parts, dim=0)


def to_canvas(image: Image.Image, canvas: int) -> Image.Image:
    """``image`` as an RGB image of side ``canvas``, the size the detector is specified at.

    Downsampling uses ``BOX`` (area averaging): the renderer colours each pixel by how much of
    it a shape covers, so averaging the model's pixels over each canvas pixel reproduces what a
    render at the canvas size looks like, and a verdict does not hinge on which single pixel of
    each block a nearest-neighbour sampler happens to pick (noise there would flip fills and
    colours). Upsampling uses ``NEAREST``: it invents no in-between colours (which could push
    edge pixels across the detector's foreground threshold) and for whole-number factors it is
    exactly area resampling.

    ``canvas`` should be the side of the world the model was trained on: a 64-px world drawn at
    128 px comes back exactly, whereas a 128-px world's 2-px gaps between objects would shrink
    to 1 px at 64 and neighbours could merge into one component.
    """
    rgb = image.convert("RGB")
    if rgb.size == (canvas, canvas):
        return rgb
    w, h = rgb.size
    shrinking = w * h > canvas * canvas
    method = Image.Resampling.BOX if shrinking else Image.Resampling.NEAREST
    return rgb.resize((canvas, canvas), method)


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr, or ``None`` when disabled (tqdm is imported only then)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", file=sys.stderr)


def accuracy_counts(pairs: Iterable[tuple[str, bool]]) -> dict[str, dict[str, int]]:
    """``{group: {"correct": k, "total": n}}`` from ``(group, ok)`` pairs, in first-seen order."""
    out: dict[str, dict[str, int]] = {}
    for group, ok in pairs:
        c = out.setdefault(group, {"correct": 0, "total": 0})
        c["correct"] += int(bool(ok))
        c["total"] += 1
    return out


def rate(correct: int, total: int) -> float:
    """``correct / total``, 0.0 for an empty set (a score must stay JSON-serialisable)."""
    return float(correct) / total if total else 0.0


def describe(detections: Iterable[Any]) -> list[str]:
    """Short, JSON-ready descriptions of detector output: ``"red circle @ (12.5, 40.0)"``."""
    return [f"{d.color} {d.shape} @ ({d.cx:.1f}, {d.cy:.1f})" for d in detections]
