"""merge(): whole models from safetensors files, streamed tensor by tensor."""

import json

import pytest
import torch
from safetensors.torch import save_file

from m2n2.checkpoint import SafetensorsSource, StateDictSource, load_state_dict, read_header
from m2n2.errors import IncompatibleModels, M2N2Error, UnknownMergeMethod
from m2n2.merge import merge
from m2n2.methods import InvalidMergeParameter, available_methods, get_method


def tiny_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """Three tensors, one of them float16, like a picollama's smallest corner."""
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(5, 4, generator=g),
        "layer.weight": torch.randn(4, 4, generator=g).half(),
        "layer.bias": torch.randn(4, generator=g),
    }


@pytest.fixture
def files(tmp_path):
    """Three model files and a base file, written as users write them (safetensors.torch.save_file)."""
    paths = []
    for seed, name in enumerate(["a", "b", "c", "base"]):
        path = tmp_path / f"{name}.safetensors"
        save_file(tiny_state_dict(seed), str(path))
        paths.append(path)
    return paths


def sources(paths):
    return [SafetensorsSource(p) for p in paths]


@pytest.mark.parametrize("name", available_methods())
def test_every_method_writes_a_valid_file(files, tmp_path, name):
    *models, base = sources(files)
    models = models[:2]
    out = tmp_path / f"{name}.safetensors"
    merged = merge(models, name, base=base if get_method(name).needs_base else None, out=out)
    space, metadata = read_header(out)
    assert space == models[0].space
    assert [s.dtype for s in space] == [s.dtype for s in models[0].space]
    assert metadata["merge_method"] == name and metadata["format"] == "pt"
    assert isinstance(merged, SafetensorsSource) and merged.path == out
    assert all(torch.isfinite(merged.get(s.name).float()).all() for s in space)
    assert list(tmp_path.glob(".*.tmp")) == []  # the temporary file was renamed away


def test_linear_merge_of_three_files_is_their_mean(files, tmp_path):
    models = sources(files[:3])
    merged = merge(models, "linear", out=tmp_path / "soup.safetensors")
    for spec in models[0].space:
        expected = sum(m.get(spec.name).float() for m in models) / 3
        got = merged.get(spec.name)
        assert got.dtype == spec.dtype
        tol = 1e-3 if spec.dtype == torch.float16 else 1e-6
        torch.testing.assert_close(got.float(), expected, atol=tol, rtol=tol)


def test_without_out_the_merge_stays_in_memory(files):
    models = sources(files[:2])
    merged = merge(models, "slerp", t=0.3)
    assert isinstance(merged, StateDictSource)
    assert merged.space == models[0].space
    assert [s.dtype for s in merged.space] == [s.dtype for s in models[0].space]


def test_params_and_seed_are_recorded_in_the_metadata(files, tmp_path):
    *models, base = sources(files)
    merge(models, "dare", base=base, out=tmp_path / "m.safetensors", seed=5, density=0.3, combine="ties")
    _, metadata = read_header(tmp_path / "m.safetensors")
    assert json.loads(metadata["merge_params"]) == {"density": 0.3, "scale": 1.0, "combine": "ties"}
    assert metadata["seed"] == "5"


def test_dare_is_reproducible_from_the_seed(files):
    *models, base = sources(files)
    first, again, other = (load_state_dict(merge(models, "dare", base=base, seed=s)) for s in (1, 1, 2))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_incompatible_models_name_the_tensor(files, tmp_path):
    odd = tiny_state_dict(9)
    odd["layer.bias"] = torch.zeros(5)
    save_file(odd, str(tmp_path / "odd.safetensors"))
    models = [*sources(files[:2]), SafetensorsSource(tmp_path / "odd.safetensors")]
    with pytest.raises(IncompatibleModels, match=r"model #2: tensor 'layer.bias' has shape \[5\], expected \[4\]"):
        merge(models, "linear")


def test_incompatible_base_is_named(files):
    models = sources(files[:2])
    state = load_state_dict(SafetensorsSource(files[3]))  # file order: save_file sorts by dtype, then name
    del state["layer.weight"]
    with pytest.raises(IncompatibleModels, match=r"base model is missing tensor 'layer\.weight'"):
        merge(models, "ties", base=StateDictSource(state))


def test_missing_base_raises(files):
    with pytest.raises(M2N2Error, match="'task_arithmetic' needs a base model"):
        merge(sources(files[:2]), "task_arithmetic")


def test_a_base_the_method_does_not_use_raises(files):
    *models, base = sources(files)
    with pytest.raises(M2N2Error, match="'linear' does not use a base model"):
        merge(models, "linear", base=base)


def test_unknown_param_is_named_with_the_accepted_ones(files):
    *models, base = sources(files)
    with pytest.raises(InvalidMergeParameter, match=r"no parameter 'densty'; accepted parameters: density, scale$"):
        merge(models, "ties", base=base, densty=0.5)


def test_unknown_method_raises(files):
    with pytest.raises(UnknownMergeMethod, match="available: dare, linear"):
        merge(sources(files[:2]), "sloop")


def test_no_models_raises():
    with pytest.raises(M2N2Error, match="at least one model"):
        merge([], "linear")


def test_a_failed_merge_leaves_no_file(files, tmp_path):
    out = tmp_path / "never.safetensors"
    with pytest.raises(M2N2Error, match="exactly 2 models"):
        merge(sources(files[:3]), "slerp", out=out)
    assert not out.exists() and list(tmp_path.glob(".*.tmp")) == []


def test_integer_tensors_are_copied_not_averaged():
    def model(x: float, steps: int) -> StateDictSource:
        return StateDictSource({"w": torch.full((2,), x), "num_batches_tracked": torch.tensor([steps])})

    merged = merge([model(1.0, 3), model(2.0, 4)], "linear")
    assert torch.equal(merged.get("num_batches_tracked"), torch.tensor([3]))  # model #0's, not 3.5 -> 3
    torch.testing.assert_close(merged.get("w"), torch.full((2,), 1.5))
