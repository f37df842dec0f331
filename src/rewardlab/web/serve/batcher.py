"""Dynamic micro-batching: requests that arrive together are scored in one length-sorted pass.

An RL loop sends many small requests at once (OpenRLHF: one query per request, hundreds in
flight). Scoring each alone pays a forward per sequence; here one collector takes the first waiting
request, waits up to `max_wait_s` for more (up to `max_batch` sequences), scores them all in one
call on a scoring thread (torch releases the GIL, so the event loop keeps accepting) and hands each
request its slice. With `workers` > 1 that many batches are scored at once, each on its own thread;
the collector takes the next request only when a thread is free, so while all are busy the next
batch grows in the queue and under load the wait is free.

A failing batch of several requests is scored again request by request, so one bad request gets
its error and the others their rewards.

`close()` begins a stop: the requests still waiting for a scoring thread fail at once with
`BatcherClosed` (the server answers them 503, so the client retries elsewhere instead of waiting
for a server that is going away), new ones too, and the batches being scored finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

__all__ = ["Scored", "ScoreFn", "BatchStats", "BatcherClosed", "MicroBatcher"]

log = logging.getLogger(__name__)


@dataclass
class Scored:
    """Rewards of N sequences and whether the tokenizer cut each one, in input order."""

    rewards: list[float]
    truncated: list[bool]


ScoreFn = Callable[[list[str], list[str]], Scored]  # (prompts, responses) → Scored, blocking


@dataclass
class BatchStats:
    """What the worker has done since start: reported by `/info`."""

    batches: int = 0  # calls of the score function
    sequences: int = 0
    requests: int = 0
    largest_batch: int = 0  # sequences in the largest call
    most_requests: int = 0  # requests merged into one call, at most
    failed_batches: int = 0
    pending: int = 0  # requests waiting or being scored now

    def record(self, requests: int, sequences: int) -> None:
        self.batches += 1
        self.requests += requests
        self.sequences += sequences
        self.largest_batch = max(self.largest_batch, sequences)
        self.most_requests = max(self.most_requests, requests)


class BatcherClosed(RuntimeError):
    """The batcher is stopping: this request was not scored (send it again elsewhere or later)."""


@dataclass
class _Job:
    prompts: list[str]
    responses: list[str]
    future: asyncio.Future[Scored] = field(repr=False)

    def __len__(self) -> int:
        return len(self.prompts)


class MicroBatcher:
    """One queue, one collector, `workers` scoring threads. Use inside a running event loop:

    >>> import asyncio
    >>> def by_length(prompts, responses):  # a stand-in model: reward = the reply's length
    ...     return Scored([float(len(r)) for r in responses], [False] * len(responses))
    >>> async def two_requests():
    ...     batcher = MicroBatcher(by_length, max_batch=32, max_wait_s=0.005)
    ...     await batcher.start()
    ...     scored = await asyncio.gather(batcher.score(["Human: hi"], ["Hello!"]),
    ...                                   batcher.score(["Human: hi"], ["Hey"]))
    ...     await batcher.stop()
    ...     return [s.rewards for s in scored], batcher.stats.sequences
    >>> asyncio.run(two_requests())
    ([[6.0], [3.0]], 2)
    """

    def __init__(self, score_fn: ScoreFn, *, max_batch: int, max_wait_s: float,
                 workers: int = 1) -> None:
        self.score_fn = score_fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.workers = workers
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._carry: _Job | None = None  # taken from the queue but did not fit the last batch
        self._held: _Job | None = None  # taken from the queue, waiting for a free scoring thread
        self._closing = False
        self._worker: asyncio.Task[None] | None = None
        self._scoring: set[asyncio.Task[None]] = set()  # batches being scored now
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rewardlab-score")

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="rewardlab-batcher")

    async def stop(self) -> None:
        """Score everything already queued, then end the worker and its thread."""
        if self._worker is not None:
            await self._queue.put(None)
            await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    def close(self) -> int:
        """Begin a stop: every request not yet being scored fails with BatcherClosed, and so does
        every later one; the batches being scored finish. Returns how many were turned away."""
        self._closing = True
        waiting = [job for job in (self._held, self._carry) if job is not None]
        self._carry = None
        stop_sentinel = False
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if job is None:
                stop_sentinel = True
            else:
                waiting.append(job)
        if stop_sentinel:  # stop() came first: the collector still has to see it
            self._queue.put_nowait(None)
        turned_away = 0
        for job in waiting:
            if not job.future.done():
                _fail(job, BatcherClosed("the server is shutting down"))
                turned_away += 1
        log.info("stopping: %d queued request(s) turned away (503), %d batch(es) being scored "
                 "finish", turned_away, len(self._scoring))
        return turned_away

    async def score(self, prompts: Sequence[str], responses: Sequence[str]) -> Scored:
        """Rewards of these sequences, scored together with whatever else is waiting."""
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        if not prompts:
            return Scored([], [])
        if self._worker is None or self._worker.done():
            raise RuntimeError("the batcher is not running")
        job = _Job(list(prompts), list(responses), asyncio.get_running_loop().create_future())
        self.stats.pending += 1
        try:
            await self._queue.put(job)
            return await job.future
        finally:
            self.stats.pending -= 1

    async def _run(self) -> None:
        free = asyncio.Semaphore(self.workers)  # scoring threads without a batch
        try:
            while True:
                first = self._carry if self._carry is not None else await self._queue.get()
                self._carry = None
                if first is None:
                    return
                self._held = first
                await free.acquire()  # while every thread is busy, the next batch queues up
                self._held = None
                if first.future.done():  # turned away by close() while it waited
                    free.release()
                    continue
                jobs, stop = await self._collect(first)
                task = asyncio.create_task(self._score_then_free(jobs, free))
                self._scoring.add(task)
                task.add_done_callback(self._scoring.discard)
                if stop:
                    return
        finally:
            await asyncio.gather(*self._scoring)

    async def _score_then_free(self, jobs: list[_Job], free: asyncio.Semaphore) -> None:
        try:
            await self._score_jobs([j for j in jobs if not j.future.done()])
        finally:
            free.release()

    async def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """`first` plus what arrives within max_wait_s, up to max_batch sequences; True = stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        jobs, size = [first], len(first)
        while size < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if job is None:
                return jobs, True
            if size + len(job) > self.max_batch:
                self._carry = job  # first in the next batch: order is kept, no batch overflows
                break
            jobs.append(job)
            size += len(job)
        return jobs, False

    async def _score_jobs(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        try:
            scored = await self._call([p for j in jobs for p in j.prompts],
                                      [r for j in jobs for r in j.responses])
        except Exception as e:  # noqa: BLE001 - reported to the requests, the worker lives on
            self.stats.failed_batches += 1
            if len(jobs) == 1:
                log.exception("scoring failed")
                _fail(jobs[0], e)
                return
            for job in jobs:  # find the culprit: the other requests still get their rewards
                await self._score_jobs([job])
            return
        self.stats.record(len(jobs), len(scored.rewards))
        start = 0
        for job in jobs:
            end = start + len(job)
            if not job.future.done():
                job.future.set_result(Scored(scored.rewards[start:end], scored.truncated[start:end]))
            start = end

    async def _call(self, prompts: list[str], responses: list[str]) -> Scored:
        loop = asyncio.get_running_loop()
        scored = await loop.run_in_executor(self._executor, self.score_fn, prompts, responses)
        if len(scored.rewards) != len(prompts):
            raise RuntimeError(f"score function returned {len(scored.rewards)} rewards for "
                               f"{len(prompts)} sequences")
        return scored


def _fail(job: _Job, error: Exception) -> None:
    if not job.future.done():
        job.future.set_exception(error)
