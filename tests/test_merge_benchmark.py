"""The merge benchmark's own jobs on a tiny checkpoint trio, against SLERP and TIES computed directly in memory."""

import math
import sys

import pytest
import torch
from safetensors.torch import load_file

from benchmarks import merge_jobs
from benchmarks.merge import agreement, checkpoints, gpt2, measured, safetensors_in
from benchmarks.read_write import read_write


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    """A random 1-layer GPT-2 base and two fine-tunes of it: their safetensors files and state dicts."""
    dirs = checkpoints(gpt2(layers=1, hidden=32, heads=2, vocab=300), tmp_path_factory.mktemp("cache"))
    files = {name: d / "model.safetensors" for name, d in dirs.items()}
    return files, {name: load_file(path) for name, path in files.items()}


def slerp_direct(a: torch.Tensor, b: torch.Tensor, cos: float, t: float) -> torch.Tensor:
    omega = math.acos(cos)
    return (math.sin((1 - t) * omega) * a.double() + math.sin(t * omega) * b.double()) / math.sin(omega)


def cos_direct(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    return float(a @ b / (a.norm() * b.norm()))


def test_slerp_job_takes_one_angle_per_tensor(trio, tmp_path):
    files, sd = trio
    got = load_file(merge_jobs.slerp(tmp_path / "m.safetensors", files["a"], files["b"]))
    assert got.keys() == sd["a"].keys()
    for name, a in sd["a"].items():
        b = sd["b"][name]
        expected = slerp_direct(a, b, cos_direct(a, b), merge_jobs.SLERP_T)
        torch.testing.assert_close(got[name].double(), expected, rtol=1e-5, atol=1e-7)


def test_crossover_job_takes_one_angle_for_the_whole_model(trio, tmp_path):
    files, sd = trio
    got = load_file(merge_jobs.crossover(tmp_path / "m.safetensors", files["a"], files["b"]))
    flat_a = torch.cat([t.reshape(-1) for t in sd["a"].values()])
    flat_b = torch.cat([t.reshape(-1) for t in sd["b"].values()])
    cos = cos_direct(flat_a, flat_b)
    per_tensor = [cos_direct(sd["a"][n], sd["b"][n]) for n in sd["a"]]
    assert max(abs(c - cos) for c in per_tensor) > 1e-3  # the two SLERPs really differ here
    for name, a in sd["a"].items():
        expected = slerp_direct(a, sd["b"][name], cos, merge_jobs.SLERP_T)
        torch.testing.assert_close(got[name].double(), expected, rtol=1e-5, atol=1e-7)


def test_ties_job_trims_elects_and_averages(trio, tmp_path):
    files, sd = trio
    got = load_file(merge_jobs.ties(tmp_path / "m.safetensors", files["base"], files["a"], files["b"]))
    for name, base in sd["base"].items():
        tvs = torch.stack([sd[m][name] - base for m in ("a", "b")]).reshape(2, -1)  # (2, numel)
        k = round(merge_jobs.TIES_DENSITY * tvs.shape[1])
        kept = torch.zeros_like(tvs).scatter(1, tvs.abs().topk(k, dim=1).indices, 1.0) * tvs
        elected = torch.where(kept.sum(0) >= 0, 1.0, -1.0)
        agree = (kept.sign() == elected).float()
        mean = (kept * agree).sum(0) / agree.sum(0).clamp(min=1)
        expected = base + mean.reshape(base.shape)
        torch.testing.assert_close(got[name], expected, rtol=1e-5, atol=1e-7)


def test_agreement_counts_entries_beyond_tolerance(trio, tmp_path):
    files, sd = trio
    first = merge_jobs.slerp(tmp_path / "x.safetensors", files["a"], files["b"])
    assert agreement(first, first)["beyond_tolerance"] == 0
    other = merge_jobs.slerp(tmp_path / "y.safetensors", files["a"], files["b"], t=0.31)
    report = agreement(first, other)
    assert report["beyond_tolerance"] > 0 and not report["beyond_tolerance_explained"]
    assert report["elements"] == sum(t.numel() for t in sd["a"].values())


def test_read_write_bound_reads_all_inputs_and_writes_the_first(trio, tmp_path):
    files, _ = trio
    n = read_write(tmp_path / "copy", [files["a"], files["b"], files["base"]])
    assert n == sum(files[k].stat().st_size for k in ("a", "b", "base"))
    assert (tmp_path / "copy").read_bytes() == files["a"].read_bytes()


def test_measured_peak_rss_is_the_childs_not_the_benchmarks(tmp_path):
    ballast = torch.ones(300 << 18)  # 300 MiB in this process, which a child's figure must not include
    _, small = measured([sys.executable, "-S", "-c", "pass"], tmp_path / "log")
    _, large = measured([sys.executable, "-S", "-c", "x = bytearray(200 << 20)"], tmp_path / "log")
    assert small < 100 << 20 < 200 << 20 < large
    del ballast


def test_safetensors_in_refuses_a_directory_without_exactly_one_file(tmp_path):
    with pytest.raises(RuntimeError, match="expected one safetensors file"):
        safetensors_in(tmp_path)
