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

from cheers.distributed import Shard
from cheers.errors import CheersError
from cheers.evaluation.common import EvalSample, progress_bar
from cheers.evaluation.journal import Journal

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

    def done(self, item: ItemT) -> bool:
        """Whether ``item``'s output is written already (a resumed run skips it)."""
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
    bench: Benchmark[Any, Any, PipeT],
    pipe: PipeT,
    *,
    progress: bool = False,
    shard: Shard | None = None,
    journal: Journal | None = None,
) -> dict[str, Any]:
    """Run ``bench`` on ``pipe``: batches of ``bench.batch_size`` items, each judged.

    Items ``bench.done`` says are written are skipped. With a ``shard`` (a process of a
    ``torchrun`` job, :class:`~cheers.distributed.Shard`), this process runs only its own
    batches and the judged records of every process are gathered, in item order, before
    ``aggregate``: every rank returns the result of the whole run. With a ``journal``
    (:class:`~cheers.evaluation.journal.Journal`), every judged batch is kept on disk and the
    items an interrupted run judged already are taken from it instead of run again.

    Returns ``{"task": bench.name, "settings": bench.settings(pipe), **bench.aggregate(...),
    "samples": [...], "processes": N}``: the judged samples are PIL images for the report's
    grid; everything else is JSON-ready.

    Raises:
        CheersError: when a ``run`` returns another number of outputs than it was given items.
    """
    shard = Shard() if shard is None else shard
    items = bench.items()
    kept = {} if journal is None else journal.load()
    work = shard.batches(
        items, max(1, bench.batch_size), lambda i: i in kept or bench.done(items[i])
    )
    judged: list[tuple[int, Judged]] = list(kept.items())
    run_s = judge_s = 0.0
    start = time.perf_counter()
    bar = progress_bar(sum(len(chunk) for chunk in work), bench.name, progress)
    try:
        for chunk in work:
            t0 = time.perf_counter()
            outputs = list(bench.run(pipe, [item for _, item in chunk]))
            t1 = time.perf_counter()
            run_s += t1 - t0
            if len(outputs) != len(chunk):
                raise CheersError(
                    f"{bench.name}: the pipeline returned {len(outputs)} outputs for "
                    f"{len(chunk)} items"
                )
            new = [
                (index, bench.judge(item, output, index))
                for (index, item), output in zip(chunk, outputs, strict=True)
            ]
            if journal is not None:
                journal.append(new)
            judged += new
            judge_s += time.perf_counter() - t1
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    parts = shard.gather((judged, run_s, judge_s))
    judged = sorted((pair for part, _, _ in parts for pair in part), key=lambda pair: pair[0])
    # The slowest process sets the pace: its run and judge times are the run's.
    run_s, judge_s = max(p[1] for p in parts), max(p[2] for p in parts)
    timings = Timings(time.perf_counter() - start, run_s, judge_s)
    done_items = [items[index] for index, _ in judged]
    return {
        "task": bench.name,
        "settings": bench.settings(pipe),
        **bench.aggregate(done_items, [j.record for _, j in judged], timings),
        "samples": [s for _, j in judged for s in j.samples],
        "processes": shard.world,
    }


__all__ = ["Benchmark", "Judged", "Timings", "run_benchmark"]
