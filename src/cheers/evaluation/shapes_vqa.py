"""MMBench-style understanding benchmark of the Shapes world.

A fixed, seeded set of questions (:func:`cheers.shapes.benchmark_questions`: colour, shape,
count and position questions, open and multiple-choice) about rendered scenes is answered
greedily; answers are scored by exact match (:func:`cheers.shapes.score_answer`: case and
surrounding punctuation ignored). Accuracy is reported per question kind (``color``,
``color_mc``, …), per type (open and multiple-choice together), per form and overall (over
questions). Questions about scenes holding a held-out composition
(:func:`cheers.shapes.heldout_questions`) are scored separately.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from cheers.evaluation import flags
from cheers.evaluation.benchmark import Judged, Timings, run_benchmark
from cheers.evaluation.command import EvalCommand, finish_report, report_target
from cheers.evaluation.common import (
    EvalSample,
    accuracy_counts,
    check_seed,
    rate,
)
from cheers.evaluation.protocol import UnderstandingPipeline
from cheers.pipeline.arguments import check_positive
from cheers.shapes import QUESTION_TYPES, QuestionSpec, score_answer, score_questions
from cheers.shapes.dataset import QuestionRecord, benchmark_questions, heldout_questions
from cheers.shapes.render import DEFAULT_CANVAS

TASK = "shapes-vqa"
#: Questions: a multiple of 8 keeps the 4 types × 2 forms balanced.
DEFAULT_N = 200
#: Answers are one word (or a letter); a few tokens leave room for a trailing period.
DEFAULT_MAX_NEW_TOKENS = 8
DEFAULT_BATCH_SIZE = 16


class Asked(NamedTuple):
    """One item: a question with its scene and image, and whether it is held out."""

    record: QuestionRecord
    heldout: bool


@dataclass
class ShapesVQA:
    """The benchmark; arguments as in :func:`evaluate_understanding`, checked on creation."""

    seed: int = 0
    n: int = DEFAULT_N
    batch_size: int = DEFAULT_BATCH_SIZE
    heldout: bool = True
    n_heldout: int | None = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    canvas: int = DEFAULT_CANVAS
    name: ClassVar[str] = TASK

    def __post_init__(self) -> None:
        check_seed(self.seed)
        check_positive(self.n, "n")
        check_positive(self.batch_size, "batch_size")
        check_positive(self.max_new_tokens, "max_new_tokens")
        if self.n_heldout is None:
            self.n_heldout = self.n
        if self.heldout:
            check_positive(self.n_heldout, "n_heldout")

    def done(self, item: object) -> bool:  # noqa: ARG002 - the Benchmark interface
        return False  # the report is written whole, at the end: every item runs

    def items(self) -> list[Asked]:
        jobs = [Asked(r, False) for r in benchmark_questions(self.seed, self.n, self.canvas)]
        if self.heldout:
            assert self.n_heldout is not None
            jobs += [
                Asked(r, True) for r in heldout_questions(self.seed, self.n_heldout, self.canvas)
            ]
        return jobs

    def run(self, pipe: UnderstandingPipeline, batch: Sequence[Asked]) -> list[str]:
        return list(
            pipe.understand(
                [job.record.image for job in batch],
                [job.record.question.text for job in batch],
                max_new_tokens=self.max_new_tokens,
                temperature=0.0,
            )
        )

    def judge(self, item: Asked, output: str, unit: int) -> Judged:
        record, q = item.record, item.record.question
        ok = score_answer(output, q.answer)
        group = f"heldout/{q.kind}" if item.heldout else q.kind
        sample = EvalSample(record.image, q.text, ok, group, unit, answer=output, gold=q.answer)
        return Judged(
            {
                "question": q.text,
                "kind": q.kind,
                "qtype": q.qtype,
                "multiple_choice": q.multiple_choice,
                "heldout": item.heldout,
                "gold": q.answer,
                "answer": output,
                "correct": ok,
                "scene": record.scene.to_dict(),
            },
            [sample],
        )

    def settings(self, pipe: Any) -> dict[str, Any]:  # noqa: ARG002 - the Benchmark interface
        return {
            "seed": self.seed,
            "n": self.n,
            "n_heldout": self.n_heldout if self.heldout else 0,
            "batch_size": self.batch_size,
            "max_new_tokens": self.max_new_tokens,
            "temperature": 0.0,
            "canvas": self.canvas,
        }

    def aggregate(
        self, items: Sequence[Asked], records: list[dict[str, Any]], timings: Timings
    ) -> dict[str, Any]:
        # Records are in item order, so a split by the held-out flag keeps them paired.
        def split(held: bool) -> tuple[list[dict[str, Any]], list[QuestionSpec]]:
            pairs = [(r, job) for r, job in zip(records, items, strict=True) if job.heldout is held]
            return [r for r, _ in pairs], [job.record.question for _, job in pairs]

        return {
            **_score(*split(False)),
            "heldout": _score(*split(True)) if self.heldout else None,
            "items": records,
            "timings": {
                "total_s": timings.total_s,
                "questions": len(records),
                "s_per_question": timings.total_s / len(records) if records else 0.0,
            },
        }


def evaluate_understanding(
    pipe: UnderstandingPipeline,
    *,
    seed: int = 0,
    n: int = DEFAULT_N,
    batch_size: int = DEFAULT_BATCH_SIZE,
    heldout: bool = True,
    n_heldout: int | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    canvas: int = DEFAULT_CANVAS,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``pipe``'s answers to the Shapes questions (greedy decoding, exact match).

    Args:
        pipe: a :class:`~cheers.pipeline.CheersPipeline` (or any
            :class:`~cheers.evaluation.protocol.UnderstandingPipeline`).
        seed: picks the question set; the same seed gives the same questions and images.
        n: questions; question ``i`` has type ``i % 4`` and is multiple-choice when
            ``(i // 4)`` is odd.
        batch_size: questions per pipeline call (greedy answers do not depend on it, up to
            float rounding of padded batches).
        heldout: also score questions about held-out compositions, reported under
            ``"heldout"``.
        n_heldout: held-out questions (default ``n``).
        max_new_tokens: the longest answer, in tokens.
        canvas: side of the rendered question images (the pipeline resizes them to its own
            resolution, as it does for any input image).
        progress: show a progress bar on stderr.

    Returns:
        A JSON-ready dict (except ``"samples"``) with ``task``, ``settings``, ``scores`` (per
        question kind as :func:`cheers.shapes.score_questions` gives them, and ``overall``),
        ``by_type`` (open and multiple-choice together), ``by_form`` (``open``,
        ``multiple_choice``), ``counts``, ``heldout`` (same layout, or ``None``), ``items``
        (question, gold, answer, verdict), ``timings`` and ``samples``.

    Raises:
        CheersError: on a bad setting.
    """
    bench = ShapesVQA(seed, n, batch_size, heldout, n_heldout, max_new_tokens, canvas)
    return run_benchmark(bench, pipe, progress=progress)


