"""The text demo: ``m2n2 init --demo text`` with the tiny build creates a causal-lm ecosystem that evolves."""

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from ecosystem import store, text_build, text_data, text_demo
from ecosystem.cli import main
from ecosystem.evolver import Evolver
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-user cache directory holding the tiny build (built once for the module)."""
    home = tmp_path_factory.mktemp("cache")
    text_build.build(text_build.TINY, home / "m2n2" / "text", processes=1)
    return home


@pytest.fixture
def cache_home(built: Path, settings_env: pytest.MonkeyPatch) -> Path:
    """The per-user cache (where the demo keeps its built models): the module's, holding the tiny build."""
    settings_env.setenv("XDG_CACHE_HOME", str(built))
    return built


def test_init_demo_text_creates_tasks_points_members_and_evolves(tmp_path: Path, cache_home: Path, capsys) -> None:
    data_dir = tmp_path / "eco"
    code = main(["init", "--demo", "text", "--size", "tiny", "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "created the text ecosystem" in out
    fitness, gate = text_demo.POINTS["tiny"]
    for task in text_demo.TASKS:
        assert f"task {task}: {fitness} fitness points, {gate} gate points (exact_match)" in out
    assert (text_demo.default_cache()).is_relative_to(cache_home), "built models go to the per-user cache"

    runtime = open_runtime(Settings(data_dir=data_dir))
    try:
        with runtime.sessions() as session:
            eco = store.get_ecosystem(session)
            assert eco.family == "causal-lm"
            names = sorted(m.name for m in store.archive(session).values())
            assert names == ["text-math", "text-shop"]
            assert store.champion(session) is not None
            for task in text_demo.TASKS:
                t = store.get_task(session, task)
                assert t.scoring == "exact_match"
                assert store.count_points(session, t) == {"fitness": fitness, "gate": gate}
        report = Evolver(runtime).tick(steps=2)
        assert report.steps == 2 and not report.skipped
        assert report.admitted + report.rejected == 2
    finally:
        runtime.close()

    code = main(["init", "--demo", "text", "--size", "tiny", "--data-dir", str(data_dir)])
    assert code == 2, "a second init in the same directory is refused"
    assert "already holds" in capsys.readouterr().err


def test_init_text_points_are_the_feedback_and_held_out_problems(tmp_path: Path, cache_home: Path) -> None:
    runtime = open_runtime(Settings(data_dir=tmp_path / "eco"))
    try:
        text_demo.init_text(runtime, config=text_demo.TINY, fitness=3, gate=5)
        seed = text_demo.TINY.seed
        with runtime.sessions() as session:
            for skill in text_demo.TASKS:
                task = store.get_task(session, skill)
                fitness = {(p.inputs, p.target) for p in store.fitness_window(session, task)}
                gate = {(p.inputs, p.target) for p in store.gate_points(session, task)}
                assert fitness == {(e.prompt, e.answer) for e in text_data.examples(skill, "feedback", 3, seed)}
                assert gate == {(e.prompt, e.answer) for e in text_data.examples(skill, "test", 5, seed)}
    finally:
        runtime.close()


def test_tiny_build_is_cached_and_loads_with_transformers(cache_home: Path) -> None:
    paths = text_build.build(text_build.TINY, text_demo.default_cache())
    marker = paths["math"].parent / text_build.MARKER
    stamp = marker.stat().st_mtime_ns
    assert text_build.build(text_build.TINY, text_demo.default_cache()) == paths
    assert marker.stat().st_mtime_ns == stamp, "a complete build is reused, not rebuilt"
    seconds = text_build.build_seconds(paths)
    assert {"base", "math", "shop", "base_cpu"} <= set(seconds)
    for name in ("base", "math", "shop"):
        tokenizer = AutoTokenizer.from_pretrained(paths[name])
        model = AutoModelForCausalLM.from_pretrained(paths[name])
        assert model.config.architectures == ["LlamaForCausalLM"]
        assert model.config.vocab_size == len(tokenizer)
    assert json.loads(marker.read_text())["seconds"]["math"] > 0


def test_a_changed_fine_tune_setting_reuses_the_base(tmp_path: Path) -> None:
    config = text_build.TINY.model_copy(update={"pretrain_steps": 2, "finetune_steps": 2})
    first = text_build.build(config, tmp_path, processes=1)
    other = text_build.build(config.model_copy(update={"finetune_lr": 1e-3}), tmp_path, processes=1)
    assert other["base"] == first["base"] and other["math"] != first["math"]
    assert config.model_copy(update={"pretrain_lr": 1e-3}).pretraining_digest() != config.pretraining_digest()
