"""A language-model ecosystem end to end on the command line: init from a base, register, evolve, export.

The children are merged lazily (files, not flat vectors); the export is what ``save_pretrained`` writes,
and ``from_pretrained`` of it gives the logits of the model the service would build.
"""

import json
from pathlib import Path

import pytest
import torch
from hf_models import fine_tune, populate_hub_cache, save_model, tiny_llama
from huggingface_hub import constants as hub_constants
from transformers import AutoModelForCausalLM, AutoTokenizer

from ecosystem import store
from ecosystem.cli import main
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings
from m2n2.checkpoint import read_header

MATH = [(f"Question: what is {a} plus {b}? Answer:", f" #### {a + b}") for a, b in ((2, 3), (1, 4), (3, 3))]
GREET = [("user: hello\nassistant:", " #### hi"), ("user: hi there\nassistant:", " #### hello")]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base and two specialists fine-tuned from it on different skills."""
    root = tmp_path_factory.mktemp("lm")
    tiny_llama(root / "base")
    fine_tune(root / "base", root / "math", MATH, steps=120)
    fine_tune(root / "base", root / "greet", GREET, steps=120)
    return root


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_register_evolve_export(models: Path, tmp_path: Path, settings_env, capsys) -> None:
    d = ("--data-dir", str(tmp_path / "eco"))
    code, out, err = run(capsys, "init", "--family", "causal-lm", "--base", str(models / "base"), *d)
    assert code == 0, err
    assert "created a causal-lm ecosystem" in out
    for name in ("math", "greet"):
        code, out, err = run(capsys, "register", str(models / name), "--name", name, "--licence", "apache-2.0", *d)
        assert code == 0 and f"registered {name}" in out, err
    assert run(capsys, "task", "create", "math", "--scoring", "exact_match", *d)[0] == 0
    points = tmp_path / "points.jsonl"
    points.write_text(
        "".join(json.dumps({"inputs": p, "target": t, "pool": "fitness"}) + "\n" for p, t in MATH + GREET)
    )
    assert run(capsys, "feedback", "import", "math", str(points), *d)[0] == 0

    code, out, err = run(capsys, "evolve", "--steps", "6", *d)
    assert code == 0, err
    code, out, _ = run(capsys, "status", "--json", *d)
    status = json.loads(out)
    assert status["steps"] == 6 and status["champion"] is not None
    runtime = open_runtime(Settings(data_dir=tmp_path / "eco"))
    with runtime.sessions() as session:
        children = store.list_models(session, kind="child")
        family, config, _ = runtime.family(session)
    assert children, "six lazy steps admit some children into a half-empty archive"
    assert not list(runtime.artifacts.tmp_dir.iterdir()), "no child file is left behind"

    child = children[-1].name
    code, out, err = run(capsys, "export", child, str(tmp_path / "export"), *d)
    assert code == 0, err
    exported = tmp_path / "export"
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in exported.iterdir()}
    ids = AutoTokenizer.from_pretrained(exported)(
        ["Question: what is 2 plus 3? Answer:"], return_tensors="pt"
    ).input_ids
    with torch.inference_mode():
        theirs = AutoModelForCausalLM.from_pretrained(exported).eval()(ids).logits
        with runtime.sessions() as session:
            source = runtime.source(store.model_by_name_or_id(session, child))
        ours = family.build(config, source)(ids).logits
    runtime.close()
    assert torch.equal(theirs, ours)


def test_a_different_architecture_is_refused_on_one_line(models: Path, tmp_path: Path, settings_env, capsys) -> None:
    d = ("--data-dir", str(tmp_path / "eco"))
    assert run(capsys, "init", "--family", "causal-lm", "--base", str(models / "base"), *d)[0] == 0
    tiny_llama(tmp_path / "deeper", num_hidden_layers=3)
    capsys.readouterr()  # the progress bars of building it
    code, _, err = run(capsys, "register", str(tmp_path / "deeper"), "--name", "deeper", *d)
    assert code == 2 and err.count("\n") == 1 and "num_hidden_layers" in err, err
    runtime = open_runtime(Settings(data_dir=tmp_path / "eco"))
    with runtime.sessions() as session:
        assert store.list_models(session) == []
    assert runtime.artifacts.list_hashes() == set()
    runtime.close()


def test_a_specialist_registers_by_hub_id_from_the_offline_cache(
    models: Path, tmp_path: Path, settings_env, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate_hub_cache(tmp_path / "cache", "tiny-org/math", models / "math")
    # huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE once, at import: set what it read.
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    d = ("--data-dir", str(tmp_path / "eco"))
    assert run(capsys, "init", "--family", "causal-lm", "--base", str(models / "base"), *d)[0] == 0
    code, out, err = run(capsys, "register", "tiny-org/math", "--name", "math", "--source", "hub", *d)
    assert code == 0 and "registered math" in out, err
    code, _, err = run(capsys, "register", "tiny-org/absent", "--name", "absent", *d)
    assert code == 2 and "tiny-org/absent" in err and "offline" in err, err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_evolution_scores_children_on_the_configured_device(
    models: Path, tmp_path: Path, settings_env, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M2N2_EVOLUTION__DEVICE", "cuda")
    d = ("--data-dir", str(tmp_path / "eco"))
    assert run(capsys, "init", "--family", "causal-lm", "--base", str(models / "base"), *d)[0] == 0
    for name in ("math", "greet"):
        assert run(capsys, "register", str(models / name), "--name", name, *d)[0] == 0
    assert run(capsys, "task", "create", "math", "--scoring", "exact_match", *d)[0] == 0
    points = tmp_path / "points.jsonl"
    points.write_text("\n".join(json.dumps({"inputs": p, "target": t, "pool": "fitness"}) for p, t in MATH) + "\n")
    assert run(capsys, "feedback", "import", "math", str(points), *d)[0] == 0
    code, out, err = run(capsys, "evolve", "--steps", "3", *d)
    assert code == 0 and "evolved 3 steps" in out, err


def test_a_sharded_bfloat16_specialist_keeps_its_dtype(models: Path, tmp_path: Path, settings_env, capsys) -> None:
    model = AutoModelForCausalLM.from_pretrained(models / "math").to(torch.bfloat16)
    save_model(tmp_path / "math-bf16", model, AutoTokenizer.from_pretrained(models / "math"), max_shard_size="40KB")
    assert len(list((tmp_path / "math-bf16").glob("model-*.safetensors"))) > 1
    d = ("--data-dir", str(tmp_path / "eco"))
    assert run(capsys, "init", "--family", "causal-lm", "--base", str(models / "base"), *d)[0] == 0
    code, _, err = run(capsys, "register", str(tmp_path / "math-bf16"), "--name", "math-bf16", *d)
    assert code == 0, err
    runtime = open_runtime(Settings(data_dir=tmp_path / "eco"))
    with runtime.sessions() as session:
        (stored,) = store.list_models(session)
        space = runtime.family(session)[2]
    found, _ = read_header(runtime.artifacts.path_for(stored.sha256))
    runtime.close()
    assert sorted(found.names) == sorted(space.names)  # the shards became one artifact
    assert {spec.dtype for spec in found} == {torch.bfloat16}