def _score(items: list[dict[str, Any]], questions: list[QuestionSpec]) -> dict[str, Any]:
    """Scores of one question set; ``questions`` and ``items`` are in the same order."""
    scores = score_questions((q, it["answer"]) for q, it in zip(questions, items, strict=True))
    counts = accuracy_counts((it["kind"], it["correct"]) for it in items)
    types = accuracy_counts((it["qtype"], it["correct"]) for it in items)
    forms = accuracy_counts(
        ("multiple_choice" if it["multiple_choice"] else "open", it["correct"]) for it in items
    )
    return {
        "scores": scores,
        "counts": dict(sorted(counts.items())),
        "by_type": {
            t: rate(types[t]["correct"], types[t]["total"]) for t in QUESTION_TYPES if t in types
        },
        "by_form": {f: rate(c["correct"], c["total"]) for f, c in sorted(forms.items())},
    }


# ------------------------------------------------------------------------------- command
def _add_flags(p: argparse.ArgumentParser) -> None:
    flags.add_report_flags(p, DEFAULT_N, "questions")
    flags.add_seed_flag(p, "default: 0")
    flags.add_heldout_flags(p, "questions")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        metavar="N",
        help="the longest answer, in tokens (answers are greedy)",
    )
    flags.add_run_flags(p, DEFAULT_BATCH_SIZE, "questions per call")


def _build(args: argparse.Namespace) -> ShapesVQA:
    seed = 0 if args.seed is None else args.seed
    flags.check_seed_flag(seed)
    flags.check_counts(args, "n", "batch_size", "grid_cells", "n_heldout", "max_new_tokens")
    flags.check_canvas(args)
    return ShapesVQA(
        seed=seed,
        n=args.n,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        canvas=args.canvas,
        **flags.heldout(args),  # type: ignore[arg-type]
    )


COMMAND = EvalCommand(
    TASK,
    "one-word questions about Shapes scenes, exact-match accuracy",
    _add_flags,
    _build,
    report_target,
    finish_report,
    journal=True,
)

__all__ = ["COMMAND", "ShapesVQA", "evaluate_understanding"]
