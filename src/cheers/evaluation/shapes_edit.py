"""Instruction-editing benchmark of the Shapes world.

A fixed, seeded set of edits (:func:`cheers.shapes.benchmark_edits`: ``recolor``, ``remove``
and ``add`` in turn) is applied by the pipeline to the rendered source scenes; each output is
brought to the Shapes canvas, run through the detector and judged by the pair's own judge
(:meth:`cheers.shapes.EditPair.judge`): every object of the target scene must be found with its
shape, colour and place, and nothing else. Success rate is reported per edit kind and overall
(over edits).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from PIL import Image

from cheers.errors import CheersError
from cheers.evaluation import flags
from cheers.evaluation.benchmark import Judged, Timings, run_benchmark
from cheers.evaluation.command import EvalCommand, finish_report, report_target
from cheers.evaluation.common import (
    EvalSample,
    accuracy_counts,
    check_seed,
    check_steps,
    describe,
    item_seed,
    rate,
    seeded_noise,
    to_canvas,
)
from cheers.evaluation.protocol import EditingPipeline
from cheers.evaluation.settings import SETTINGS
from cheers.pipeline.arguments import check_positive
from cheers.samplers import DEFAULTS
from cheers.shapes import EDIT_KINDS, EditPair, detect, render
from cheers.shapes.dataset import benchmark_edits
from cheers.shapes.render import DEFAULT_CANVAS

TASK = "shapes-edit"
#: Edits: a multiple of 3 keeps the kinds balanced.
DEFAULT_N = 60
DEFAULT_STEPS = SETTINGS["shapes-edit"].steps  # the settings table, written once
DEFAULT_GUIDANCE = SETTINGS["shapes-edit"].guidance
DEFAULT_TIME_SHIFT = SETTINGS["shapes-edit"].time_shift
#: The reference's editing strength: start from 10 % source, 90 % noise.
DEFAULT_STRENGTH = DEFAULTS.edit_strength
DEFAULT_BATCH_SIZE = 8


class Edit(NamedTuple):
    """One item: the edit pair, its rendered source and its noise seed."""

    pair: EditPair
    source: Image.Image
    seed: int


@dataclass
class ShapesEdit:
    """The benchmark; arguments as in :func:`evaluate_editing`, checked on creation."""

    seed: int = 0
    n: int = DEFAULT_N
    num_inference_steps: int = DEFAULT_STEPS
    guidance_scale: float | None = DEFAULT_GUIDANCE
    time_shift: float = DEFAULT_TIME_SHIFT
    sampler: str | None = None
    strength: float = DEFAULT_STRENGTH
    batch_size: int = DEFAULT_BATCH_SIZE
    canvas: int = DEFAULT_CANVAS
    name: ClassVar[str] = TASK

    def __post_init__(self) -> None:
        check_seed(self.seed)
        check_positive(self.n, "n")
        check_positive(self.batch_size, "batch_size")
        check_steps(self.num_inference_steps, self.guidance_scale, self.time_shift)
        if not 0.0 < self.strength <= 1.0:
            raise CheersError(f"strength must be in (0, 1], got {self.strength}")
        if int(self.strength * self.num_inference_steps + 1e-9) < 2:
            raise CheersError(
                f"strength {self.strength} with {self.num_inference_steps} steps leaves fewer "
                "than 2 denoising steps; raise num_inference_steps"
            )

    def done(self, item: object) -> bool:  # noqa: ARG002 - the Benchmark interface
        return False  # the report is written whole, at the end: every item runs

    def items(self) -> list[Edit]:
        pairs = benchmark_edits(self.seed, self.n, self.canvas)
        return [
            Edit(pair, render(pair.source), item_seed(self.seed, "editing", i))
            for i, pair in enumerate(pairs)
        ]

    def run(self, pipe: EditingPipeline, batch: Sequence[Edit]) -> list[Image.Image]:
        out = pipe.edit(
            [job.source for job in batch],
            [job.pair.instruction for job in batch],
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            time_shift=self.time_shift,
            sampler=self.sampler,
            strength=self.strength,
            latents=seeded_noise(pipe, [job.seed for job in batch]),
            output_type="pil",
        )
        return list(out.images)

    def judge(self, item: Edit, output: Image.Image, unit: int) -> Judged:
        pair = item.pair
        judged = to_canvas(output, self.canvas)
        detections = detect(judged)
        ok = pair.judge(detections)
        sample = EvalSample(judged, pair.instruction, ok, pair.kind, unit, source=item.source)
        record = {
            "instruction": pair.instruction,
            "kind": pair.kind,
            "seed": item.seed,
            "correct": ok,
            "source": pair.source.to_dict(),
            "target": pair.target.to_dict(),
            "detections": describe(detections),
        }
        return Judged(record, [sample])

    def settings(self, pipe: EditingPipeline) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "n": self.n,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "time_shift": self.time_shift,
            "sampler": self.sampler or DEFAULTS.sampler,
            "strength": self.strength,
            "batch_size": self.batch_size,
            "canvas": self.canvas,
            "resolution": int(pipe.resolution),
        }

    def aggregate(
        self,
        items: Sequence[Edit],  # noqa: ARG002 - the Benchmark interface
        records: list[dict[str, Any]],
        timings: Timings,
    ) -> dict[str, Any]:
        counts = accuracy_counts((it["kind"], it["correct"]) for it in records)
        ordered = {k: counts[k] for k in EDIT_KINDS if k in counts}
        scores = {k: rate(c["correct"], c["total"]) for k, c in ordered.items()}
        scores["overall"] = rate(sum(it["correct"] for it in records), len(records))
        return {
            "scores": scores,
            "counts": ordered,
            "heldout": None,
            "items": records,
            "timings": {
                "total_s": timings.total_s,
                "edit_s": timings.run_s,
                "judge_s": timings.judge_s,
                "edits": len(records),
                "s_per_edit": timings.total_s / len(records) if records else 0.0,
            },
        }


def evaluate_editing(
    pipe: EditingPipeline,
    *,
    seed: int = 0,
    n: int = DEFAULT_N,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float | None = DEFAULT_GUIDANCE,
    time_shift: float = DEFAULT_TIME_SHIFT,
    sampler: str | None = None,
    strength: float = DEFAULT_STRENGTH,
    batch_size: int = DEFAULT_BATCH_SIZE,
    canvas: int = DEFAULT_CANVAS,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``pipe``'s instruction edits on the Shapes editing pairs.

    Args:
        pipe: a :class:`~cheers.pipeline.CheersPipeline` (or any
            :class:`~cheers.evaluation.protocol.EditingPipeline`).
        seed: picks the edits and each edit's noise.
        n: edits; edit ``i`` is of kind ``("recolor", "remove", "add")[i % 3]``.
        num_inference_steps, guidance_scale, time_shift, strength: passed to ``edit``;
            ``int(strength · num_inference_steps)`` must be at least 2.
        batch_size: edits per pipeline call; each edit's noise comes from its own seed, so
            scores do not depend on it (up to float rounding of padded batches).
        canvas: side of the source scenes and of the canvas outputs are judged at.
        progress: show a progress bar on stderr.

    Returns:
        A JSON-ready dict (except ``"samples"``) with ``task``, ``settings``, ``scores`` (per
        kind and ``overall`` = success over all edits), ``counts``, ``items`` (instruction,
        kind, source and target scenes, detections, verdict), ``timings`` and ``samples``
        (edited image with its source).

    Raises:
        CheersError: on a bad setting.
    """
    bench = ShapesEdit(
        seed, n, num_inference_steps, guidance_scale, time_shift, sampler, strength, batch_size,
        canvas,
    )  # fmt: skip
    return run_benchmark(bench, pipe, progress=progress)


