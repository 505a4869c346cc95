"""The one benchmark interface and the one runner every ``cheers eval`` benchmark goes through.

A benchmark is four steps (:class:`Benchmark`): its ``items`` (prompts, questions, edits), a
``run`` of the pipeline on a batch of them, a ``judge`` of each item's output (a detector
verdict, an exact match, or, for GenEval and DPG-Bench whose scorers are external, writing the
files those scorers read) and an ``aggregate`` of the judged records into scores.
:func:`run_benchmark` does the batching, the progress bar, the timing and the bookkeeping
once, for all of them::

    >>> from cheers.evaluation.shapes_gen import ShapesGen
    >>> result = run_benchmark(ShapesGen(n_per_category=2), pipe)   # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from cheers.errors import CheersError
from cheers.evaluation.common import EvalSample, batches, progress_bar

ItemT = TypeVar("ItemT")
OutputT = TypeVar("OutputT")
PipeT = TypeVar("PipeT", contravariant=True)


@dataclass
class Judged:
    """One judged item: its JSON-ready ``record`` and the samples shown in the report's grid."""

    record: dict[str, Any]
    samples: list[EvalSample] = field(default_factory=list)


@dataclass(frozen=True)
class Timings:
    """Seconds spent by :func:`run_benchmark`: in all, in ``run`` and in ``judge``."""

    total_s: float
    run_s: float
    judge_s: float


class Benchmark(Protocol[ItemT, OutputT, PipeT]):
    """A benchmark as the runner sees it.

    ``name`` labels the progress bar; ``batch_size`` is the number of items per ``run``.
    """

    name: str

    @property
    def batch_size(self) -> int: ...

    def items(self) -> Sequence[ItemT]:
        """Every item to run, in a fixed order (a seed picks them)."""
        ...

    def run(self, pipe: PipeT, batch: Sequence[ItemT]) -> Sequence[OutputT]:
        """One pipeline call on ``batch``: exactly one output per item, in order."""
        ...

    def judge(self, item: ItemT, output: OutputT, unit: int) -> Judged:
        """The verdict on one item's output; ``unit`` is its index among the items."""
        ...

    def settings(self, pipe: PipeT) -> dict[str, Any]:
        """The settings of the run, JSON-ready (some, like the resolution, are the pipe's)."""
        ...

    def aggregate(
        self, items: Sequence[ItemT], records: list[dict[str, Any]], timings: Timings
    ) -> dict[str, Any]:
        """Scores of the judged ``records`` (one per item, in order), ``items`` (the records)
        and ``timings``."""
        ...


def run_benchmark(
    bench: Benchmark[Any, Any, PipeT], pipe: PipeT, *, progress: bool = False
) -> dict[str, Any]:
    """Run ``bench`` on ``pipe``: batches of ``bench.batch_size`` items, each judged.

    Returns ``{"task": bench.name, "settings": bench.settings(pipe), **bench.aggregate(...),
    "samples": [...]}``: the judged samples are PIL images for the report's grid; everything
    else is JSON-ready.

    Raises:
        CheersError: when a ``run`` returns another number of outputs than it was given items.
    """
    items = bench.items()
    judged: list[Judged] = []
    run_s = judge_s = 0.0
    start = time.perf_counter()
    bar = progress_bar(len(items), bench.name, progress)
    try:
        for chunk in batches(items, max(1, bench.batch_size)):
            t0 = time.perf_counter()
            outputs = list(bench.run(pipe, chunk))
            t1 = time.perf_counter()
            run_s += t1 - t0
            if len(outputs) != len(chunk):
                raise CheersError(
                    f"{bench.name}: the pipeline returned {len(outputs)} outputs for "
                    f"{len(chunk)} items"
                )
            for item, output in zip(chunk, outputs, strict=True):
                judged.append(bench.judge(item, output, len(judged)))
            judge_s += time.perf_counter() - t1
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    timings = Timings(time.perf_counter() - start, run_s, judge_s)
    return {
        "task": bench.name,
        "settings": bench.settings(pipe),
        **bench.aggregate(items, [j.record for j in judged], timings),
        "samples": [s for j in judged for s in j.samples],
    }


__all__ = ["Benchmark", "Judged", "Timings", "run_benchmark"]
