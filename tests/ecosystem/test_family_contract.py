"""The family contract, checked the same way for every registered family.

Adding a family is one file plus its ``Case`` here: a config, checkpoints of its own layout,
labelled points, and checkpoints it must refuse. A registered family without a case fails.
"""

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from diffusion_models import clip_model, digits_classifier, tiny_pipeline, tiny_unet
from hf_models import tiny_llama
from safetensors.torch import save_file

from ecosystem import setup, store
from ecosystem.errors import RegistrationRefused
from ecosystem.families import FAMILIES, Family, get_family
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings
from ecosystem.specialists import register
from m2n2.checkpoint import open_source, write_safetensors


@dataclass
class Case:
    """What the contract tests need of one family."""

    options: dict  # ``m2n2 init`` options
    checkpoint: Callable[[Path, int], Path]  # writes a checkpoint (file or directory) of this family, by seed
    inputs: list
    targets: list
    refused: dict[str, Callable[[Path], Path]] = field(default_factory=dict)  # what -> writes a bad checkpoint


def classifier_case(root: Path) -> Case:
    layers = [5, 7, 3]

    def checkpoint(directory: Path, seed: int) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        space = get_family("classifier").space({"layers": layers})
        g = torch.Generator().manual_seed(seed)
        return write_safetensors(
            directory / "model.safetensors", space, ((s.name, torch.randn(s.shape, generator=g)) for s in space)
        )

    def wrong_shape(directory: Path) -> Path:
        directory.mkdir(parents=True)
        save_file({"fc1.weight": torch.zeros(7, 6), "fc1.bias": torch.zeros(7)}, str(directory / "model.safetensors"))
        return directory / "model.safetensors"

    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(6, layers[0], generator=g) * 3).tolist()
    return Case(
        {"layers": layers}, checkpoint, inputs, [0, 1, 2, 0, 1, 2], {"tensor 'fc1.weight' has shape": wrong_shape}
    )


def causal_lm_case(root: Path) -> Case:
    base = tiny_llama(root / "base")

    def checkpoint(directory: Path, seed: int) -> Path:
        return tiny_llama(directory, seed=seed)

    def wider(directory: Path) -> Path:
        return tiny_llama(directory, hidden_size=48)

    def no_config(directory: Path) -> Path:
        tiny_llama(directory)
        (directory / "config.json").unlink()
        return directory

    inputs = ["Question: what is two plus three? Answer:", "Hi", "Once upon a time"]
    return Case(
        {"base": str(base), "max_new_tokens": 4, "batch_size": 2},
        checkpoint,
        inputs,
        ["#### 5", "hello", "there"],
        {"hidden_size": wider, "config.json": no_config},
    )


def diffusion_case(root: Path) -> Case:
    base = tiny_pipeline(root / "base")
    options = {"base": str(base), "steps": 2, "batch_size": 2}
    options |= {"digits_dir": str(digits_classifier(root / "digits")), "clip_dir": str(clip_model(root / "clip"))}

    def checkpoint(directory: Path, seed: int) -> Path:
        return tiny_unet(directory, seed=seed)

    def no_config(directory: Path) -> Path:
        tiny_unet(directory)
        (directory / "config.json").unlink()
        return directory

    return Case(
        options,
        checkpoint,
        ["a handwritten seven", "手書き の 三", "the digit one"],
        ["7", "3", "1"],
        {"block_out_channels": lambda d: tiny_unet(d, channels=(8, 32)), "config.json": no_config},
    )


