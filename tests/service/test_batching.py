"""The greedy batcher: calls that queue while a batch runs form the next batch, and each gets its own slice."""

import asyncio
import threading

import pytest

from service.batching import GreedyBatcher


class SlowModel:
    """Doubles its inputs; the first batch blocks until released, so later calls queue behind it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()

    def __call__(self, inputs: list[int]) -> tuple[str, list[int]]:
        self.batches.append(list(inputs))
        if len(self.batches) == 1:
            self.release.wait(5)
        return f"v{len(self.batches)}", [2 * x for x in inputs]


def test_calls_queued_during_a_batch_run_together_and_get_their_own_slices() -> None:
    model = SlowModel()

    async def scenario():
        batcher = GreedyBatcher(model, max_batch_size=5)
        first = asyncio.create_task(batcher.submit([1]))
        await asyncio.sleep(0.05)  # the first call runs alone, at once
        queued = [asyncio.create_task(batcher.submit(x)) for x in ([2, 3], [4], [5, 6], [7])]
        await asyncio.sleep(0.05)
        model.release.set()
        return await first, await asyncio.gather(*queued)

    first, queued = asyncio.run(scenario())
    assert first == ("v1", [2])
    assert model.batches == [[1], [2, 3, 4, 5, 6], [7]]  # five inputs fit a batch; the sixth waits for the next
    assert queued == [("v2", [4, 6]), ("v2", [8]), ("v2", [10, 12]), ("v3", [14])]


def test_an_error_reaches_every_call_of_its_batch_and_the_next_batch_still_runs() -> None:
    calls = []

    def flaky(inputs: list[int]) -> tuple[str, list[int]]:
        calls.append(inputs)
        if len(calls) == 1:
            raise RuntimeError("no champion")
        return "v", inputs

    async def scenario():
        batcher = GreedyBatcher(flaky, max_batch_size=10)
        with pytest.raises(RuntimeError, match="no champion"):
            await batcher.submit([1])
        return await batcher.submit([2])

    assert asyncio.run(scenario()) == ("v", [2])


def test_a_bad_call_in_a_batch_fails_alone_with_its_own_indices() -> None:
    model = SlowModel()

    def picky(inputs: list[int]) -> tuple[str, list[int]]:
        if any(x < 0 for x in inputs):
            raise ValueError(f"inputs[{next(i for i, x in enumerate(inputs) if x < 0)}]: negative")
        return model(inputs)

    async def scenario():
        batcher = GreedyBatcher(picky, max_batch_size=10)
        first = asyncio.create_task(batcher.submit([1]))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(batcher.submit(x)) for x in ([2, 3], [4, -1], [5])]
        await asyncio.sleep(0.05)
        model.release.set()
        await first
        return await asyncio.gather(*queued, return_exceptions=True)

    good, bad, other = asyncio.run(scenario())
    assert good == ("v2", [4, 6]) and other == ("v3", [10])  # the failed batch ran again call by call
    assert isinstance(bad, ValueError) and str(bad) == "inputs[1]: negative"  # indexed within its own call
