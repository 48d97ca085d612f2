"""The evolver's schedule: one APScheduler job that runs ``Evolver.tick`` every interval.

Run one scheduler per deployment, in its own process (``m2n2 evolver``, which calls
``run_forever``); ``m2n2 evolve`` runs ``ticks`` in the foreground instead. The job keeps no
state of its own: the archive, the step count and the random state live in the store,
so a restarted process simply carries on from the last committed tick.
"""

import fcntl
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from ecosystem.errors import Conflict
from ecosystem.evolver import Evolver, TickReport
from ecosystem.settings import Settings

log = logging.getLogger(__name__)

JOB_ID = "evolver_tick"
LOCK_FILE = "evolver.lock"
# With coalesce=True a late run is handed over at most one interval after its due time; this
# slack on top covers a busy machine, so that one coalesced run is never dropped as missed.
MISFIRE_SLACK_SECONDS = 30


def tick_job(evolver: Evolver) -> None:
    """The job: one tick. An exception is logged, never raised into the scheduler; the next tick retries."""
    try:
        evolver.tick()
    except Exception:
        # A tick's results commit in one transaction, and the evolver reloads the stored archive whenever
        # its memory disagrees with it: the next tick starts from the last committed state.
        log.exception("evolver tick failed; the next tick starts again from the stored state")


def start(evolver: Evolver, settings: Settings) -> BackgroundScheduler:
    """Start a background scheduler whose one job ticks ``evolver`` every ``evolution.interval_seconds``."""
    interval = settings.evolution.interval_seconds
    scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(max_workers=1)}, timezone=UTC)
    scheduler.add_job(
        tick_job,
        "interval",
        args=[evolver],
        id=JOB_ID,
        name="m2n2 evolver tick",
        seconds=interval,
        next_run_time=datetime.now(UTC),  # the first tick now, not one interval after start
        max_instances=1,  # ticks never overlap: one evolving process, one tick at a time
        coalesce=True,  # ticks missed during a slow one run once, not as a burst
        misfire_grace_time=math.ceil(interval) + MISFIRE_SLACK_SECONDS,
    )
    scheduler.start()
    budget = settings.evolution
    log.info(
        "evolver scheduled every %g s (per tick: %s steps, %s s) on %s",
        interval,
        budget.steps_per_tick or "unbounded",
        budget.seconds_per_tick or "unbounded",
        settings.data_dir if settings.store.url is None else "the configured store URL",
    )
    return scheduler


@contextmanager
def single_evolver(settings: Settings) -> Iterator[None]:
    """Hold the data directory's evolver lock: ``Conflict`` while another process on this machine holds it.

    The kernel drops the lock when its holder exits, however it exits (SIGKILL included).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with (settings.data_dir / LOCK_FILE).open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise Conflict(f"another evolver (pid {holder}) is running on {settings.data_dir}; stop it first") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield


def run_forever(evolver: Evolver, settings: Settings) -> None:
    """Run the schedule in the foreground until SIGTERM or SIGINT, which end the running tick after its batch."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s: stopping after the running batch", signal.Signals(signum).name)
        evolver.interrupt()
        stop.set()

    with single_evolver(settings):
        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            scheduler = start(evolver, settings)
            try:
                while not stop.wait(1.0):  # a timed wait keeps the main thread responsive to signals
                    pass
            finally:
                scheduler.shutdown(wait=True)
                log.info("evolver stopped")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def ticks(evolver: Evolver, steps: int | None = None, seconds: float | None = None) -> Iterator[TickReport]:
    """Tick in the foreground until ``steps`` or ``seconds`` are spent (neither: one tick of the settings' budget).

    Each tick stays within the settings' per-tick budget, so an interrupted run loses one tick at most.
    """
    if steps is None and seconds is None:
        yield evolver.tick()
        return
    cfg = evolver.runtime.settings.evolution
    deadline = None if seconds is None else time.monotonic() + seconds
    done = 0
    while True:
        left_steps = None if steps is None else steps - done
        left_seconds = None if deadline is None else deadline - time.monotonic()
        if (left_steps is not None and left_steps <= 0) or (left_seconds is not None and left_seconds <= 0):
            return
        tick = evolver.tick(_least(left_steps, cfg.steps_per_tick), _least(left_seconds, cfg.seconds_per_tick))
        yield tick
        if tick.skipped or tick.steps == 0:
            return
        done += tick.steps


def _least(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)
