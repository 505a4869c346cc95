"""GenEval and DPG-Bench: write the folders their official scorers read.

Both scorers need GPU detectors and VQA models that cheers does not ship, so cheers writes
exactly the files they read and stops there:

- **GenEval** (``evaluation/evaluate_images.py`` of the GenEval repository) reads
  ``OUT/<index:05d>/metadata.jsonl`` — the prompt's metadata line, written as ``json.dump``
  writes it — and ``OUT/<index:05d>/samples/<k:04d>.png``, the layout its README documents
  (the evaluator takes any ``\\d+.png`` there).
- **DPG-Bench** (``compute_dpg_bench.py``) reads ``OUT/<name>.png`` for each prompt file
  ``<name>.txt``: a 2×2 grid of four images of the model's resolution, left to right and top to
  bottom, which it crops back with ``--resolution R --pic-num 4``.

The same machinery writes the plain folder of ``cheers generate --prompts-file``
(:class:`PromptFileExport`: ``OUT/<line:05d>-<k:02d>.png``).

All are :class:`~cheers.evaluation.benchmark.Benchmark` s whose ``judge`` writes a prompt's
files, run by the same runner as the Shapes benchmarks. Every image's noise comes from its own
seed (the prompt's index and the image's), so the files do not depend on the batch size; a
prompt already written is not among the items, so an interrupted run is resumed by running it
again. Files are written atomically (``cheers._files.atomic_write``: a
temporary name, then a rename): a prompt's ``metadata.jsonl`` is written after its samples,
so a GenEval folder that has it is complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
from PIL import Image

from cheers._files import atomic_write
from cheers.errors import CheersError
from cheers.evaluation.benchmark import Judged, Timings, run_benchmark
from cheers.evaluation.common import seeded_noise
from cheers.evaluation.protocol import TextToImagePipeline
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


class Indexed(NamedTuple):
    """One item of an export: the prompt and its index in the prompt file (its seeds' key)."""

    index: int
    prompt: PromptItem


@dataclass
class _Export:
    """What both exports share: items not yet written, drawing, counting. ``judge`` writes."""

    prompts: Sequence[PromptItem]
    out: Path
    sampling: Settings
    batch_size: int = 4
    settings_name: str = ""
    sampler: str | None = None  # None: the pipeline's default
    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.out = Path(self.out)

    def done(self, item: Indexed) -> bool:
        raise NotImplementedError

    def items(self) -> list[Indexed]:
        # Every prompt: the runner skips the written ones (done), and under torchrun each
        # process skips only among its own, so which process owns a prompt never changes.
        return [Indexed(i, p) for i, p in enumerate(self.prompts)]

    def run(self, pipe: TextToImagePipeline, batch: Sequence[Indexed]) -> list[list[Image.Image]]:
        s, n = self.sampling, self.sampling.images_per_prompt
        seeds = [image_seed(s.seed, job.index, k) for job in batch for k in range(n)]
        images = list(
            pipe.text_to_image(
                [job.prompt.prompt for job in batch],
                num_inference_steps=s.steps,
                guidance_scale=s.guidance,
                time_shift=s.time_shift,
                sampler=self.sampler,
                num_images_per_prompt=n,
                latents=seeded_noise(pipe, seeds),
            ).images
        )
        return [images[i * n : (i + 1) * n] for i in range(len(batch))]

    def settings(self, pipe: Any) -> dict[str, Any]:  # noqa: ARG002 - the Benchmark interface
        sampler = {} if self.sampler is None else {"sampler": self.sampler}
        return {"settings": self.settings_name, **self.sampling.to_dict(), **sampler}

    def aggregate(
        self,
        items: Sequence[Indexed],  # noqa: ARG002 - the Benchmark interface
        records: list[dict[str, Any]],
        timings: Timings,
    ) -> dict[str, Any]:
        total = len(self.prompts)
        return {
            "counts": {"prompts": total, "written": len(records), "skipped": total - len(records)},
            "items": records,
            "timings": {"total_s": timings.total_s, "generate_s": timings.run_s},
        }


@dataclass
class GenEvalExport(_Export):
    """GenEval's folder: ``OUT/<index:05d>/{metadata.jsonl, samples/<k:04d>.png}``."""

    name: ClassVar[str] = "geneval"

    def done(self, item: Indexed) -> bool:
        # metadata.jsonl is written last: a folder that has it is complete.
        return (self.out / item.prompt.key / "metadata.jsonl").is_file()

    def judge(self, item: Indexed, output: list[Image.Image], unit: int) -> Judged:  # noqa: ARG002 - the Judge interface
        folder = self.out / item.prompt.key
        names = []
        for k, image in enumerate(output):
            names.append(f"samples/{k:04d}.png")
            _save_png(image, folder / names[-1])
        text = json.dumps(item.prompt.metadata).encode("utf-8")
        atomic_write(folder / "metadata.jsonl", lambda f: f.write(text))
        return Judged({"key": item.prompt.key, "prompt": item.prompt.prompt, "files": names})


@dataclass
class DpgExport(_Export):
    """DPG-Bench's folder: ``OUT/<name>.png``, a 2×2 grid per prompt file ``<name>.txt``."""

    name: ClassVar[str] = "dpg"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sampling.images_per_prompt != 4:
            raise CheersError("DPG-Bench grids hold 4 images: use images_per_prompt = 4")

    def done(self, item: Indexed) -> bool:
        return (self.out / f"{item.prompt.key}.png").is_file()

    def judge(self, item: Indexed, output: list[Image.Image], unit: int) -> Judged:  # noqa: ARG002 - the Judge interface
        _save_png(grid_2x2(output), self.out / f"{item.prompt.key}.png")
        return Judged({"key": item.prompt.key, "prompt": item.prompt.prompt})


def read_prompt_lines(path: str | os.PathLike[str]) -> list[PromptItem]:
    """The prompts of a text file, one a line (blank lines skipped); each is keyed by its line
    number, so that the file names of its images tell where it came from.

    Raises:
        CheersError: when the file is missing, not UTF-8 text or holds no prompt.
    """
    path = Path(path)
    if not path.is_file():
        raise CheersError(
            f"--prompts-file {path}: no such file; pass a text file, one prompt a line"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise CheersError(f"--prompts-file {path}: not UTF-8 text ({err.reason})") from err
    items = [
        PromptItem(f"{number:05d}", line.strip())
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]
    if not items:
        raise CheersError(f"--prompts-file {path}: no prompts in the file (one a line)")
    return items


@dataclass
class PromptFileExport(_Export):
    """A folder of images for a file of prompts (``cheers generate --prompts-file``): image
    ``k`` of the prompt on line ``L`` is ``OUT/<L:05d>-<k:02d>.png``, drawn from its own seed."""

    name: ClassVar[str] = "generate"

    def files(self, item: Indexed) -> list[Path]:
        n = self.sampling.images_per_prompt
        return [self.out / f"{item.prompt.key}-{k:02d}.png" for k in range(n)]

    def done(self, item: Indexed) -> bool:
        return all(path.is_file() for path in self.files(item))

    def judge(self, item: Indexed, output: list[Image.Image], unit: int) -> Judged:  # noqa: ARG002 - the Judge interface
        paths = self.files(item)
        for image, path in zip(output, paths, strict=True):
            _save_png(image, path)
        return Judged({"key": item.prompt.key, "prompt": item.prompt.prompt,
                       "files": [p.name for p in paths]})  # fmt: skip


def write_geneval(
    pipe: TextToImagePipeline,
    items: Sequence[PromptItem],
    out: str | os.PathLike[str],
    s: Settings,
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, int]:
    """Draw every prompt not yet written into ``out`` in GenEval's layout; returns counts."""
    bench = GenEvalExport(items, Path(out), s, batch_size)
    return run_benchmark(bench, pipe, progress=progress)["counts"]


def write_dpg(
    pipe: TextToImagePipeline,
    items: Sequence[PromptItem],
    out: str | os.PathLike[str],
    s: Settings,
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, int]:
    """Draw every prompt not yet written into ``out`` as DPG-Bench's 2×2 grids."""
    bench = DpgExport(items, Path(out), s, batch_size)
    return run_benchmark(bench, pipe, progress=progress)["counts"]


__all__ = [
    "DpgExport",
    "GenEvalExport",
    "PromptFileExport",
    "PromptItem",
    "grid_2x2",
    "image_seed",
    "read_dpg_prompts",
    "read_geneval_metadata",
    "read_prompt_lines",
    "write_dpg",
    "write_geneval",
]
