"""Children scored on a real local Ray cluster (``ray start --head``, 2 CPUs): the run is the in-process run.

A causal-lm ecosystem (two tasks) evolves in batches of k; every outcome (children's weights and parents,
archive, champion) is compared with the same seed and k evolved in-process (one evaluator): on two actors,
with an actor killed during the tick, and with the whole cluster stopped during the tick. Starting actors
is slow (each imports torch and transformers), so the tests on the shared cluster share one pool.
"""

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from benchmarks.ray_cluster import LocalCluster
from benchmarks.text_ecosystem import text_ecosystem
from ecosystem import store
from ecosystem.evolver import Evolver
from ecosystem.ray_evaluator import RayEvaluator
from ecosystem.runtime import open_runtime
from ecosystem.settings import EvolutionSettings, Settings

ray = pytest.importorskip("ray", reason="ray is in the ray extra (and the dev extra)")

STEPS, K = 12, 3


@pytest.fixture(scope="module")
def ecosystem_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return text_ecosystem(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(num_cpus=2) as running:
        yield running
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(cluster: LocalCluster) -> Iterator[RayEvaluator]:
    """Two one-thread evaluator actors on the shared cluster, handed to each test's evolver."""
    evaluator = RayEvaluator(EvolutionSettings(ray_address=cluster.address, ray_actors=2, torch_threads=1))
    yield evaluator
    evaluator.close()


@pytest.fixture
def fresh(ecosystem_dir: Path, tmp_path: Path):
    """A copy of the ecosystem per run, evolved with the given evolution settings."""

    def make(**evolution):
        data_dir = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(ecosystem_dir, data_dir)
        return open_runtime(Settings(data_dir=data_dir, evolution=EvolutionSettings(torch_threads=1, **evolution)))

    return make


def outcome(runtime) -> dict:
    """What a run decided: children (weights and parents) in order, archive by slot, champion."""
    with runtime.sessions() as session:
        sha = {m.id: m.sha256 for m in store.list_models(session)}
        children = [
            (c.sha256, sha[c.parent_a_id], sha.get(c.parent_b_id)) for c in store.list_models(session, kind="child")
        ]
        archive = {slot: m.sha256 for slot, m in store.archive(session).items()}
        champion = store.champion(session)
        return {"children": children, "archive": archive, "champion": champion and sha[champion.model_id]}


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def in_process(ecosystem_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference: the same seed and k, scored in this process."""
    data_dir = tmp_path_factory.mktemp("reference") / "data"
    shutil.copytree(ecosystem_dir, data_dir)
    runtime = open_runtime(Settings(data_dir=data_dir, evolution=EvolutionSettings(torch_threads=1, batch=K)))
    report = Evolver(runtime).tick(steps=STEPS)
    assert report.admitted and report.rejected, "the archive is full enough for children to compete"
    return outcome(runtime)


def during_tick(evolver: Evolver, action) -> threading.Thread:
    """Run ``action()`` from another thread once children are being scored on the cluster."""

    def wait_then_act() -> None:
        deadline = time.monotonic() + 60
        while metric("m2n2_ray_evaluations_in_flight") < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        action()

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


def on(pool: RayEvaluator, runtime) -> Evolver:
    evolver = Evolver(runtime)
    assert isinstance(evolver.ray_, RayEvaluator), "the Ray address switches the evolver to a Ray evaluator"
    evolver.ray_ = pool
    return evolver


def test_a_seeded_batch_run_on_ray_is_the_in_process_run(cluster, pool, fresh, in_process) -> None:
    runtime = fresh(ray_address=cluster.address, ray_actors=2, batch=K)
    evolved = metric("m2n2_ray_evaluation_duration_seconds_count", {"actor": "0"})
    report = on(pool, runtime).tick(steps=STEPS)
    assert report.steps == STEPS
    assert len(pool.pids_) == 2 and metric("m2n2_ray_evaluation_duration_seconds_count", {"actor": "0"}) > evolved
    assert outcome(runtime) == in_process
    assert not list(runtime.artifacts.tmp_dir.iterdir()), "no pending child file is left behind"


def test_an_actor_killed_during_a_tick_is_replaced_and_its_child_scored_again(cluster, pool, fresh, in_process) -> None:
    runtime = fresh(ray_address=cluster.address, ray_actors=2, batch=K)
    evolver = on(pool, runtime)
    restarts, fallbacks = metric("m2n2_ray_actor_restarts_total"), metric("m2n2_ray_fallbacks_total")
    killed = []
    killer = during_tick(evolver, lambda: killed.append(pool.pids_[0]) or os.kill(killed[0], signal.SIGKILL))
    evolver.tick(steps=STEPS)
    killer.join()
    assert metric("m2n2_ray_actor_restarts_total") >= restarts + 1
    assert metric("m2n2_ray_fallbacks_total") == fallbacks, "a dead actor is not a lost cluster"
    assert len(pool.actors_) == 2 and killed[0] not in pool.pids_
    assert outcome(runtime) == in_process


def test_a_cluster_stopped_during_a_tick_falls_back_in_process(cluster, pool, fresh, in_process, caplog) -> None:
    """Runs after the tests above: it stops the shared cluster."""
    runtime = fresh(ray_address=cluster.address, ray_actors=2, batch=K)
    evolver = on(pool, runtime)
    fallbacks = metric("m2n2_ray_fallbacks_total")
    stopper = during_tick(evolver, cluster.kill)
    report = evolver.tick(steps=STEPS)
    stopper.join()
    assert report.steps == STEPS
    assert metric("m2n2_ray_fallbacks_total") == fallbacks + 1
    assert "scoring children in this process" in caplog.text
    assert outcome(runtime) == in_process, "the tick finished in-process, whole and as seeded"
    assert not ray.is_initialized() and not pool.actors_
    evolver.tick(steps=K)  # the next tick runs in-process too, without waiting on the dead cluster


def test_ray_settings_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("M2N2_EVOLUTION__RAY_ADDRESS", "ray://m2n2-ray-head-svc:10001")
    monkeypatch.setenv("M2N2_EVOLUTION__BATCH", "4")
    monkeypatch.setenv("M2N2_EVOLUTION__RAY_ACTOR_GPUS", "1")
    evolution = Settings().evolution
    assert (evolution.ray_address, evolution.batch, evolution.ray_actors, evolution.ray_actor_gpus) == (
        "ray://m2n2-ray-head-svc:10001",
        4,
        2,
        1,
    )
    for address in ("auto", "10.0.0.7:6379"):
        assert EvolutionSettings(ray_address=address).ray_address == address
    assert EvolutionSettings(ray_address=" ").ray_address is None
    with pytest.raises(ValueError, match="ray_address must be auto"):
        EvolutionSettings(ray_address="head-without-port")
    with pytest.raises(ValueError, match="batch"):
        EvolutionSettings(batch=0)


def test_no_cluster_at_the_address_scores_in_process(fresh, in_process) -> None:
    ray.shutdown()
    runtime = fresh(ray_address="127.0.0.1:9", ray_actors=2, batch=K)  # nothing listens on the discard port
    fallbacks = metric("m2n2_ray_fallbacks_total")
    Evolver(runtime).tick(steps=STEPS)
    assert metric("m2n2_ray_fallbacks_total") == fallbacks + 1
    assert outcome(runtime) == in_process
