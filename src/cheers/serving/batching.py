"""The batcher: a bounded queue of jobs, grouped into batches that one worker thread runs.

Requests become :class:`Job` s. The event loop never runs the model: a single worker thread
(torch's) takes one batch at a time, formed from the oldest queued job and every later job with
the same ``key`` (compatible requests: same kind and sampling settings) until ``max_rows`` rows.
When the worker was idle, the first job waits ``admission_window_s`` so that requests arriving
together share a model call; while a batch runs, new jobs queue and form the next one.

Nothing is dropped silently: a full queue refuses at submission (:class:`QueueFull`), a closing
batcher too (:class:`ShuttingDown`); a job leaves the queue only to run, or when its client goes
away (:meth:`Batcher.drop`); every job that runs gets its result or its own error (a failing
batch is rerun job by job so that one bad request does not fail its neighbours); and
:meth:`Batcher.close` finishes all queued and running work before it returns.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

#: Runs one batch in the worker thread: (key, jobs) → one result per job; a result may be an
#: Exception instance, which fails that job alone.
RunBatch = Callable[[Hashable, list["Job"]], list[Any]]

#: Put in a job's event queue after its last event (its result is then set).
END_OF_EVENTS = object()


class QueueFull(Exception):
    """The queue holds ``max_queue`` jobs already."""


class ShuttingDown(Exception):
    """The batcher is closing and takes no new work."""


@dataclass(eq=False)
class Job:
    """One request's work: ``rows`` rows of a batch of ``key``-compatible jobs.

    With ``stream`` set, events the worker emits (:meth:`emit`) arrive in :attr:`events` on the
    event loop, followed by :data:`END_OF_EVENTS`.
    """

    key: Hashable
    payload: Any
    rows: int = 1
    stream: bool = False
    future: asyncio.Future = field(init=False, repr=False)
    events: asyncio.Queue | None = field(init=False, default=None, repr=False)
    dropped: bool = field(init=False, default=False)
    _loop: asyncio.AbstractEventLoop = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.future = self._loop.create_future()
        if self.stream:
            self.events = asyncio.Queue()

    def emit(self, event: Any) -> None:
        """Hand ``event`` to the request (callable from the worker thread)."""
        if self.events is not None and not self.dropped:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)


@dataclass
class BatcherStats:
    """What the batcher did: the rows and jobs of every batch run, jobs dropped and refused."""

    batch_rows: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4096))
    batch_jobs: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4096))
    dropped: int = 0
    refused: int = 0
    completed: int = 0


class Batcher:
    """Queue, group and run jobs on one worker thread; see the module docstring."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_queue: int,
        admission_window_s: float,
        max_rows: Callable[[Hashable], int],
    ) -> None:
        self._run_batch = run_batch
        self._max_queue = max_queue
        self._window = admission_window_s
        self._max_rows = max_rows
        self._queue: list[Job] = []
        self._running: list[Job] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closing = False
        self.stats = BatcherStats()

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the worker thread and the dispatcher (on the running event loop)."""
        self._wake = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cheers-model")
        self._task = asyncio.create_task(self._dispatch(), name="cheers-batcher")

    async def close(self) -> None:
        """Refuse new jobs, finish every queued and running one, then stop the worker."""
        self._closing = True
        if self._task is None:
            return
        self._wake.set()
        await self._task
        self._executor.shutdown(wait=True)
        self._task = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def closing(self) -> bool:
        return self._closing

    # --------------------------------------------------------------------- jobs
    def submit(self, job: Job) -> asyncio.Future:
        """Queue ``job``; its future gets the result. Raises QueueFull or ShuttingDown."""
        if self._closing or self._task is None:
            self.stats.refused += 1
            raise ShuttingDown("the server is shutting down and takes no new requests")
        if len(self._queue) >= self._max_queue:
            self.stats.refused += 1
            raise QueueFull(
                f"the queue is full ({self._max_queue} requests waiting); retry in a moment"
            )
        self._queue.append(job)
        self._wake.set()
        return job.future

    def drop(self, job: Job) -> None:
        """The job's client went away: remove it from the queue, or ignore its running result."""
        if job.future.done() or job.dropped:
            return
        job.dropped = True
        self.stats.dropped += 1
        if job in self._queue:
            self._queue.remove(job)
            job.future.cancel()

    # ----------------------------------------------------------------- dispatch
    def _take(self) -> list[Job]:
        """The oldest job and the later jobs compatible with it, up to the row limit."""
        first = self._queue[0]
        limit = self._max_rows(first.key)
        batch, rows = [], 0
        for job in self._queue:
            if job.key == first.key and (not batch or rows + job.rows <= limit):
                batch.append(job)
                rows += job.rows
        for job in batch:
            self._queue.remove(job)
        return batch

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        idle = True
        while True:
            if not self._queue:
                if self._closing:
                    return
                idle = True
                self._wake.clear()
                await self._wake.wait()
                continue
            if idle and self._window > 0 and not self._closing:
                await asyncio.sleep(self._window)  # let requests arriving together meet
                idle = False
                continue  # jobs may have been dropped meanwhile
            idle = False
            batch = self._take()
            self._running = batch
            self.stats.batch_rows.append(sum(job.rows for job in batch))
            self.stats.batch_jobs.append(len(batch))
            try:
                results = await loop.run_in_executor(self._executor, self._run, batch)
            except Exception as exc:  # the worker itself failed: every job learns it
                results = [exc] * len(batch)
            finally:
                self._running = []
            for job, result in zip(batch, results, strict=True):
                self._resolve(job, result)

    def _run(self, batch: list[Job]) -> list[Any]:
        """In the worker: run the batch; if it fails as a whole, each job alone."""
        key = batch[0].key
        try:
            return self._run_batch(key, batch)
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
        results = []
        for job in batch:
            try:
                results += self._run_batch(key, [job])
            except Exception as exc:
                results.append(exc)
        return results

    def _resolve(self, job: Job, result: Any) -> None:
        if job.events is not None:
            job.events.put_nowait(END_OF_EVENTS)
        if job.future.done():
            return
        if isinstance(result, BaseException):
            job.future.set_exception(result)
            if job.dropped:
                job.future.exception()  # nobody awaits it any more: mark it retrieved
        else:
            job.future.set_result(result)
        self.stats.completed += 1
