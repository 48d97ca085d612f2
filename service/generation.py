"""Batched text generation: completions that arrive while a batch decodes run together as the next batch.

As ``GreedyBatcher`` does for ``/predict``, a request that finds the model idle starts
decoding at once, and under load each batch takes every request that queued during the
previous one (up to ``max_rows`` sequences). One thing differs: the requests of a batch all
end at about the same time, and their clients send their next requests a round trip later,
so the first to come back would start a batch alone and leave the others to the one after.
So after a batch of several requests, the next one waits until as many have come back, for
at most ``LINGER_SHARE`` of the last batch's time (and ``MAX_LINGER``). A lone client never
waits: after a batch of one request there is no lingering. One batch is one call of the
family's ``generate`` in a worker thread, on the champion as it was when the batch started;
every decoding step's new text is fanned out to the requests' own queues, so each request
streams its own sequences while they decode together.
"""

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio
from prometheus_client import Histogram

from ecosystem.families.base import Delta, Sampling
from ecosystem.metrics import BATCH_SIZE_BUCKETS
from service.champion import Served

log = logging.getLogger(__name__)

_DONE = object()  # the end of a job's queue
LINGER_SHARE = 0.1  # after a batch of several requests, wait at most this share of its time for them to return
MAX_LINGER = 0.05  # seconds
# Defined with the service's batching rather than in ecosystem.metrics: only serving workers observe it.
BATCH_ROWS = Histogram(
    "m2n2_generation_batch_rows",
    "Sequences (prompts times n) decoded together in one generation batch by a serving worker.",
    buckets=BATCH_SIZE_BUCKETS,
)


@dataclass(eq=False)
class Job:
    """One request's sequences (prompts times ``n``), and where their text arrives."""

    prompts: list[str]
    sampling: list[Sampling]
    started: asyncio.Future = field(repr=False)  # the Served its batch runs on, once decoding starts
    queue: asyncio.Queue = field(default_factory=asyncio.Queue, repr=False)  # per step: [(row, Delta), ...]
    cancelled: bool = False  # the client left: its rows are decoded with the batch, their text dropped

    async def steps(self) -> AsyncIterator[list[tuple[int, Delta]]]:
        """The new text of this job's rows, one list per decoding step that had any; raises the batch's error."""
        while (item := await self.queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item


class GenerationBatcher:
    """Runs the champion's ``generate`` on batches of queued jobs, one batch at a time, in a thread."""

    def __init__(self, current: Callable[[], Served | None], max_rows: int) -> None:
        self.current, self.max_rows = current, max_rows
        self._queue: deque[Job] = deque()
        self._draining: asyncio.Task | None = None
        self._last = (0, 0.0, 0.0)  # the last batch: (jobs, seconds it took, loop time it ended)

    async def submit(self, prompts: list[str], sampling: list[Sampling]) -> tuple[Served, Job]:
        """Queue the sequences; returns once their batch starts, with the champion that decodes them."""
        loop = asyncio.get_running_loop()
        job = Job(prompts, sampling, loop.create_future())
        self._queue.append(job)
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        try:
            return await job.started, job
        except asyncio.CancelledError:
            job.cancelled = True
            raise

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                await self._gather(loop)
                batch, start = self._next_batch(), loop.time()
                await anyio.to_thread.run_sync(self._decode, batch, loop)
                self._last = (len(batch), loop.time() - start, loop.time())
        finally:
            self._draining = None

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """After a batch of several requests, give their clients a moment to send their next ones."""
        jobs, seconds, ended = self._last
        deadline = ended + min(MAX_LINGER, LINGER_SHARE * seconds)
        while (
            jobs > 1
            and len(self._queue) < jobs
            and sum(len(job.prompts) for job in self._queue) < self.max_rows
            and loop.time() < deadline
        ):
            await asyncio.sleep(0.001)

    def _next_batch(self) -> list[Job]:
        """Queued jobs, oldest first, while their rows fit in one batch (the first always does)."""
        batch = [self._queue.popleft()]
        rows = len(batch[0].prompts)
        while self._queue and rows + len(self._queue[0].prompts) <= self.max_rows:
            batch.append(self._queue.popleft())
            rows += len(batch[-1].prompts)
        return [job for job in batch if not job.cancelled]

    def _decode(self, batch: list[Job], loop: asyncio.AbstractEventLoop) -> None:
        """Decode one batch to the end (in a worker thread), posting each step's text to the event loop."""
        if not batch:
            return
        served = self.current()
        try:
            steps = served.family.generate(
                served.module,
                served.config,
                [p for job in batch for p in job.prompts],
                [s for job in batch for s in job.sampling],
            )
        except ValueError as error:  # one job's bad arguments must not fail the others: retry them alone
            if len(batch) > 1:
                for job in batch:
                    self._decode([job], loop)
            else:
                loop.call_soon_threadsafe(_fail, batch, error)
            return
        loop.call_soon_threadsafe(_start, batch, served)
        BATCH_ROWS.observe(sum(len(job.prompts) for job in batch))
        try:
            for step in steps:
                loop.call_soon_threadsafe(_fan_out, batch, step)
                if all(job.cancelled for job in batch):  # every client left: stop decoding for nobody
                    break
        except Exception as error:
            log.exception("generation failed on %s (version %d)", served.model_name, served.version)
            loop.call_soon_threadsafe(_fail, batch, error)
            return
        loop.call_soon_threadsafe(_finish, batch)


def _start(batch: list[Job], served: Served) -> None:
    for job in batch:
        if not job.started.done():
            job.started.set_result(served)


def _fan_out(batch: list[Job], step: list[Delta | None]) -> None:
    """Give each job the deltas of its own rows (numbered from 0 within the job)."""
    offset = 0
    for job in batch:
        n = len(job.prompts)
        if not job.cancelled:
            items = [(i, d) for i, d in enumerate(step[offset : offset + n]) if d is not None]
            if items:
                job.queue.put_nowait(items)
        offset += n


def _finish(batch: list[Job]) -> None:
    for job in batch:
        job.queue.put_nowait(_DONE)


def _fail(batch: list[Job], error: BaseException) -> None:
    for job in batch:
        if not job.started.done():
            job.started.set_exception(error)
        else:
            job.queue.put_nowait(error)
