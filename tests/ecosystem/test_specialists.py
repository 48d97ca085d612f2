"""Registering specialists into the demo ecosystem: what enters, what is refused, and what a refusal leaves."""

import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ecosystem import store
from ecosystem.errors import Conflict, RegistrationRefused
from ecosystem.runtime import Runtime, open_runtime
from ecosystem.settings import Settings
from ecosystem.specialists import register
from m2n2 import digits


@pytest.fixture
def runtime(demo_dir: Path) -> Runtime:
    runtime = open_runtime(Settings(data_dir=demo_dir))
    yield runtime
    runtime.close()


def snapshot(runtime: Runtime) -> tuple:
    """Everything a registration could change: model rows, archive, champion, files."""
    with runtime.sessions() as session:
        models = [(m.id, m.sha256) for m in store.list_models(session)]
        slots = {slot: m.id for slot, m in store.archive(session).items()}
        champion = store.champion(session)
        pointer = (champion.model_id, champion.version)
    files = sorted(p.relative_to(runtime.artifacts.root) for p in runtime.artifacts.root.rglob("*") if p.is_file())
    return models, slots, pointer, [f for f in files if f.suffix != ".db" and not f.name.endswith(("-wal", "-shm"))]


def good_state() -> dict[str, torch.Tensor]:
    """A better-than-specialist digits model: the two specialists averaged."""
    data, space = digits.load_split(), digits.mlp_space()
    a, b = digits.train_specialists(data, space)
    return {k: v.clone() for k, v in space.unflatten((a + b) / 2).items()}


def bad_files(tmp_path: Path) -> dict[str, Path]:
    state = good_state()
    files = {}
    files["pickle"] = tmp_path / "model.bin"
    files["pickle"].write_bytes(pickle.dumps({"fc1.weight": [0.0]}))
    files["zip"] = tmp_path / "model.pt"
    with zipfile.ZipFile(files["zip"], "w") as z:
        z.writestr("data.pkl", b"\x80\x04")
    files["truncated"] = tmp_path / "truncated.safetensors"
    save_file(state, files["truncated"])
    files["truncated"].write_bytes(files["truncated"].read_bytes()[:-100])
    files["wrong shape"] = tmp_path / "shape.safetensors"
    save_file({**state, "fc2.bias": torch.zeros(11)}, files["wrong shape"])
    files["missing tensor"] = tmp_path / "missing.safetensors"
    save_file({k: v for k, v in state.items() if k != "fc1.bias"}, files["missing tensor"])
    files["nan"] = tmp_path / "nan.safetensors"
    save_file({**state, "fc1.bias": torch.full((256,), float("nan"))}, files["nan"])
    files["integer"] = tmp_path / "int.safetensors"
    save_file({**state, "fc2.bias": torch.zeros(10, dtype=torch.int64)}, files["integer"])
    return files


@pytest.mark.parametrize("kind", ["pickle", "zip", "truncated", "wrong shape", "missing tensor", "nan", "integer"])
def test_a_refused_registration_leaves_no_trace(runtime: Runtime, tmp_path: Path, kind: str) -> None:
    before = snapshot(runtime)
    with pytest.raises(RegistrationRefused):
        register(runtime, bad_files(tmp_path)[kind], name=f"bad-{kind.replace(' ', '-')}", registered_by="test")
    assert snapshot(runtime) == before


def test_a_name_conflict_removes_the_stored_file(runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "good.safetensors"
    save_file(good_state(), path)
    before = snapshot(runtime)
    with pytest.raises(Conflict, match="digits-0-4"):
        register(runtime, path, name="digits-0-4", registered_by="test")
    assert snapshot(runtime) == before


def test_a_better_specialist_enters_and_a_duplicate_is_recognised(runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "good.safetensors"
    save_file(good_state(), path)
    result = register(runtime, path, name="averaged", registered_by="test", licence="MIT")
    assert result.entered and not result.duplicate
    assert result.slot == 2  # the first empty slot after the two specialists
    assert 0 < result.scores["digits"] <= 1
    again = register(runtime, path, name="averaged-again", registered_by="test")
    assert again.duplicate and again.model_id == result.model_id and not again.entered
    with runtime.sessions() as session:
        assert store.model_by_name_or_id(session, "averaged").licence == "MIT"
        assert runtime.artifacts.verify(result.sha256)
