"""Adaptive batching for ``/predict``: requests that arrive while the model is busy run as one batch.

There is no timer: a request that finds the model idle runs at once, so a lone request
never waits for company, and under load each batch takes everything that queued during
the previous one (up to ``max_batch_size`` inputs). The batch size follows the load.
A batch that fails (an input the family refuses) runs again call by call, so the error
reaches only the call that caused it, with indices counted within that call.
"""

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio

M = TypeVar("M")  # what answered a batch (the served champion)


class GreedyBatcher(Generic[M]):
    """Runs ``run(inputs) -> (model, outputs)`` in a thread on batches of queued requests, one batch at a time."""

    def __init__(self, run: Callable[[list], tuple[M, list]], max_batch_size: int) -> None:
        self.run, self.max_batch_size = run, max_batch_size
        self._queue: deque[tuple[list, asyncio.Future]] = deque()
        self._draining: asyncio.Task | None = None

    async def submit(self, inputs: list) -> tuple[M, list]:
        """The model that answered and one output per input; all inputs of one call run in one batch."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((inputs, future))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._run(self._next_batch())
        finally:
            self._draining = None

    async def _run(self, batch: list[tuple[list, asyncio.Future]]) -> None:
        """One batch; if it fails, each of its calls again alone, so one call's bad input fails only that call."""
        flat = [x for inputs, _ in batch for x in inputs]
        try:
            model, outputs = await anyio.to_thread.run_sync(self.run, flat)
        except Exception as error:
            if len(batch) == 1:
                return _answer(batch, error=error)
            for call in batch:
                await self._run([call])
            return
        _answer(batch, model=model, outputs=outputs)

    def _next_batch(self) -> list[tuple[list, asyncio.Future]]:
        """Queued calls, oldest first, while their inputs fit in one batch (the first always does)."""
        batch, size = [self._queue.popleft()], 0
        size = len(batch[0][0])
        while self._queue and size + len(self._queue[0][0]) <= self.max_batch_size:
            batch.append(self._queue.popleft())
            size += len(batch[-1][0])
        return batch


def _answer(batch: list[tuple[list, asyncio.Future]], model: Any = None, outputs: list = (), error=None) -> None:
    """Give each call its slice of the outputs (or the error); calls whose client left are skipped."""
    start = 0
    for inputs, future in batch:
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result((model, outputs[start : start + len(inputs)]))
        start += len(inputs)
