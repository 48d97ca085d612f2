"""The champion a worker serves, and the hot swap that replaces it.

Each worker polls the champion pointer (one small query). When its version moves, the
worker loads the new weights in a thread, builds a fresh module, runs a smoke inference
and only then swaps one reference. A request reads that reference once, so in-flight
requests finish on the model they started with and none fails because of a swap.
"""

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import anyio
import torch

from ecosystem import metrics, store
from ecosystem.families import Family
from ecosystem.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """One loaded champion: what a request runs on."""

    version: int
    model_id: int
    model_name: str
    family: Family
    module: torch.nn.Module

    def predict(self, inputs: list) -> list[dict[str, Any]]:
        return self.family.predict(self.module, inputs)


class SmokeTestFailed(RuntimeError):
    """A new champion gave no finite output for the family's smoke input; the old one keeps serving."""


class ChampionWatcher:
    """Keeps ``current`` on the newest champion of the store, for one worker."""

    def __init__(self, runtime: Runtime, worker: str) -> None:
        self.runtime, self.worker = runtime, worker
        self.current: Served | None = None
        self.input_width: int | None = None  # set with the first champion: predict inputs are checked against it
        self._failed_version: int | None = None  # a version that failed its smoke test is not retried

    def pointer(self) -> tuple[int, int] | None:
        """(version, model id) of the stored champion, or None while there is none."""
        with self.runtime.sessions() as session:
            current = store.champion(session)
            return None if current is None else (current.version, current.model_id)

    def load(self, version: int, model_id: int) -> Served:
        """Build the champion's module from its artifact and check it answers the smoke input."""
        with self.runtime.sessions() as session:
            model = store.get_model(session, model_id)
            family, config, _ = self.runtime.family(session)
        module = family.build(config, self.runtime.state_dict(model))
        smoke_inputs = family.smoke_inputs(config)
        if not _finite(family.predict(module, smoke_inputs)):
            raise SmokeTestFailed(f"model {model.name!r} (version {version}) gave a non-finite smoke output")
        self.input_width = len(smoke_inputs[0])
        return Served(version, model.id, model.name, family, module)

    async def refresh(self) -> bool:
        """Swap in the stored champion if its version moved; True when a swap happened."""
        pointer = await anyio.to_thread.run_sync(self.pointer)
        if pointer is None or pointer[0] == self._failed_version:
            return False
        if self.current is not None and pointer[0] == self.current.version:
            return False
        start = time.perf_counter()
        try:
            served = await anyio.to_thread.run_sync(self.load, *pointer)
        except SmokeTestFailed:
            self._failed_version = pointer[0]
            log.exception("worker %s keeps version %s", self.worker, self.current and self.current.version)
            return False
        self.current = served  # the swap: one reference, read once per request
        seconds = time.perf_counter() - start
        metrics.SERVED_VERSION.labels(self.worker).set(served.version)
        metrics.LAST_HOT_SWAP_SECONDS.labels(self.worker).set(seconds)
        metrics.HOT_SWAP_DURATION.observe(seconds)
        log.info(
            "worker %s serves %s (version %d), swapped in %.3f s",
            self.worker,
            served.model_name,
            served.version,
            seconds,
        )
        return True

    async def watch(self, poll_seconds: float) -> None:
        """Refresh forever; store errors (say, before the evolver created the store) are logged and retried."""
        while True:
            try:
                await self.refresh()
            except Exception as error:  # the next poll retries; the worker keeps serving what it has
                log.warning("worker %s could not check the champion: %s", self.worker, error)
            await asyncio.sleep(poll_seconds)


def _finite(outputs: list[dict[str, Any]]) -> bool:
    """Every number in the outputs is finite."""

    def numbers(value: Any):
        if isinstance(value, dict):
            for v in value.values():
                yield from numbers(v)
        elif isinstance(value, list | tuple):
            for v in value:
                yield from numbers(v)
        elif isinstance(value, int | float):
            yield value

    return bool(outputs) and all(math.isfinite(x) for x in numbers(outputs))
