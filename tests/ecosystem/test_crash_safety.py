"""Kill the evolver at random moments: the store must only ever point at complete, correctly scored models."""

import itertools
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from ecosystem import schedule, scoring, store
from ecosystem.cli import main
from ecosystem.evolver import Evolver
from ecosystem.runtime import Runtime, open_runtime
from ecosystem.settings import Settings

KILLS = 4
M2N2 = shutil.which("m2n2", path=str(Path(sys.executable).parent)) or "m2n2"


def steps_done(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        state = store.load_evolution_state(session)
        return state.steps if state else 0


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def test_sigkilled_evolver_leaves_a_consistent_store_and_carries_on(demo_dir, settings_env, tmp_path):
    settings_env.setenv("M2N2_EVOLUTION__INTERVAL_SECONDS", "0.1")
    settings_env.setenv("M2N2_EVOLUTION__STEPS_PER_TICK", "50")
    runtime = open_runtime(Settings(data_dir=demo_dir))
    rng = random.Random(20250823)
    seen = [steps_done(runtime)]
    log = tmp_path / "evolver.log"
    for _ in range(KILLS):
        with log.open("ab") as out:
            proc = subprocess.Popen([M2N2, "evolver", "--data-dir", str(demo_dir)], stdout=out, stderr=out)
        try:
            # Once it has committed a tick it is ticking (and so past start-up): kill it somewhere in the next 1-3 s.
            wait_for(lambda proc=proc: steps_done(runtime) > seen[-1] or proc.poll() is not None, 30, "a first tick")
            assert proc.poll() is None, log.read_text()
            time.sleep(rng.uniform(1.0, 3.0))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        seen.append(steps_done(runtime))
    assert all(a < b for a, b in itertools.pairwise(seen)), seen  # each run resumed and progressed
    assert "Traceback" not in log.read_text()

    with runtime.sessions() as session:
        members = store.archive(session)
        champion = store.get_model(session, store.champion(session).model_id)
        for model in [*members.values(), champion]:
            assert runtime.artifacts.verify(model.sha256), f"{model.name}: artifact missing or corrupt"
        for path in runtime.artifacts.artifacts_dir.glob("*/*.safetensors"):  # no partial file was ever renamed
            assert runtime.artifacts.verify(path.stem), path
        family, config, space = runtime.family(session)
        points = scoring.fitness_set(session)
        evaluate = scoring.evaluator(runtime, family, config, points)
        stored = store.scores_for(session, [m.id for m in members.values()], points.point_ids)
    assert len(members) == runtime.settings.evolution.archive_size
    for model in members.values():
        kept = torch.tensor([stored[(model.id, p)] for p in points.point_ids])  # KeyError: a score is missing
        assert torch.equal(kept, evaluate(runtime.flat(model, space))), f"{model.name}: stored scores are stale"

    report = Evolver(runtime).tick(steps=20)
    assert not report.skipped and report.steps == report.admitted + report.rejected == 20
    assert steps_done(runtime) == seen[-1] + 20


class FlakyEvolver:
    """Stands in for Evolver: its first tick fails."""

    def __init__(self) -> None:
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks == 1:
            raise RuntimeError("the first tick fails")


def test_a_failing_tick_is_logged_and_the_schedule_goes_on(settings_env, tmp_path, caplog):
    settings = Settings(data_dir=tmp_path, evolution={"interval_seconds": 0.05})
    flaky = FlakyEvolver()
    with caplog.at_level(logging.ERROR, logger="ecosystem.schedule"):
        scheduler = schedule.start(flaky, settings)
        try:
            job = scheduler.get_job(schedule.JOB_ID)
            assert (job.max_instances, job.coalesce) == (1, True)
            assert isinstance(job.misfire_grace_time, int) and job.misfire_grace_time > 0
            wait_for(lambda: flaky.ticks >= 3, 10, "ticks after the failing one")
        finally:
            scheduler.shutdown(wait=True)
    assert "the first tick fails" in caplog.text
    assert not scheduler.running


def test_evolver_command_stops_cleanly_on_sigterm(demo_dir, settings_env):
    """``m2n2 evolver`` in-process: SIGTERM ends the running tick after its batch, recorded, then it exits 0."""
    settings_env.setenv("M2N2_EVOLUTION__INTERVAL_SECONDS", "0.1")
    settings_env.setenv("M2N2_EVOLUTION__STEPS_PER_TICK", "50")
    runtime = open_runtime(Settings(data_dir=demo_dir))

    def stop_when_ticking() -> None:
        deadline = time.monotonic() + 30
        while steps_done(runtime) < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        # SIGINT if the handler never got installed: main() then returns 130 instead of the test dying.
        ticking = signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM if ticking else signal.SIGINT)

    before = signal.getsignal(signal.SIGTERM)
    stopper = threading.Thread(target=stop_when_ticking)
    stopper.start()
    assert main(["evolver", "--data-dir", str(demo_dir)]) == 0
    stopper.join()
    assert steps_done(runtime) >= 100  # the ticks before the signal, and the steps of the one it cut short
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
