"""The generation batcher: queued requests decode together, each gets its own rows' text, errors stay local."""

import asyncio
import threading
import time
from dataclasses import dataclass

import pytest

from ecosystem.families.base import Delta, Sampling
from service.generation import GenerationBatcher


class Echo:
    """A stand-in text family: each row spells its prompt back, one character per step.

    The first batch blocks until released, so later requests queue behind it; a prompt
    containing "!" is refused, as a family refuses a bad argument.
    """

    name, api = "echo", "completions"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()

    def generate(self, module, config, prompts: list[str], sampling: list[Sampling]):
        if any("!" in p for p in prompts):
            raise ValueError(f"prompts[{next(i for i, p in enumerate(prompts) if '!' in p)}]: no '!'")
        self.batches.append(list(prompts))
        if len(self.batches) == 1:
            self.release.wait(5)
        return self._steps(prompts, sampling)

    def _steps(self, prompts: list[str], sampling: list[Sampling]):
        for t in range(max(len(p) for p in prompts)):
            time.sleep(0.001)  # a decoding step takes time
            yield [Delta(p[t], "length" if t == len(p) - 1 else None, t + 1) if t < len(p) else None for p in prompts]


@dataclass
class Served:
    family: Echo
    version: int = 1
    model_name: str = "echo"
    module: object = None
    config: object = None


async def collect(batcher: GenerationBatcher, prompts: list[str]) -> list[str]:
    _, job = await batcher.submit(prompts, [Sampling()] * len(prompts))
    texts = [""] * len(prompts)
    async for step in job.steps():
        for i, delta in step:
            texts[i] += delta.text
    return texts


def test_requests_queued_during_a_batch_decode_together_and_get_their_own_text() -> None:
    family = Echo()
    served = Served(family)

    async def scenario():
        batcher = GenerationBatcher(lambda: served, max_rows=3)
        first = asyncio.create_task(collect(batcher, ["abc"]))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(collect(batcher, p)) for p in (["xy", "z"], ["hello"], ["no"])]
        await asyncio.sleep(0.05)
        family.release.set()
        return await first, await asyncio.gather(*queued)

    first, queued = asyncio.run(scenario())
    assert first == ["abc"] and queued == [["xy", "z"], ["hello"], ["no"]]
    assert family.batches == [["abc"], ["xy", "z", "hello"], ["no"]]  # a fourth row would exceed max_rows


def test_a_refused_request_fails_alone() -> None:
    family = Echo()
    served = Served(family)

    async def scenario():
        batcher = GenerationBatcher(lambda: served, max_rows=8)
        first = asyncio.create_task(collect(batcher, ["abc"]))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(collect(batcher, p)) for p in (["ok"], ["bad!"], ["fine"])]
        await asyncio.sleep(0.05)
        family.release.set()
        await first
        return await asyncio.gather(*queued, return_exceptions=True)

    ok, bad, fine = asyncio.run(scenario())
    assert ok == ["ok"] and fine == ["fine"]
    assert isinstance(bad, ValueError) and str(bad) == "prompts[0]: no '!'"


def test_after_a_full_batch_the_next_waits_briefly_for_its_clients_to_return() -> None:
    family = Echo()
    family.release.set()
    served = Served(family)

    async def client(batcher: GenerationBatcher, k: int, rounds: int) -> None:
        for r in range(rounds):
            assert await collect(batcher, [f"{k}{r}" * 20]) == [f"{k}{r}" * 20]
            await asyncio.sleep(0.0005 * (k + 1))  # each client's round trip takes its own time

    async def scenario():
        batcher = GenerationBatcher(lambda: served, max_rows=8)
        await asyncio.gather(*(client(batcher, k, 3) for k in range(4)))

    asyncio.run(scenario())
    sizes = [len(b) for b in family.batches]
    assert sum(sizes) == 12 and max(sizes[1:]) == 4, sizes  # later rounds decode all four clients together


@pytest.mark.parametrize("leave_after", [0, 1])
def test_a_batch_whose_clients_all_left_stops(leave_after: int) -> None:
    family = Echo()
    family.release.set()
    served = Served(family)
    steps_taken = []

    def long_steps(prompts, sampling):
        for t in range(10_000):
            time.sleep(0.001)
            steps_taken.append(t)
            yield [Delta("x", None, t + 1) for _ in prompts]

    family._steps = long_steps

    async def scenario():
        batcher = GenerationBatcher(lambda: served, max_rows=8)
        _, job = await batcher.submit(["p"], [Sampling()])
        seen = 0
        async for _ in job.steps():
            seen += 1
            if seen > leave_after:
                break
        job.cancelled = True  # what the route does when its client disconnects
        await asyncio.sleep(0.1)
        stopped_at = len(steps_taken)
        await asyncio.sleep(0.1)
        return stopped_at

    stopped_at = asyncio.run(scenario())
    assert stopped_at == len(steps_taken) < 1000  # no step after the clients left
