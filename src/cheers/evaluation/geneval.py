"""GenEval and DPG-Bench: write the folders their official scorers read.

Both scorers need GPU detectors and VQA models that cheers does not ship, so cheers writes
exactly the files they read and stops there:

- **GenEval** (``evaluation/evaluate_images.py`` of the GenEval repository) reads
  ``OUT/<index:05d>/metadata.jsonl`` — the prompt's metadata line, written as ``json.dump``
  writes it — and ``OUT/<index:05d>/samples/<k:05d>.png`` (any ``\\d+.png``; five digits as its
  own generation script writes them).
- **DPG-Bench** (``compute_dpg_bench.py``) reads ``OUT/<name>.png`` for each prompt file
  ``<name>.txt``: a 2×2 grid of four images of the model's resolution, left to right and top to
  bottom, which it crops back with ``--resolution R --pic-num 4``.

Every image's noise comes from its own seed (the prompt's index and the image's), so the files
do not depend on the batch size; a prompt already written is skipped, so an interrupted run is
resumed by running it again. Files are written atomically (``cheers._files.atomic_write``: a
temporary name, then a rename): a prompt's ``metadata.jsonl`` is written after its samples,
so a GenEval folder that has it is complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cheers._files import atomic_write
from cheers.errors import CheersError
from cheers.evaluation.common import batches, progress_bar, seeded_noise
from cheers.evaluation.settings import Settings


@dataclass(frozen=True)
class PromptItem:
    """One prompt to draw: its text and what identifies its output."""

    key: str  # GenEval: the 5-digit index; DPG-Bench: the prompt file's stem
    prompt: str
    metadata: dict[str, Any] | None = None  # GenEval's line, written back as it was


def read_geneval_metadata(path: str | os.PathLike[str]) -> list[PromptItem]:
    """The prompts of a GenEval ``evaluation_metadata.jsonl`` (or its long variant).

    Raises:
        CheersError: when the file is missing, or a line is not a JSON object with a
            ``prompt`` string (naming the line).
    """
    path = Path(path)
    if not path.is_file():
        raise CheersError(
            f"--metadata {path}: no such file; pass GenEval's evaluation_metadata.jsonl"
        )
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            metadata = json.loads(line)
        except json.JSONDecodeError as err:
            raise CheersError(f"{path}:{number}: not a JSON line ({err.msg})") from err
        if not isinstance(metadata, dict) or not isinstance(metadata.get("prompt"), str):
            raise CheersError(f'{path}:{number}: expected an object with a "prompt" string')
        items.append(PromptItem(f"{len(items):05d}", metadata["prompt"], metadata))
    if not items:
        raise CheersError(f"{path}: no prompts in the file")
    return items


def read_dpg_prompts(folder: str | os.PathLike[str]) -> list[PromptItem]:
    """The prompts of a DPG-Bench ``prompts/`` folder: one ``<name>.txt`` per prompt.

    Raises:
        CheersError: when the folder is missing or holds no ``.txt`` file, or one is empty.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheersError(f"--prompts {folder}: no such folder; pass DPG-Bench's prompts/ folder")
    items = []
    for file in sorted(folder.glob("*.txt")):
        prompt = file.read_text(encoding="utf-8").strip()
        if not prompt:
            raise CheersError(f"{file}: the prompt file is empty")
        items.append(PromptItem(file.stem, prompt))
    if not items:
        raise CheersError(f"{folder}: no .txt prompt files in it")
    return items


def _save_png(image: Image.Image, path: Path) -> None:
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def grid_2x2(images: Sequence[Image.Image]) -> Image.Image:
    """Four images of one size as DPG-Bench's grid: [0 1; 2 3]."""
    if len(images) != 4 or len({im.size for im in images}) != 1:
        raise CheersError("a DPG-Bench grid needs four images of one size")
    w, h = images[0].size
    grid = Image.new("RGB", (2 * w, 2 * h))
    for k, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((k % 2) * w, (k // 2) * h))
    return grid


def image_seed(seed: int, index: int, k: int) -> int:
    """The seed of image ``k`` of prompt ``index``: independent of batching and of the rest."""
    return int(np.random.SeedSequence(seed, spawn_key=(index, k)).generate_state(1)[0])


def _draw(pipe: Any, items: list[tuple[int, PromptItem]], s: Settings) -> list[list[Image.Image]]:
    """``s.images_per_prompt`` images for each (index, item), each from its own seed."""
    n = s.images_per_prompt
    seeds = [image_seed(s.seed, index, k) for index, _ in items for k in range(n)]
    out = pipe(
        [item.prompt for _, item in items],
        num_inference_steps=s.steps,
        guidance_scale=s.guidance,
        time_shift=s.time_shift,
        num_images_per_prompt=n,
        latents=seeded_noise(pipe, seeds),
    ).images
    return [out[i * n : (i + 1) * n] for i in range(len(items))]


def _draw_missing(
    pipe: Any,
    items: Sequence[PromptItem],
    s: Settings,
    done: Callable[[PromptItem], bool],
    save: Callable[[PromptItem, list[Image.Image]], None],
    batch_size: int,
    progress: bool,
    desc: str,
) -> dict[str, int]:
    """Draw, in batches of prompts, every item not ``done``, and ``save`` its images."""
    todo = [(i, item) for i, item in enumerate(items) if not done(item)]
    bar = progress_bar(len(todo), desc, progress)
    for chunk in batches(todo, max(1, batch_size)):
        for (_, item), images in zip(chunk, _draw(pipe, chunk, s), strict=True):
            save(item, images)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return {"prompts": len(items), "written": len(todo), "skipped": len(items) - len(todo)}


def write_geneval(
    pipe: Any,
    items: Sequence[PromptItem],
    out: str | os.PathLike[str],
    s: Settings,
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, int]:
    """Draw every prompt not yet written into ``out`` in GenEval's layout; returns counts."""
    out = Path(out)

    def save(item: PromptItem, images: list[Image.Image]) -> None:
        samples = out / item.key / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(images):
            _save_png(image, samples / f"{k:05d}.png")
        # Last: a folder with its metadata.jsonl is complete.
        text = json.dumps(item.metadata).encode("utf-8")
        atomic_write(out / item.key / "metadata.jsonl", lambda f: f.write(text))

    def done(item: PromptItem) -> bool:
        return (out / item.key / "metadata.jsonl").is_file()

    return _draw_missing(pipe, items, s, done, save, batch_size, progress, "geneval")


def write_dpg(
    pipe: Any,
    items: Sequence[PromptItem],
    out: str | os.PathLike[str],
    s: Settings,
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, int]:
    """Draw every prompt not yet written into ``out`` as DPG-Bench's 2×2 grids."""
    if s.images_per_prompt != 4:
        raise CheersError("DPG-Bench grids hold 4 images: use images_per_prompt = 4")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def save(item: PromptItem, images: list[Image.Image]) -> None:
        _save_png(grid_2x2(images), out / f"{item.key}.png")

    def done(item: PromptItem) -> bool:
        return (out / f"{item.key}.png").is_file()

    return _draw_missing(pipe, items, s, done, save, batch_size, progress, "dpg")


__all__ = [
    "PromptItem",
    "grid_2x2",
    "image_seed",
    "read_dpg_prompts",
    "read_geneval_metadata",
    "write_dpg",
    "write_geneval",
]
