"""Weights on disk stay bounded; an evicted child's weights come back bit-identical from its lineage."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from ecosystem import demo, promotion, store, weights
from ecosystem.cli import main
from ecosystem.errors import Conflict
from ecosystem.evolver import Evolver
from ecosystem.families import Family, get_family
from ecosystem.genome_store import FileGenomeStore, genome_store
from ecosystem.runtime import Runtime, open_runtime
from ecosystem.settings import EvolutionSettings, Settings


@pytest.fixture
def runtime(tmp_path: Path, settings_env: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The digits demo with a small archive, so many children are evicted in a few ticks."""
    settings = Settings(data_dir=tmp_path / "data", evolution=EvolutionSettings(archive_size=6, keep_champions=2))
    opened = open_runtime(settings)
    demo.init_digits(opened)
    yield opened
    opened.close()


class WithoutFastPath:
    """A family as one without ``FlatScoring`` would be: the classifier, evolved the way a 7B model is."""

    def __init__(self, family: Family) -> None:
        self._family = family

    def __getattr__(self, name: str):
        if name == "flat_scorer":
            raise AttributeError(name)
        return getattr(self._family, name)


def stored_files(runtime: Runtime) -> set[str]:
    return runtime.artifacts.list_hashes()


def evicted_children(runtime: Runtime) -> list:
    """Children that were once stored and are no longer needed."""
    with runtime.sessions() as session:
        keep = store.retained_model_ids(session, runtime.settings.evolution.keep_champions)
        return [m for m in store.list_models(session, kind="child") if m.id not in keep]


def test_artifacts_stay_bounded_over_many_ticks(runtime: Runtime) -> None:
    evolver = Evolver(runtime)
    counts = []
    for _ in range(8):
        evolver.tick(steps=150)
        counts.append(len(stored_files(runtime)))
    with runtime.sessions() as session:
        n_children = len(store.list_models(session, kind="child"))
        keep = store.retained_model_ids(session, runtime.settings.evolution.keep_champions)
        retained = {m.sha256 for m in store.list_models(session) if m.id in keep}
    # archive (6) + 2 specialists + champion, 2 newest moves and their predecessors, rollback target
    bound = 6 + 2 + 1 + 2 * 2 + 1
    assert n_children > 3 * bound, "the test must make far more children than it keeps"
    assert max(counts) <= bound
    assert stored_files(runtime) == retained  # exactly the retained models have files


def test_an_evicted_child_is_rebuilt_bit_identical(runtime: Runtime) -> None:
    Evolver(runtime).tick(steps=300)
    gone = evicted_children(runtime)
    assert gone, "some children must have left the archive"
    deepest = max(gone, key=lambda m: m.generation)
    assert not runtime.artifacts.exists(deepest.sha256)
    path = weights.ensure(runtime, deepest)
    assert path.is_file() and runtime.artifacts.verify(deepest.sha256)  # sha256 of the file equals the recorded one


def test_rebuild_cli_and_promoting_an_evicted_child(runtime: Runtime, capsys: pytest.CaptureFixture) -> None:
    Evolver(runtime).tick(steps=300)
    child = evicted_children(runtime)[0]
    assert main(["rebuild", child.name, "--data-dir", str(runtime.settings.data_dir)]) == 0
    assert "rebuilt" in capsys.readouterr().out and runtime.artifacts.verify(child.sha256)
    runtime.artifacts.remove(child.sha256)
    promotion.promote(runtime, child.name, "test")  # rebuilds it first, then serves it
    assert runtime.artifacts.verify(child.sha256)
    weights.collect_garbage(runtime)
    assert runtime.artifacts.exists(child.sha256), "the champion keeps its weights"


def test_pinned_models_keep_their_weights(runtime: Runtime) -> None:
    Evolver(runtime).tick(steps=300)
    child = evicted_children(runtime)[0]
    weights.ensure(runtime, child)
    assert main(["pin", child.name, "--data-dir", str(runtime.settings.data_dir)]) == 0
    weights.collect_garbage(runtime)
    assert runtime.artifacts.exists(child.sha256)
    assert main(["pin", child.name, "--off", "--data-dir", str(runtime.settings.data_dir)]) == 0
    weights.collect_garbage(runtime)
    assert not runtime.artifacts.exists(child.sha256)


def test_a_missing_specialist_cannot_be_rebuilt(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        specialist = store.list_models(session, kind="specialist")[0]
    runtime.artifacts.remove(specialist.sha256)
    with pytest.raises(Conflict, match="registered model"):
        weights.ensure(runtime, specialist)


def test_lazy_path_evolves_from_files_and_keeps_only_survivors(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the flat fast path, children are files: rejected ones are deleted, survivors renamed in."""
    monkeypatch.setattr("ecosystem.runtime.get_family", lambda name: WithoutFastPath(get_family(name)))
    with runtime.sessions() as session:
        family, _, space = runtime.family(session)
    assert isinstance(genome_store(runtime, family, space), FileGenomeStore)
    report = Evolver(runtime).tick(steps=40)
    assert report.steps == 40 and report.admitted > 0
    assert not any(runtime.artifacts.tmp_dir.iterdir()), "every child file is renamed in or deleted"
    with runtime.sessions() as session:
        for model in store.archive(session).values():
            assert runtime.artifacts.verify(model.sha256)
    gone = evicted_children(runtime)
    if gone:
        assert weights.ensure(runtime, gone[-1]).is_file()
