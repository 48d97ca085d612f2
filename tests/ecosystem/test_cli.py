"""The ``m2n2`` command: each command's happy path in-process, user errors, and the console script itself."""

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ecosystem import schedule, store
from ecosystem.cli import main
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings
from m2n2 import digits
from m2n2.checkpoint import write_safetensors

M2N2 = shutil.which("m2n2", path=str(Path(sys.executable).parent)) or "m2n2"


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def counts(data_dir: Path) -> dict[str, int]:
    """How many models, artifacts and data points the store holds."""
    runtime = open_runtime(Settings(data_dir=data_dir))
    with runtime.sessions() as session:
        points = sum(sum(store.count_points(session, t).values()) for t in store.list_tasks(session))
        models = len(store.list_models(session))
    return {"models": models, "artifacts": len(list(data_dir.glob("artifacts/*/*"))), "points": points}


def write_points(path: Path, n: int, bad_line: int | None = None) -> Path:
    """``n`` test-split digits as JSON lines; line ``bad_line`` (1-based) gets a label out of range."""
    data = digits.load_split()
    with path.open("w") as f:
        for i, (x, y) in enumerate(zip(data.x_test[:n].tolist(), data.y_test[:n].tolist(), strict=True), start=1):
            f.write(json.dumps({"inputs": x, "target": 12 if i == bad_line else y}) + "\n")
    return path


def random_specialist(path: Path) -> Path:
    space = digits.mlp_space()
    generator = torch.Generator().manual_seed(0)
    tensors = [(s.name, 0.05 * torch.randn(s.shape, generator=generator)) for s in space]
    return write_safetensors(path, space, tensors)


def test_init_builds_the_demo_once_and_explains_itself(tmp_path, settings_env, capsys):
    data_dir = str(tmp_path / "eco")
    code, _, err = run(capsys, "init", "--data-dir", data_dir)
    assert code == 2 and "m2n2 init --demo digits" in err and not Path(data_dir).exists()

    code, out, _ = run(capsys, "init", "--demo", "digits", "--data-dir", data_dir)
    assert code == 0
    assert "registered digits-0-4 (id 1): entered the archive in slot 0" in out
    assert "registered digits-5-9 (id 2): entered the archive in slot 1" in out
    assert "champion: digits-0-4" in out

    before = counts(Path(data_dir))
    code, _, err = run(capsys, "init", "--demo", "digits", "--data-dir", data_dir)
    assert code == 2 and "already holds a classifier ecosystem" in err
    assert counts(Path(data_dir)) == before


def test_register_task_and_feedback(demo_dir, tmp_path, capsys):
    d = ("--data-dir", str(demo_dir))
    path = random_specialist(tmp_path / "random.safetensors")
    code, out, _ = run(capsys, "register", str(path), "--name", "random", "--by", "tester", "--licence", "MIT", *d)
    assert code == 0
    assert "registered random (id 3): entered the archive in slot 2; fitness digits 0." in out
    code, out, _ = run(capsys, "register", str(path), "--name", "again", *d)
    assert code == 0 and "already stored as model random" in out

    code, out, _ = run(capsys, "task", "create", "held-out", "--scoring", "likelihood", "--window", "20", *d)
    assert code == 0 and out.startswith("created task held-out: scoring likelihood, window 20, gate share 0.2")
    before = counts(demo_dir)
    code, out, _ = run(capsys, "feedback", "import", "held-out", str(write_points(tmp_path / "p.jsonl", 30)), *d)
    assert code == 0 and out.startswith("imported 30 points into task held-out (")
    assert counts(demo_dir)["points"] == before["points"] + 30
    code, out, _ = run(capsys, "feedback", "simulate", "--rate", "50", "--seconds", "0.3", *d)
    assert code == 0 and "new points to task digits" in out


