"""The digits ecosystem end to end, without HTTP: evolve, promote through the gate, restart, carry on."""

import shutil
import sqlite3
from pathlib import Path

from ecosystem import gate, scoring, store
from ecosystem.evolver import Evolver
from ecosystem.runtime import Runtime, open_runtime
from ecosystem.settings import Settings

STEPS = 300  # per tick; the first tick already beats the specialists on the gate


def snapshot(runtime: Runtime, dest: Path) -> None:
    """Copy a live data directory: the database through SQLite's backup API, then the artifacts."""
    dest.mkdir()
    source = sqlite3.connect(runtime.settings.data_dir / "ecosystem.db")
    target = sqlite3.connect(dest / "ecosystem.db")
    with target:
        source.backup(target)
    source.close()
    target.close()
    shutil.copytree(runtime.settings.data_dir / "artifacts", dest / "artifacts")


def archive_shas(runtime: Runtime) -> dict[int, str]:
    with runtime.sessions() as session:
        return {slot: model.sha256 for slot, model in store.archive(session).items()}


def steps_done(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        state = store.load_evolution_state(session)
        return state.steps if state else 0


def test_demo_evolves_promotes_through_the_gate_and_resumes_after_a_restart(demo_dir, tmp_path):
    runtime = open_runtime(Settings(data_dir=demo_dir))
    with runtime.sessions() as session:
        specialists = store.list_models(session, kind="specialist")
        first = store.champion(session)
        assert [m.name for m in specialists] == ["digits-0-4", "digits-5-9"]
        assert (first.model_id, first.version) == (specialists[0].id, 1)  # the first registered specialist

    evolver = Evolver(runtime)
    reports = [evolver.tick(steps=STEPS) for _ in range(2)]
    assert [r.steps for r in reports] == [STEPS, STEPS]
    assert all(r.admitted + r.rejected == STEPS for r in reports)
    assert reports[0].promotion is not None and reports[0].promotion.action == "promote"

    with runtime.sessions() as session:
        promotions = [e for e in store.champion_history(session) if e.action == "promote"]
        earliest = promotions[-1]
        assert earliest.previous_model_id == first.model_id
        assert earliest.p_value < runtime.settings.promotion.significance
        assert earliest.challenger_score > earliest.champion_score
        gate_points = scoring.gate_set(session)
        champion = store.get_model(session, store.champion(session).model_id)
        assert champion.kind == "child"
        champion_scores = scoring.model_scores(session, runtime, champion, gate_points)
        first_scores = scoring.model_scores(session, runtime, specialists[0], gate_points)
        best_specialist = max(float(scoring.model_scores(session, runtime, m, gate_points).mean()) for m in specialists)
    test = gate.paired_test(champion_scores, first_scores)  # accuracy is binary: McNemar
    assert test.method == gate.MCNEMAR and test.n == len(gate_points) > 0 and test.p_value < 0.05
    assert float(champion_scores.mean()) > best_specialist + 0.2  # the merge solves both halves of the digits

    # Restart: a fresh runtime and Evolver on the stored state continue exactly as the running one does.
    assert steps_done(runtime) == 2 * STEPS
    snapshot(runtime, tmp_path / "restarted")
    restarted = open_runtime(Settings(data_dir=tmp_path / "restarted"))
    stored_archive = archive_shas(restarted)
    assert stored_archive == archive_shas(runtime)

    fresh = Evolver(restarted)
    resumed, continued = fresh.tick(steps=STEPS // 2), evolver.tick(steps=STEPS // 2)
    assert steps_done(restarted) == steps_done(runtime) == 2 * STEPS + STEPS // 2
    assert (resumed.admitted, resumed.rejected) == (continued.admitted, continued.rejected)
    assert archive_shas(restarted) == archive_shas(runtime)  # same random state, same archive: same children
    with restarted.sessions() as session:  # every parent was a stored member or a child of this tick
        known = {m.id for m in store.list_models(session) if m.sha256 in stored_archive.values()}
        known |= set(resumed.admitted_models)
        for model_id in resumed.admitted_models:
            assert set(store.get_model(session, model_id).parent_ids) <= known