CASES: dict[str, Callable[[Path], Case]] = {
    "classifier": classifier_case,
    "causal-lm": causal_lm_case,
    "diffusion": diffusion_case,
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def contract(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """(family, case, runtime of a fresh ecosystem of it, its config)."""
    name = request.param
    if name not in CASES:
        pytest.fail(f"family {name!r} has no contract case: add one to {__file__}")
    root = tmp_path_factory.mktemp(name)
    case = CASES[name](root)
    runtime = open_runtime(Settings(data_dir=root / "data"))
    ecosystem = setup.create(runtime, name, case.options)
    yield get_family(name), case, runtime, dict(ecosystem.family_config)
    runtime.close()


def source_of(family: Family, config: dict, case: Case, directory: Path, seed: int):
    written = case.checkpoint(directory, seed)
    files = family.weight_files(config, written) if written.is_dir() else [written]
    return open_source(files)


def test_build_from_a_source_scores_in_unit_interval(contract, tmp_path: Path) -> None:
    family, case, _, config = contract
    module = family.build(config, source_of(family, config, case, tmp_path / "m", 1))
    assert isinstance(module, torch.nn.Module) and not module.training
    for rule in family.scoring_rules:
        scores = family.score(module, config, case.inputs, case.targets, rule)
        assert scores.shape == (len(case.inputs),), rule
        assert bool(((scores >= 0) & (scores <= 1)).all()), (rule, scores)


def test_answers_are_json_and_finite(contract, tmp_path: Path) -> None:
    family, case, _, config = contract
    module = family.build(config, source_of(family, config, case, tmp_path / "m", 2))
    for inputs in (family.smoke_inputs(config), case.inputs):
        answers = family.predict(module, config, inputs)
        assert len(answers) == len(inputs)
        decoded = json.loads(json.dumps(answers, allow_nan=False))
        assert all(isinstance(a, dict) for a in decoded)
    numbers = [x for a in answers for x in a.values() if isinstance(x, float)]
    assert all(math.isfinite(x) for x in numbers)


def test_export_round_trip_keeps_every_tensor(contract, tmp_path: Path) -> None:
    family, case, _, config = contract
    source = source_of(family, config, case, tmp_path / "m", 3)
    written = family.export(config, source, tmp_path / "export")
    assert written and all(p.is_file() for p in written)
    exported = open_source(family.weight_files(config, tmp_path / "export"))
    space = family.space(config)
    space.check_compatible(exported.space)
    for spec in space:
        assert torch.equal(exported.get(spec.name), source.get(spec.name).to(spec.dtype)), spec.name


def test_a_checkpoint_of_its_layout_registers(contract, tmp_path: Path) -> None:
    family, case, runtime, _ = contract
    result = register(runtime, case.checkpoint(tmp_path / "ok", 4), name=f"ok-{family.name}", registered_by="test")
    assert not result.duplicate and runtime.artifacts.verify(result.sha256)


def test_every_refusal_leaves_nothing_stored(contract, tmp_path: Path) -> None:
    family, case, runtime, config = contract

    def snapshot() -> tuple:
        with runtime.sessions() as session:
            models = [m.sha256 for m in store.list_models(session)]
        tmp = sorted(runtime.artifacts.tmp_dir.iterdir()) if runtime.artifacts.tmp_dir.is_dir() else []
        return models, runtime.artifacts.list_hashes(), tmp

    bad = {what: make(tmp_path / f"bad-{i}") for i, (what, make) in enumerate(case.refused.items())}
    bad["contains NaN"] = with_nan(family, config, case.checkpoint(tmp_path / "nan", 5))
    bad["only safetensors is accepted"] = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(2)}, bad["only safetensors is accepted"])
    before = snapshot()
    for what, path in bad.items():
        with pytest.raises(RegistrationRefused, match=what):
            register(runtime, path, name=f"bad-{family.name}", registered_by="test")
        assert snapshot() == before, what


def with_nan(family: Family, config: dict, checkpoint: Path) -> Path:
    """The checkpoint with a NaN in its first tensor."""
    weights = family.weight_files(config, checkpoint)[0] if checkpoint.is_dir() else checkpoint
    with open_source([weights]) as source:
        tensors = {name: source.get(name).clone() for name in source.space.names}
    first = next(iter(tensors))
    tensors[first][...] = float("nan")
    save_file(tensors, str(weights), metadata={"format": "pt"})
    return checkpoint
