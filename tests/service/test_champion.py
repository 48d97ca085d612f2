"""The hot swap's memory bound: a swap waits until no request holds the model the previous swap retired."""

import asyncio
import time
import weakref

from service.champion import ChampionWatcher


class Model:
    """Stands for a served champion that requests may still hold."""


def test_a_swap_waits_for_the_retired_model_to_be_released() -> None:
    watcher = ChampionWatcher(runtime=None, worker="0")
    held = Model()  # a long generation still running on the model before last
    watcher._retired = weakref.ref(held)

    async def scenario() -> float:
        async def finish_request() -> None:
            nonlocal held
            await asyncio.sleep(0.2)
            held = None  # the request ends: its model is freed

        start = time.monotonic()
        await asyncio.gather(watcher._retired_released(patience=60), finish_request())
        return time.monotonic() - start

    waited = asyncio.run(scenario())
    assert 0.2 <= waited < 30 and watcher._retired is None  # released, long before its patience ran out


def test_a_stuck_reference_delays_a_swap_only_for_a_while() -> None:
    watcher = ChampionWatcher(runtime=None, worker="0")
    stuck = Model()
    watcher._retired = weakref.ref(stuck)
    start = time.monotonic()
    asyncio.run(watcher._retired_released(patience=0.2))
    assert 0.2 <= time.monotonic() - start < 30 and watcher._retired is None