def test_evolve_status_lineage_promote_rollback_export(demo_dir, tmp_path, capsys):
    d = ("--data-dir", str(demo_dir))
    code, out, _ = run(capsys, "evolve", "--steps", "300", *d)
    assert code == 0
    assert out.startswith("evolved 300 steps in ")
    assert "promoted child-" in out  # the first tick's best beats digits-0-4 on the gate

    code, out, _ = run(capsys, "status", *d)
    assert code == 0 and "evolution: 300 steps; archive 20/20 slots" in out
    assert "coverage: " in out and "gate score: digits 0." in out

    code, out, _ = run(capsys, "status", "--json", *d)
    status = json.loads(out)
    champion = status["champion"]
    assert status["steps"] == 300 and len(status["archive"]) == 20
    assert all(0 <= m["gate"]["digits"] <= 1 and 0 <= m["fitness"]["digits"] <= 1 for m in status["archive"])
    assert champion["version"] >= 2 and champion["gate"]["digits"] > 0.6
    assert 0 < status["coverage"]["all"] <= 1

    code, out, _ = run(capsys, "lineage", champion["model"], *d)
    assert code == 0
    assert out.startswith(f"{champion['model']} (split_slerp, generation ")
    assert "├── a: " in out and "split point " in out and "mixing ratio 0." in out
    assert "digits-0-4 (specialist, generation 0; source: sklearn load_digits" in out

    export = tmp_path / "export"
    code, out, _ = run(capsys, "export", champion["model"], str(export), *d)
    assert code == 0 and "licences: BSD-3-Clause" in out
    weights = (export / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == store_sha(demo_dir, champion["model_id"])
    card = (export / "README.md").read_text()
    runtime = open_runtime(Settings(data_dir=demo_dir))
    with runtime.sessions() as session:
        ancestors = store.lineage(session, champion["model_id"])
    for ancestor in ancestors:
        assert f"| {ancestor.depth} | {ancestor.model.name} | {ancestor.model.kind} | " in card
    assert "`BSD-3-Clause`" in card and "sklearn load_digits" in card
    code, _, err = run(capsys, "export", champion["model"], str(export), *d)
    assert code == 2 and "already exists" in err

    with runtime.sessions() as session:  # children evicted in the tick that made them keep lineage, not weights
        fileless = next(m for m in store.list_models(session) if not runtime.artifacts.exists(m.sha256))
    code, _, err = run(capsys, "export", fileless.name, str(tmp_path / "fileless"), *d)  # rebuilt from its lineage
    assert code == 0, err
    assert hashlib.sha256((tmp_path / "fileless" / "model.safetensors").read_bytes()).hexdigest() == fileless.sha256

    code, out, _ = run(capsys, "promote", "digits-5-9", "--reason", "try it", *d)
    version = champion["version"]
    assert code == 0 and out.startswith(
        f"promoted digits-5-9: champion version {version + 1} (was {champion['model']})"
    )
    code, out, _ = run(capsys, "rollback", *d)
    assert code == 0 and out.startswith(f"rolled back to {champion['model']}: champion version {version + 2}")


def store_sha(data_dir: Path, model_id: int) -> str:
    runtime = open_runtime(Settings(data_dir=data_dir))
    with runtime.sessions() as session:
        return store.get_model(session, model_id).sha256


def user_errors(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """argv (without --data-dir) and a piece of the expected message, per mistake."""
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps({"fc1.weight": [0.0]}))
    return {
        "register a pickle": (["register", str(pickled), "--name", "pickled"], "this is a pickle; only safetensors"),
        "register a missing file": (
            ["register", str(tmp_path / "nope.safetensors"), "--name", "x"],
            "no such file or directory",
        ),
        "lineage of an unknown model": (["lineage", "no-such-model"], "no model named 'no-such-model'"),
        "promote an unknown id": (["promote", "999"], "no model with id 999"),
        "promote the champion": (["promote", "digits-0-4"], "already the champion"),
        "rollback before any promotion": (["rollback"], "nothing to roll back"),
        "task with a bad scoring rule": (["task", "create", "t", "--scoring", "f1"], "accuracy, likelihood"),
        "task with a bad name": (["task", "create", "a b", "--scoring", "accuracy"], "task name 'a b'"),
        "task that exists": (["task", "create", "digits", "--scoring", "accuracy"], "already exists"),
        "feedback with a bad line": (
            ["feedback", "import", "digits", str(write_points(tmp_path / "bad.jsonl", 8, bad_line=5))],
            "bad.jsonl line 5: target: expected an integer label in [0, 10), got 12",
        ),
        "feedback for an unknown task": (
            ["feedback", "import", "nope", str(write_points(tmp_path / "ok.jsonl", 2))],
            "no task named 'nope'",
        ),
        "feedback from a missing file": (["feedback", "import", "digits", str(tmp_path / "none.jsonl")], "none.jsonl"),
        "export an unknown model": (["export", "no-such-model", str(tmp_path / "out")], "no model named"),
    }


def test_user_errors_are_one_line_exit_2_and_change_nothing(demo_dir, tmp_path, capsys):
    before = counts(demo_dir)
    for mistake, (argv, expected) in user_errors(tmp_path).items():
        code, _, err = run(capsys, *argv, "--data-dir", str(demo_dir))
        assert code == 2, mistake
        assert err.count("\n") == 1 and err.startswith("m2n2 ") and "Traceback" not in err, (mistake, err)
        assert expected in err, (mistake, err)
    assert counts(demo_dir) == before
    assert not (tmp_path / "out").exists()


def test_one_evolver_per_data_directory(demo_dir, capsys):
    with schedule.single_evolver(Settings(data_dir=demo_dir)):
        for command in ("evolve", "evolver"):
            code, _, err = run(capsys, command, "--data-dir", str(demo_dir))
            assert code == 2 and f"another evolver (pid {os.getpid()}) is running" in err
    assert counts(demo_dir)["models"] == 2


def test_commands_refuse_a_directory_without_an_ecosystem(tmp_path, settings_env, capsys):
    code, _, err = run(capsys, "status", "--data-dir", str(tmp_path / "empty"))
    assert code == 2 and err.count("\n") == 1 and "no ecosystem in " in err
    assert not (tmp_path / "empty").exists()
    settings_env.setenv("M2N2_EVOLUTION__INTERVAL_SECONDS", "-1")  # bad settings: named, not a traceback
    code, _, err = run(capsys, "status", "--data-dir", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "evolution.interval_seconds" in err


def test_console_script_prints_status_json_with_gate_scores(demo_dir):
    done = subprocess.run(
        [M2N2, "status", "--json", "--data-dir", str(demo_dir)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["champion"]["model"] == "digits-0-4"
    assert {m["model"]: m["champion"] for m in status["archive"]} == {"digits-0-4": True, "digits-5-9": False}
    assert all(isinstance(m["gate"]["digits"], float) for m in status["archive"])
    assert isinstance(status["champion"]["gate"]["digits"], float)
