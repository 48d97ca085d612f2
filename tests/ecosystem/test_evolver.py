"""What one evolver tick leaves in the store, and when the promotion gate after it decides again."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecosystem import demo, metrics, promotion, scoring, store
from ecosystem.evolver import Child, Evolver
from ecosystem.runtime import Runtime, open_runtime
from ecosystem.settings import PromotionSettings, Settings, StoreSettings
from m2n2.checkpoint import safetensors_digest


@pytest.fixture
def runtime(fresh_url: str, tmp_path: Path, settings_env: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The digits demo built in an empty database of each backend."""
    opened = open_runtime(Settings(data_dir=tmp_path / "data", store=StoreSettings(url=fresh_url)))
    demo.init_digits(opened)
    yield opened
    opened.close()


def test_a_tick_records_every_admitted_child_with_its_parents(runtime, monkeypatch):
    with runtime.sessions() as session:
        stored = {m.id: m for m in store.list_models(session)}
        space = runtime.family(session)[2]
    admitted: list[Child] = []
    remember = Evolver._remember

    def capture(self, result, state):
        admitted.append(remember(self, result, state))
        return admitted[-1]

    monkeypatch.setattr(Evolver, "_remember", capture)
    report = Evolver(runtime).tick(steps=300)

    assert report.admitted == len(admitted) > 0
    assert any(isinstance(c.parent_a, Child) or isinstance(c.parent_b, Child) for c in admitted)  # chains in a tick
    with runtime.sessions() as session:
        models = {m.sha256: m for m in store.list_models(session)}
        by_id = {m.id: m for m in models.values()}
        for child in admitted:
            row = models[child.sha256]
            assert row.id == child.model_id and row.kind == "child" and row.source == "m2n2 evolver"
            assert (row.sha256, row.n_bytes) == safetensors_digest(space, space.unflatten(child.genome).items())
            parents = [p for p in (child.parent_a, child.parent_b) if p is not None]
            expected = [p.sha256 if isinstance(p, Child) else stored[p].sha256 for p in parents]
            assert [by_id[p].sha256 for p in row.parent_ids] == expected
            assert row.operator == ("split_slerp" if child.parent_b is not None else "mutation")
            assert (row.split_point, row.mixing_ratio) == (child.split_point, pytest.approx(child.mixing_ratio))
            assert row.generation == 1 + max(by_id[p].generation for p in row.parent_ids)
        members = store.archive(session)
        window = scoring.fitness_set(session).point_ids
        for model in members.values():  # the survivors: durable weights, and a score on every fitness point
            assert runtime.artifacts.verify(model.sha256)
            assert len(store.scores_for(session, [model.id], window)) == len(window)
        assert {m.id for m in members.values()} & {c.model_id for c in admitted}
        assert store.load_evolution_state(session).steps == 300


def test_the_gate_decides_again_only_when_its_inputs_change(demo_dir, monkeypatch):
    never = PromotionSettings(margin=1.0)  # no challenger leads by a whole point: every decision is "kept"
    runtime = open_runtime(Settings(data_dir=demo_dir, promotion=never))
    decisions: list[tuple] = []
    decide = promotion.gate.decide

    def counted(*args):
        decisions.append(args)
        return decide(*args)

    monkeypatch.setattr(promotion.gate, "decide", counted)
    with runtime.sessions() as session:
        first, second = store.list_models(session, kind="specialist")
        space = runtime.family(session)[2]
    mixed = (runtime.flat(first, space) + runtime.flat(second, space)) / 2
    artifact = runtime.artifacts.write_tensors(space, space.unflatten(mixed).items())
    with runtime.sessions() as session:
        third = store.add_model(session, name="average", sha256=artifact.sha256, n_bytes=artifact.n_bytes)
        session.commit()
    gatekeeper = promotion.Gatekeeper(runtime)

    kept = gatekeeper.offer(second.id)
    assert kept is not None and kept.action == "kept" and len(decisions) == 1
    assert gatekeeper.offer(second.id) == kept and len(decisions) == 1  # nothing changed: no new decision
    assert gatekeeper.offer(first.id) is None  # the champion itself
    gatekeeper.offer(third.id, mixed)  # another best member
    assert len(decisions) == 2
    gatekeeper.offer(second.id)
    assert len(decisions) == 3

    with runtime.sessions() as session:  # the gate set moves
        store.add_points(session, store.get_task(session, "digits"), [_gate_point()])
        session.commit()
    gatekeeper.offer(second.id)
    assert len(decisions) == 4 and len(decisions[-1][0]) == len(decisions[-2][0]) + 1
    gatekeeper.offer(second.id)
    assert len(decisions) == 4

    promotion.promote(runtime, third.id, actor="test")  # the champion moves
    gatekeeper.offer(second.id)
    assert len(decisions) == 5
    assert promotion.after_tick(runtime, second.id).action == "kept" and len(decisions) == 6  # no memory
    runtime.close()


def _gate_point() -> dict:
    return {"inputs": [float(i % 17) for i in range(64)], "target": 3, "pool": "gate"}


def test_the_evolver_exports_the_gate_score_of_a_champion_moved_elsewhere(runtime):
    """A rollback made by another process shows in the evolver's gauge after its next offer."""
    with runtime.sessions() as session:
        first, second = store.list_models(session, kind="specialist")
        gate_points = scoring.gate_set(session)

        def gate_score(model) -> float:
            return float(scoring.model_scores(session, runtime, model, gate_points).mean())

        expected = {first.id: gate_score(first), second.id: gate_score(second)}
        session.commit()
    gatekeeper = promotion.Gatekeeper(runtime)
    gatekeeper.offer(second.id)
    gauge = metrics.CHAMPION_GATE_SCORE.labels("digits")
    with runtime.sessions() as session:
        champion_id = store.champion(session).model_id
    assert gauge._value.get() == pytest.approx(expected[champion_id])
    other = second.id if champion_id == first.id else first.id
    promotion.promote(runtime, other, actor="elsewhere")
    gauge.set(-1.0)  # as if the move had been exported by another process only
    gatekeeper.offer(champion_id)
    assert gauge._value.get() == pytest.approx(expected[other])


def test_an_interrupted_tick_ends_after_its_batch_and_records_what_it_did(runtime):
    """A shutdown does not wait for a long tick: ``interrupt`` ends it early, its steps saved, no gate run."""
    evolver, reports = Evolver(runtime), []
    ticking = threading.Thread(target=lambda: reports.append(evolver.tick(steps=10_000_000)))
    ticking.start()
    time.sleep(2.0)
    evolver.interrupt()
    ticking.join(timeout=60)
    assert not ticking.is_alive()
    (report,) = reports
    assert report.steps < 10_000_000 and report.promotion is None
    with runtime.sessions() as session:
        assert store.load_evolution_state(session).steps == report.steps
