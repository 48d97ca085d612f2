"""The evolver as a BentoML service: exactly one worker runs the evolution schedule.

It owns the store's schema: it migrates it, builds the digits demo in an empty store on
its first start, and then ticks on the APScheduler schedule. The entry service calls
``tick`` for "evolve now"; a lock keeps that and the scheduled job from overlapping.
"""

import contextlib
import logging
import threading

import bentoml

from ecosystem import store
from ecosystem.demo import init_digits
from ecosystem.errors import NotFound
from ecosystem.evolver import Evolver, TickReport
from ecosystem.runtime import Runtime, open_runtime
from ecosystem.schedule import single_evolver, start
from ecosystem.settings import Settings
from service.errors import answers_errors
from service.parent import exit_with_parent
from service.schemas import TickResult

log = logging.getLogger(__name__)


class SerialEvolver:
    """An ``Evolver`` whose ticks never overlap, whoever asks for them (the schedule or an HTTP call)."""

    def __init__(self, evolver: Evolver) -> None:
        self.evolver, self.runtime = evolver, evolver.runtime
        self._lock = threading.Lock()

    def tick(self, steps: int | None = None, seconds: float | None = None) -> TickReport:
        with self._lock:
            return self.evolver.tick(steps, seconds)


def prepare(runtime: Runtime) -> None:
    """First start on an empty store: build the digits demo ecosystem (when the settings allow it)."""
    with runtime.sessions() as session, contextlib.suppress(NotFound):
        store.get_ecosystem(session)
        return
    if not runtime.settings.service.init_demo:
        log.warning("the store holds no ecosystem: create one (m2n2 init --demo digits) and restart the evolver")
        return
    log.info("first start: building the digits demo ecosystem in %s", runtime.settings.data_dir)
    init_digits(runtime)


@bentoml.service(name="evolver", workers=1, traffic={"timeout": 600})
class EvolverService:
    """Runs M2N2 ticks on the stored archive, then the promotion gate."""

    def __init__(self) -> None:
        exit_with_parent()  # nor the evolver holding its lock
        settings = Settings()
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(single_evolver(settings))  # one evolver per data directory
        self.runtime = open_runtime(settings)  # migrates the schema
        prepare(self.runtime)
        if removed := self.runtime.artifacts.clean_tmp():
            log.info("removed %d temporary files left by an earlier crash", removed)
        self.evolver = SerialEvolver(Evolver(self.runtime))
        self.scheduler = start(self.evolver, settings)

    @bentoml.on_shutdown
    def stop(self) -> None:
        """End the running tick after its current batch, then release the store and the evolver lock."""
        self.evolver.evolver.interrupt()
        self.scheduler.shutdown(wait=True)
        self.runtime.close()
        self._lock.close()

    @bentoml.api
    @answers_errors
    def tick(self, steps: int | None = None) -> TickResult:
        """Run one tick now (``steps``: its budget; default the settings'), then the promotion gate."""
        report = self.evolver.tick(steps=steps)
        return TickResult(
            steps=report.steps,
            admitted=report.admitted,
            rejected=report.rejected,
            seconds=report.seconds,
            promotion=None if report.promotion is None else f"{report.promotion.action}: {report.promotion.reason}",
            skipped=report.skipped,
        )
