"""The champion a worker serves, and the hot swap that replaces it, for any model family.

Each worker polls the champion pointer (one small query). When its version moves, the
worker builds the new champion in a thread (``family.build`` over a memory-mapped source,
on ``M2N2_SERVICE__DEVICE``), runs the family's smoke input through it and only then swaps
one reference. A request reads that reference once, so in-flight requests finish on the
model they started with and none fails because of a swap.

Memory: while a swap loads, the worker holds two models, the old one serving and the new
one being built; the old one is freed when its last in-flight request ends. Never more:
one swap runs at a time (the poll loop awaits it), and a further swap waits until the
model retired by the previous one is gone (a long generation may still hold it).
"""

import asyncio
import gc
import logging
import socket
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import anyio
import torch
from pydantic import TypeAdapter

from ecosystem import metrics, store
from ecosystem.db import begin_write
from ecosystem.families import Family
from ecosystem.families.base import TextGeneration
from ecosystem.runtime import Runtime
from ecosystem.smoke import SmokeTestFailed, smoke_test

log = logging.getLogger(__name__)

RETIRE_PATIENCE = 120.0  # seconds a swap waits for requests on the model before last to finish
ERROR_CHARS = 500  # the stored reason a champion could not load is cut to this length


@dataclass(frozen=True)
class LoadFailure:
    """The newest champion version a worker could not load, and why: it keeps serving what it had."""

    version: int
    error: str


@dataclass(frozen=True)
class Served:
    """One loaded champion: what a request runs on."""

    version: int
    model_id: int
    model_name: str
    family: Family
    config: dict[str, Any]
    module: torch.nn.Module
    inputs: TypeAdapter = field(repr=False)  # one /predict call's inputs: list[family.predict_input]

    @property
    def generates_text(self) -> bool:
        """Whether the OpenAI-compatible routes can run on it."""
        return self.family.api == "completions" and isinstance(self.family, TextGeneration)

    def predict(self, inputs: list) -> list[dict[str, Any]]:
        return self.family.predict(self.module, self.config, inputs)


