"""The batcher on its own, with a stand-in runner: grouping, limits, refusals, drops, closing."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cheers.serving.batching import Batcher, Job, QueueFull, ShuttingDown


class Recorder:
    """A runner that records each batch's key and payloads; ``gate`` can hold the worker."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[tuple[str, list]] = []
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, key, jobs):
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        payloads = [job.payload for job in jobs]
        self.batches.append((key, payloads))
        if "bad" in payloads:
            raise ValueError("a bad payload")
        return [f"{key}:{p}" for p in payloads]


def make(runner, **options) -> Batcher:
    settings = {"max_queue": 16, "admission_window_s": 0.05, "max_rows": lambda key: 8}
    return Batcher(runner, **{**settings, **options})


async def wait_until(condition) -> None:
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def test_compatible_jobs_share_a_batch_in_arrival_order():
    async def main():
        runner = Recorder()
        batcher = make(runner)
        await batcher.start()
        jobs = [Job(key, i) for i, key in enumerate("AABAB")]
        futures = [batcher.submit(job) for job in jobs]  # all inside one admission window
        results = await asyncio.gather(*futures)
        await batcher.close()
        return runner.batches, results, list(batcher.stats.batch_jobs)

    batches, results, sizes = asyncio.run(main())
    assert batches == [("A", [0, 1, 3]), ("B", [2, 4])]
    assert results == ["A:0", "A:1", "B:2", "A:3", "B:4"]
    assert sizes == [3, 2]


def test_row_limit_splits_batches():
    async def main():
        runner = Recorder()
        batcher = make(runner, max_rows=lambda key: 7)
        await batcher.start()
        futures = [batcher.submit(Job("A", i, rows=3)) for i in range(3)]
        await asyncio.gather(*futures)
        await batcher.close()
        return runner.batches, list(batcher.stats.batch_rows)

    batches, rows = asyncio.run(main())
    assert batches == [("A", [0, 1]), ("A", [2])]
    assert rows == [6, 3]


def test_full_queue_refuses_and_a_dropped_job_never_runs():
    async def main():
        gate = threading.Event()
        runner = Recorder(gate)
        batcher = make(runner, max_queue=2, admission_window_s=0.0)
        await batcher.start()
        running = batcher.submit(Job("A", "first"))
        await wait_until(runner.started.is_set)  # the worker holds "first"
        queued = [Job("B", "second"), Job("B", "third")]
        for job in queued:
            batcher.submit(job)
        with pytest.raises(QueueFull, match="queue is full"):
            batcher.submit(Job("B", "fourth"))
        batcher.drop(queued[0])  # its client went away while it waited
        gate.set()
        first, third = await running, await queued[1].future
        await batcher.close()
        return runner.batches, first, third, queued[0].future.cancelled(), batcher.stats

    batches, first, third, cancelled, stats = asyncio.run(main())
    assert batches == [("A", ["first"]), ("B", ["third"])]
    assert (first, third, cancelled) == ("A:first", "B:third", True)
    assert (stats.dropped, stats.refused, stats.completed) == (1, 1, 2)


def test_a_failing_batch_is_rerun_job_by_job():
    async def main():
        batcher = make(Recorder())
        await batcher.start()
        futures = [batcher.submit(Job("A", p)) for p in ("x", "bad", "y")]
        results = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close()
        return results

    ok1, error, ok2 = asyncio.run(main())
    assert (ok1, ok2) == ("A:x", "A:y")
    assert isinstance(error, ValueError) and "bad payload" in str(error)


def test_close_finishes_queued_work_then_refuses():
    async def main():
        gate = threading.Event()
        runner = Recorder(gate)
        batcher = make(runner, admission_window_s=0.0)
        await batcher.start()
        futures = [batcher.submit(Job(key, i)) for i, key in enumerate("ABA")]
        await wait_until(runner.started.is_set)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.05)
        with pytest.raises(ShuttingDown):
            batcher.submit(Job("A", "late"))
        gate.set()
        await closing
        return [f.result() for f in futures]

    assert asyncio.run(main()) == ["A:0", "B:1", "A:2"]
