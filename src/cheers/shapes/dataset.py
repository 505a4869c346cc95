"""Shapes training splits in the released JSONL format, and fixed evaluation sets.

A split is ``<out>/<split>.jsonl`` plus PNGs under ``<out>/images/``; each line is
``{"id", "image", "conversations": [{"from": "human", ...}, {"from": "gpt", ...}]}``:

- understanding: human ``"<im_start><image><im_end>\\n" + question``, gpt the one-word answer
  (or the letter, in multiple-choice form);
- generation: human the caption, gpt ``"<im_start><image_gen><im_end>"``;
- editing: ``"image": "source.png, target.png"``, human ``"<im_start><image><im_end>\\n" +
  instruction``, gpt ``"<im_start><image_gen><im_end>"``.

Every split and evaluation set draws from its own random stream of the seed, so the same seed
gives byte-identical files. No split holds a held-out composition (:data:`HELD_OUT`), in text or
in pixels; :func:`heldout_prompts` and :func:`heldout_questions` build the sets that measure them.

Command line: ``python -m cheers.shapes.dataset --out DIR --n-train N --n-val N --seed S``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cheers.errors import CheersError
from cheers.shapes.captions import CATEGORIES, PromptSpec, sample_prompt
from cheers.shapes.edits import EDIT_KINDS, EditPair, sample_edit
from cheers.shapes.questions import QUESTION_TYPES, QuestionSpec, sample_question
from cheers.shapes.render import (
    COLORS,
    DEFAULT_CANVAS,
    HELD_OUT,
    MAX_OBJECTS,
    SHAPES,
    Scene,
    place_objects,
    render,
    sample_scene,
)

IMAGE_PROMPT = "<im_start><image><im_end>"
IMAGE_GEN = "<im_start><image_gen><im_end>"
TASKS: tuple[str, ...] = ("understanding", "generation", "editing")
DEFAULT_MIX: dict[str, float] = {"understanding": 0.4, "generation": 0.4, "editing": 0.2}
MULTIPLE_CHOICE_FRACTION = 0.3

# One independent random stream per use of a seed.
_STREAMS = {
    "train": 0,
    "val": 1,
    "benchmark_prompts": 2,
    "benchmark_questions": 3,
    "benchmark_edits": 4,
    "heldout_prompts": 5,
    "heldout_questions": 6,
}
SPLITS: tuple[str, ...] = ("train", "val")


def stream(seed: int, name: str) -> np.random.Generator:
    """The random generator of stream ``name`` (a split or an evaluation set) for ``seed``."""
    if name not in _STREAMS:
        raise CheersError(f"unknown stream {name!r}; expected one of {tuple(_STREAMS)}")
    if seed < 0:
        raise CheersError(f"seed must be a non-negative integer, got {seed}")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAMS[name],)))


@dataclass(frozen=True)
class Sample:
    """One training sample before it is written: its text, scenes and structured spec.

    ``scenes`` are the images in order (one, or source then target for editing).
    """

    id: str
    task: str
    human: str
    gpt: str
    scenes: tuple[Scene, ...]
    spec: PromptSpec | QuestionSpec | EditPair


def _check_mix(mix: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    unknown = set(mix) - set(TASKS)
    if unknown:
        raise CheersError(f"unknown tasks in mix: {sorted(unknown)}; expected some of {TASKS}")
    tasks = [t for t in TASKS if mix.get(t, 0) > 0]
    if any(w < 0 for w in mix.values()) or not tasks:
        raise CheersError(f"mix weights must be non-negative with a positive sum, got {dict(mix)}")
    w = np.array([float(mix[t]) for t in tasks])
    return tasks, w / w.sum()


def _question_for(
    rng: np.random.Generator,
    qtype: str,
    mc: bool,
    draw_scene: Callable[[], Scene],
) -> tuple[QuestionSpec, Scene]:
    for _ in range(1000):
        scene = draw_scene()
        q = sample_question(rng, scene, qtype, mc)
        if q is not None:
            return q, scene
    raise CheersError(f"could not find a scene for a {qtype} question")


def make_sample(
    rng: np.random.Generator,
    task: str,
    sample_id: str,
    canvas: int = DEFAULT_CANVAS,
    forbid: Iterable[tuple[str, str]] = HELD_OUT,
) -> Sample:
    """One random sample of ``task`` (understanding, generation or editing).

    Raises:
        CheersError: on an unknown task.
    """
    forbid = frozenset(forbid)
    if task == "understanding":
        # Types are drawn first so that each is a quarter of the questions: drawn per scene,
        # position (defined on few scenes) would be rare.
        qtype = QUESTION_TYPES[int(rng.integers(len(QUESTION_TYPES)))]
        mc = bool(rng.random() < MULTIPLE_CHOICE_FRACTION)
        q, scene = _question_for(rng, qtype, mc, lambda: sample_scene(rng, canvas, forbid=forbid))
        return Sample(sample_id, task, f"{IMAGE_PROMPT}\n{q.text}", q.answer, (scene,), q)
    if task == "generation":
        spec, scene = sample_prompt(rng, canvas=canvas, forbid=forbid)
        return Sample(sample_id, task, spec.text, IMAGE_GEN, (scene,), spec)
    if task == "editing":
        edit = sample_edit(rng, canvas, forbid=forbid)
        human = f"{IMAGE_PROMPT}\n{edit.instruction}"
        return Sample(sample_id, task, human, IMAGE_GEN, (edit.source, edit.target), edit)
    raise CheersError(f"unknown task {task!r}; expected one of {TASKS}")


def iter_split(
    split: str,
    n_samples: int,
    seed: int,
    canvas: int = DEFAULT_CANVAS,
    mix: Mapping[str, float] | None = None,
) -> Iterator[Sample]:
    """The samples of a split, without touching the disk (what :func:`write_split` writes).

    Raises:
        CheersError: on an unknown split or a bad mix.
    """
    if split not in SPLITS:
        raise CheersError(f"unknown split {split!r}; expected one of {SPLITS}")
    tasks, p = _check_mix(DEFAULT_MIX if mix is None else mix)
    rng = stream(seed, split)
    for i in range(n_samples):
        task = tasks[int(rng.choice(len(tasks), p=p))]
        yield make_sample(rng, task, f"shapes-{split}-{i:07d}", canvas)


def write_split(
    out_dir: str | Path,
    split: str,
    n_samples: int,
    seed: int,
    canvas: int = DEFAULT_CANVAS,
    mix: Mapping[str, float] | None = None,
) -> Path:
    """Render ``n_samples`` samples of ``split`` into ``out_dir``; return the JSONL path.

    Images go to ``out_dir/images/<id>.png`` (editing: ``<id>_src.png``, ``<id>_tgt.png``);
    the JSONL ``out_dir/<split>.jsonl`` refers to them relative to ``out_dir``. ``mix`` weights
    the tasks (default :data:`DEFAULT_MIX`). The output depends only on the arguments.

    Raises:
        CheersError: on an unknown split, a bad mix or a negative seed.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    path = out / f"{split}.jsonl"
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for s in iter_split(split, n_samples, seed, canvas, mix):
            suffixes = ["_src", "_tgt"] if len(s.scenes) == 2 else [""]
            names = [f"images/{s.id}{suf}.png" for suf in suffixes]
            for name, scene in zip(names, s.scenes, strict=True):
                render(scene).save(out / name, format="PNG")
            record = {
                "id": s.id,
                "image": ", ".join(names),
                "conversations": [
                    {"from": "human", "value": s.human},
                    {"from": "gpt", "value": s.gpt},
                ],
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def benchmark_prompts(seed: int, n_per_category: int) -> list[PromptSpec]:
    """A fixed set of generation prompts: ``n_per_category`` of each category, in order.

    No prompt names a held-out composition (see :func:`heldout_prompts`).
    """
    rng = stream(seed, "benchmark_prompts")
    return [
        sample_prompt(rng, category)[0] for category in CATEGORIES for _ in range(n_per_category)
    ]


def heldout_prompts(seed: int, n_per_category: int) -> list[PromptSpec]:
    """Prompts that name a held-out composition: ``colors`` then ``color_attr`` prompts.

    Each category has ``n_per_category`` prompts, alternating between the held-out pairs.
    """
    rng = stream(seed, "heldout_prompts")
    pairs = sorted(HELD_OUT)
    return [
        sample_prompt(rng, category, include=pairs[i % len(pairs)])[0]
        for category in ("colors", "color_attr")
        for i in range(n_per_category)
    ]


@dataclass(frozen=True)
class QuestionRecord:
    """An evaluation question with its scene and rendered image."""

    question: QuestionSpec
    scene: Scene
    image: Image.Image


def benchmark_questions(seed: int, n: int, canvas: int = DEFAULT_CANVAS) -> list[QuestionRecord]:
    """A fixed set of ``n`` questions cycling through the types, open then multiple-choice.

    Question ``i`` has type ``QUESTION_TYPES[i % 4]`` and is multiple-choice when
    ``(i // 4)`` is odd. Scenes hold no held-out composition.
    """
    rng = stream(seed, "benchmark_questions")
    out = []
    for i in range(n):
        qtype, mc = QUESTION_TYPES[i % len(QUESTION_TYPES)], (i // len(QUESTION_TYPES)) % 2 == 1
        q, scene = _question_for(rng, qtype, mc, lambda: sample_scene(rng, canvas))
        out.append(QuestionRecord(q, scene, render(scene)))
    return out


def _heldout_scene(rng: np.random.Generator, canvas: int, pair: tuple[str, str]) -> Scene:
    """A scene with the held-out ``(color, shape)`` object and 0–3 others of other classes."""
    color, shape = pair
    n_others = int(rng.integers(0, MAX_OBJECTS))
    shapes = [s for s in SHAPES if s != shape]
    colors = [c for c in COLORS if c != color]
    others = [
        (shapes[int(rng.integers(len(shapes)))], colors[int(rng.integers(len(colors)))])
        for _ in range(n_others)
    ]
    return place_objects(rng, [(shape, color), *others], canvas)


def heldout_questions(seed: int, n: int, canvas: int = DEFAULT_CANVAS) -> list[QuestionRecord]:
    """Questions about scenes holding one held-out object, typed and formed as in
    :func:`benchmark_questions`.

    The held-out object is the only one of its shape and of its colour, so ``color`` questions
    about its shape and ``shape`` questions about its colour are about it.
    """
    rng = stream(seed, "heldout_questions")
    pairs = sorted(HELD_OUT)
    out = []
    for i in range(n):
        qtype, mc = QUESTION_TYPES[i % len(QUESTION_TYPES)], (i // len(QUESTION_TYPES)) % 2 == 1
        pair = pairs[(i // (2 * len(QUESTION_TYPES))) % len(pairs)]
        for _ in range(1000):
            q, scene = _question_for(rng, qtype, mc, lambda p=pair: _heldout_scene(rng, canvas, p))
            # Colour and shape questions must be about the held-out object itself.
            if (qtype != "color" or q.shape == pair[1]) and (
                qtype != "shape" or q.color == pair[0]
            ):
                break
        else:
            raise CheersError(f"could not find a held-out {qtype} question")
        out.append(QuestionRecord(q, scene, render(scene)))
    return out


def benchmark_edits(seed: int, n: int, canvas: int = DEFAULT_CANVAS) -> list[EditPair]:
    """A fixed set of ``n`` edits cycling through :data:`EDIT_KINDS`; no held-out objects."""
    rng = stream(seed, "benchmark_edits")
    return [sample_edit(rng, canvas, EDIT_KINDS[i % len(EDIT_KINDS)]) for i in range(n)]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the train and val splits of the Shapes world."""
    parser = argparse.ArgumentParser(
        prog="python -m cheers.shapes.dataset",
        description="Write Shapes train/val splits (JSONL + PNG) in the released format.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--n-train", type=int, default=10000, help="training samples")
    parser.add_argument("--n-val", type=int, default=500, help="validation samples")
    parser.add_argument("--seed", type=int, default=0, help="random seed (>= 0)")
    parser.add_argument("--canvas", type=int, default=DEFAULT_CANVAS, help="image side in pixels")
    for task in TASKS:
        parser.add_argument(
            f"--{task}", type=float, default=DEFAULT_MIX[task], help=f"mix weight of {task}"
        )
    args = parser.parse_args(argv)
    mix = {t: getattr(args, t) for t in TASKS}
    for split, n in (("train", args.n_train), ("val", args.n_val)):
        path = write_split(args.out, split, n, args.seed, args.canvas, mix)
        print(f"wrote {n} samples to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