# ------------------------------------------------------------------------------- command
def _add_flags(p: argparse.ArgumentParser) -> None:
    flags.add_report_flags(p, DEFAULT_N, "edits")
    p.add_argument(
        "--strength",
        type=float,
        default=DEFAULT_STRENGTH,
        metavar="S",
        help="editing strength in (0, 1]; int(S · steps) must be at least 2",
    )
    flags.add_sampling_flags(p, "shapes-edit", per_prompt=False)
    flags.add_run_flags(p, DEFAULT_BATCH_SIZE, "edits per model call")


def _build(args: argparse.Namespace) -> ShapesEdit:
    s = flags.sampling_settings(args)
    flags.check_counts(args, "n", "batch_size", "grid_cells")
    flags.check_canvas(args)
    if not 0.0 < args.strength <= 1.0:
        raise CheersError(f"--strength must be in (0, 1], got {args.strength}")
    if int(args.strength * s.steps + 1e-9) < 2:
        raise CheersError(
            f"--strength {args.strength} with --steps {s.steps} leaves fewer than 2 denoising "
            f"steps; use --steps {math.ceil(2 / args.strength - 1e-9)} or more"
        )
    return ShapesEdit(
        seed=s.seed,
        n=args.n,
        num_inference_steps=s.steps,
        guidance_scale=flags.guidance(args, s),
        time_shift=s.time_shift,
        sampler=args.sampler,
        strength=args.strength,
        batch_size=args.batch_size,
        canvas=args.canvas,
    )


COMMAND = EvalCommand(
    TASK,
    "instruction edits of Shapes scenes, judged against the target scene",
    _add_flags,
    _build,
    report_target,
    finish_report,
    journal=True,
)

__all__ = ["COMMAND", "ShapesEdit", "evaluate_editing"]