class ChampionWatcher:
    """Keeps ``current`` on the newest champion of the store, for one worker."""

    def __init__(self, runtime: Runtime, worker: str, device: str = "cpu") -> None:
        self.runtime, self.worker, self.device = runtime, worker, device
        self.name = f"{socket.gethostname()}/{worker}"  # this worker's row in the store's worker states
        self.current: Served | None = None
        self.failure: LoadFailure | None = None
        self._failed_version: int | None = None  # a version that failed its smoke test is not retried
        self._retired: weakref.ref[Served] | None = None  # the model the last swap replaced, while requests hold it
        self._reported: tuple[dict[str, Any], float] | None = None  # the last state recorded, and when

    def state(self) -> dict[str, Any]:
        """What this worker serves, and the newest champion version it could not load (if any)."""
        served, failure = self.current, self.failure
        return {
            "version": None if served is None else served.version,
            "model_id": None if served is None else served.model_id,
            "failed_version": None if failure is None else failure.version,
            "error": None if failure is None else failure.error,
        }

    def readiness(self) -> dict[str, Any]:
        """``/readyz``'s body: this worker, what it serves and whether it is behind the stored champion."""
        served = self.current
        model = None if served is None else served.model_name
        return {"worker": self.name, "model": model, **self.state(), "behind": self.failure is not None}

    def report(self) -> None:
        """Record ``state`` in the store when it changed or a heartbeat is due."""
        state, now = self.state(), time.monotonic()
        if self._reported is not None:
            last_state, last_time = self._reported
            if last_state == state and now - last_time < store.WORKER_HEARTBEAT_SECONDS:
                return
        with self.runtime.sessions() as session:
            begin_write(session)
            store.report_worker(session, self.name, **state)
            session.commit()
        self._reported = (state, now)

    def pointer(self) -> tuple[int, int] | None:
        """(version, model id) of the stored champion, or None while there is none."""
        with self.runtime.sessions() as session:
            current = store.champion(session)
            return None if current is None else (current.version, current.model_id)

    def load(self, version: int, model_id: int) -> Served:
        """Build the champion from its memory-mapped artifact and check it answers the smoke input finitely."""
        with self.runtime.sessions() as session:
            model = store.get_model(session, model_id)
            family, config, _ = self.runtime.family(session)
        # mmap: the weights are copy-on-write views of the file, so workers serving it share its pages.
        with self.runtime.source(model, mmap=True) as source:
            module = family.build(config, source, self.device)
        smoke_test(family, config, module, model.name)
        adapter = _inputs_adapter(family)
        return Served(version, model.id, model.name, family, config, module, adapter)

    async def refresh(self) -> bool:
        """Swap in the stored champion if its version moved; True when a swap happened.

        When the new champion cannot be built or fails its smoke inference, the worker keeps
        serving the model it has and reports the failure (``state``, ``/readyz``, ``/status``).
        """
        pointer = await anyio.to_thread.run_sync(self.pointer)
        if pointer is None:
            return False
        if self.current is not None and pointer[0] == self.current.version:  # say, rolled back to what it serves
            self._loaded()
            return False
        if pointer[0] == self._failed_version:
            return False
        await self._retired_released()
        start = time.perf_counter()
        try:
            served = await anyio.to_thread.run_sync(self.load, *pointer)
        except Exception as error:
            self._failed(pointer[0], error)
            return False
        if self.current is not None:
            self._retired = weakref.ref(self.current)
        self.current = served  # the swap: one reference, read once per request or batch
        self._loaded()
        seconds = time.perf_counter() - start
        metrics.SERVED_VERSION.labels(self.worker).set(served.version)
        metrics.LAST_HOT_SWAP_SECONDS.labels(self.worker).set(seconds)
        metrics.HOT_SWAP_DURATION.observe(seconds)
        log.info(
            "worker %s serves %s (version %d) on %s, swapped in %.3f s",
            self.worker,
            served.model_name,
            served.version,
            self.device,
            seconds,
        )
        return True

    def _loaded(self) -> None:
        """The worker serves the stored champion: no failure to report."""
        self.failure = None
        metrics.CHAMPION_BEHIND.labels(self.worker).set(0)

    def _failed(self, version: int, error: Exception) -> None:
        """Keep serving the current model; record why ``version`` did not load.

        A smoke-test failure is final for that version; any other error (a missing file, memory)
        is retried on the next poll.
        """
        if isinstance(error, SmokeTestFailed):
            self._failed_version = version
        failure = LoadFailure(version, " ".join(f"{type(error).__name__}: {error}".split())[:ERROR_CHARS])
        if failure != self.failure:  # log once per version and cause, not on every poll
            metrics.CHAMPION_LOAD_FAILURES.inc()
            kept = self.current and self.current.version
            message = "worker %s could not load champion version %d, keeps version %s: %s"
            log.error(message, self.worker, version, kept, failure.error)
        self.failure = failure
        metrics.CHAMPION_BEHIND.labels(self.worker).set(1)

    async def _retired_released(self, patience: float = RETIRE_PATIENCE) -> None:
        """Wait until no request holds the model the previous swap retired, so at most two are in memory."""
        deadline = time.monotonic() + patience
        while self._retired is not None and self._retired() is not None:
            if time.monotonic() > deadline:  # a stuck reference must not stop swaps forever
                log.warning("worker %s: the retired champion is still referenced; loading the next anyway", self.worker)
                break
            gc.collect()  # a reference cycle (say, a traceback) may be all that holds it
            await asyncio.sleep(0.05)
        self._retired = None

    async def watch(self, poll_seconds: float) -> None:
        """Refresh forever; store errors (say, before the evolver created the store) are logged and retried."""
        while True:
            try:
                await self.refresh()
                await anyio.to_thread.run_sync(self.report)
            except Exception as error:  # the next poll retries; the worker keeps serving what it has
                log.warning("worker %s could not check the champion: %s", self.worker, error)
            await asyncio.sleep(poll_seconds)


_ADAPTERS: dict[str, TypeAdapter] = {}


def _inputs_adapter(family: Family) -> TypeAdapter:
    """A validator of one /predict call's inputs for ``family`` (built once per family: it compiles a schema)."""
    if family.name not in _ADAPTERS:
        _ADAPTERS[family.name] = TypeAdapter(list[family.predict_input])
    return _ADAPTERS[family.name]
