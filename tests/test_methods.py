"""The merge-method registry: one conformance suite over every method, then hand-computed cases."""

import math

import pytest
import torch

from m2n2.errors import M2N2Error, UnknownMergeMethod
from m2n2.methods import (
    DuplicateMergeMethod,
    InvalidMergeParameter,
    MergeMethod,
    available_methods,
    get_method,
    merge_method,
)
from m2n2.methods import registry as registry_module
from m2n2.methods.ties import SAMPLE, SELECT_DIRECT, kth_largest, trim


def run(name: str, tensors: list[torch.Tensor], base: torch.Tensor | None = None, seed: int = 0, **params):
    """Call a registered method the way merge() does, with a fresh seeded generator."""
    return get_method(name)(tensors, base, generator=torch.Generator().manual_seed(seed), **params)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def random_inputs(name: str, n_models: int, shape: tuple[int, ...] = (3, 4), seed: int = 0):
    """n_models random tensors, plus a base when the method needs one."""
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(shape, generator=g) for _ in range(n_models)]
    base = torch.randn(shape, generator=g) if get_method(name).needs_base else None
    return tensors, base


# --- conformance: every registered method, in the spirit of scikit-learn's parametrize_with_checks ---


@pytest.mark.parametrize("name", available_methods())
class TestConformance:
    def test_declares_itself(self, name):
        method = get_method(name)
        assert method.name == name
        assert method.reference_url.startswith("https://")
        assert method.description and "\n" not in method.description
        assert all(p.default is not p.empty for p in method.params)

    def test_accepts_a_single_model(self, name):
        tensors, base = random_inputs(name, 1)
        if name == "slerp":  # two-model-only by definition: it must say so, not crash
            with pytest.raises(M2N2Error, match="exactly 2 models, got 1"):
                run(name, tensors, base)
            return
        out = run(name, tensors, base)
        assert out.shape == tensors[0].shape and out.dtype == torch.float32
        assert torch.isfinite(out).all()

    @pytest.mark.parametrize("shape", [(), (0,), (2, 3)])
    def test_identical_inputs_give_the_same_tensor(self, name, shape):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        n = 2 if name == "slerp" else 3
        base = x.clone() if get_method(name).needs_base else None
        out = run(name, [x.clone() for _ in range(n)], base)
        torch.testing.assert_close(out, x)

    def test_deterministic_for_a_fixed_seed(self, name):
        tensors, base = random_inputs(name, 2, shape=(64,))
        assert torch.equal(run(name, tensors, base, seed=7), run(name, tensors, base, seed=7))

    def test_leaves_its_inputs_alone(self, name):
        # StateDictSource hands out the caller's own tensors and .float() of float32 is a no-op,
        # so an in-place op inside a method would silently edit the user's model.
        tensors, base = random_inputs(name, 2)
        before = [x.clone() for x in tensors] + ([base.clone()] if base is not None else [])
        run(name, tensors, base)
        after = tensors + ([base] if base is not None else [])
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))

    def test_rejects_an_unknown_parameter(self, name):
        tensors, base = random_inputs(name, 2)
        with pytest.raises(InvalidMergeParameter, match="no parameter 'bogus'"):
            run(name, tensors, base, bogus=1)


# --- hand-computed cases ---


def test_linear_is_the_plain_mean_by_default():
    torch.testing.assert_close(run("linear", [t(1, 2), t(3, 6)]), t(2, 4))


def test_linear_normalises_its_weights():
    # weights (1, 3) -> (0.25, 0.75): 0.25*1 + 0.75*3 = 2.5, 0.25*2 + 0.75*6 = 5
    torch.testing.assert_close(run("linear", [t(1, 2), t(3, 6)], weights=(1.0, 3.0)), t(2.5, 5))


@pytest.mark.parametrize("weights", [(1.0,), (1.0, -1.0), (1.0, math.nan)])
def test_linear_rejects_bad_weights(weights):
    with pytest.raises(InvalidMergeParameter, match="weights"):
        run("linear", [t(1, 2), t(3, 6)], weights=weights)


def test_slerp_endpoints():
    a, b = t(1, 2, 3), t(-1, 0, 4)
    torch.testing.assert_close(run("slerp", [a, b], t=0.0), a)
    torch.testing.assert_close(run("slerp", [a, b], t=1.0), b)


def test_slerp_halfway_between_orthogonal_unit_vectors():
    a, b = t(1, 0), t(0, 1)
    # sin(pi/4) / sin(pi/2) = 1/sqrt(2) on each
    torch.testing.assert_close(run("slerp", [a, b], t=0.5), (a + b) / math.sqrt(2))


def test_slerp_falls_back_to_a_line_for_parallel_tensors():
    torch.testing.assert_close(run("slerp", [t(1, 2), t(2, 4)], t=0.25), t(1.25, 2.5))


def test_slerp_rejects_three_models_and_t_out_of_range():
    with pytest.raises(M2N2Error, match="exactly 2 models, got 3"):
        run("slerp", [t(1), t(2), t(3)])
    with pytest.raises(InvalidMergeParameter, match="t must be in"):
        run("slerp", [t(1), t(2)], t=1.5)


def test_task_arithmetic_adds_scaled_task_vectors():
    base = t(1, 1, 1)
    models = [t(2, 1, 0), t(1, 3, 1)]  # task vectors (1, 0, -1) and (0, 2, 0), summed (1, 2, -1)
    torch.testing.assert_close(run("task_arithmetic", models, base, scale=0.5), t(1.5, 2, 0.5))


@pytest.mark.parametrize("name", ["task_arithmetic", "ties", "dare"])
def test_base_methods_say_they_need_a_base(name):
    with pytest.raises(M2N2Error, match="needs a base model"):
        run(name, [t(1, 2)], None)


# Three task vectors over five entries; density 0.4 keeps round(0.4 * 5) = 2 entries each.
TIES_BASE = t(1, 1, 1, 1, 1)
TIES_TVS = [t(3, -1, 0.5, 2, 0), t(-1, -4, 1, -0.5, 2), t(-2, 1, 0, 3, -0.1)]


def test_ties_trims_elects_and_takes_the_disjoint_mean():
    # trimmed:  (3, 0, 0, 2, 0), (0, -4, 0, 0, 2), (-2, 0, 0, 3, 0)
    # sums:     1 -> +, -4 -> -, 0 -> + (nothing votes), 5 -> +, 2 -> +
    # agreeing: {3}, {-4}, {}, {2, 3}, {2}  -> means (3, -4, 0, 2.5, 2)
    models = [TIES_BASE + tv for tv in TIES_TVS]
    torch.testing.assert_close(run("ties", models, TIES_BASE, density=0.4), t(4, -3, 1, 3.5, 3))
    torch.testing.assert_close(run("ties", models, TIES_BASE, density=0.4, scale=0.5), t(2.5, -1, 1, 2.25, 2))


def test_ties_zero_sum_elects_plus_as_mergekit_does():
    base = t(0)
    torch.testing.assert_close(run("ties", [t(2), t(-2)], base, density=1.0), t(2))


def test_ties_averages_rather_than_sums_agreeing_vectors():
    base = t(0, 0)
    torch.testing.assert_close(run("ties", [t(1, 2), t(3, 4)], base, density=1.0), t(2, 3))


@pytest.mark.parametrize("numel", [7, SELECT_DIRECT + 3])  # below and above the size where trim brackets by sampling
@pytest.mark.parametrize("density", [0.01, 0.5])
@pytest.mark.parametrize("ties_at_threshold", [False, True])
def test_trim_keeps_what_a_stable_sort_by_magnitude_keeps(numel, density, ties_at_threshold):
    g = torch.Generator().manual_seed(numel)
    tvs = torch.randn(2, numel, generator=g)
    if ties_at_threshold:
        tvs = (tvs * 4).round() / 4  # a handful of distinct magnitudes: the k-th largest is shared widely
    k = max(1, round(density * numel))
    top = tvs.abs().argsort(dim=1, descending=True, stable=True)[:, :k]
    expected = torch.zeros_like(tvs).scatter_(1, top, 1.0) * tvs
    assert torch.equal(trim(tvs, density), expected)


def test_kth_largest_falls_back_when_the_sample_misleads():
    values = torch.zeros(20 * SAMPLE)  # the sample takes every 20th entry: all of them even
    values[1::2] = torch.arange(1, 10 * SAMPLE + 1, dtype=torch.float32)  # so it sees only the zeros
    assert float(kth_largest(values, 10)) == 10 * SAMPLE - 9


@pytest.mark.parametrize("name", ["ties", "dare"])
@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_density_must_be_in_half_open_unit_interval(name, density):
    with pytest.raises(InvalidMergeParameter, match=r"density must be in \(0, 1\]"):
        run(name, [t(1, 2)], t(0, 0), density=density)


def test_dare_with_density_one_is_task_arithmetic():
    models = [TIES_BASE + tv for tv in TIES_TVS]
    expected = run("task_arithmetic", models, TIES_BASE, scale=0.7)
    torch.testing.assert_close(run("dare", models, TIES_BASE, density=1.0, scale=0.7), expected)


def test_dare_ties_with_density_one_is_ties_without_trimming():
    models = [TIES_BASE + tv for tv in TIES_TVS]
    expected = run("ties", models, TIES_BASE, density=1.0)
    torch.testing.assert_close(run("dare", models, TIES_BASE, density=1.0, combine="ties"), expected)


def test_dare_drops_and_rescales_by_one_over_density():
    base, tv = torch.zeros(256), torch.arange(1.0, 257.0)
    delta = run("dare", [base + tv], base, density=0.25, seed=3) - base  # (256,)
    kept = delta != 0
    torch.testing.assert_close(delta[kept], 4 * tv[kept])  # survivors scaled by 1/0.25
    assert 0.1 < kept.float().mean().item() < 0.4  # about a quarter survive


def test_dare_different_seeds_give_different_masks():
    tensors, base = random_inputs("dare", 2, shape=(64,))
    assert not torch.equal(run("dare", tensors, base, seed=1), run("dare", tensors, base, seed=2))


def test_dare_rejects_an_unknown_combine():
    with pytest.raises(InvalidMergeParameter, match="combine must be one of linear, ties"):
        run("dare", [t(1)], t(0), combine="della")


# --- the registry itself ---


def test_available_methods_are_sorted_and_include_the_built_ins():
    names = available_methods()
    assert names == sorted(names)
    assert {"linear", "slerp", "task_arithmetic", "ties", "dare"} <= set(names)


def test_parameters_come_from_the_keyword_only_signature():
    assert get_method("ties").defaults == {"density": 0.2, "scale": 1.0}
    assert get_method("dare").defaults == {"density": 0.5, "scale": 1.0, "combine": "linear"}
    assert get_method("linear").defaults == {"weights": None}
    assert get_method("task_arithmetic").needs_base and not get_method("slerp").needs_base


def test_unknown_name_lists_the_available_methods():
    with pytest.raises(UnknownMergeMethod, match="unknown merge method 'sloop'; available: dare, linear") as info:
        get_method("sloop")
    assert info.value.available == available_methods()


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry, so test registrations do not leak into other tests."""
    monkeypatch.setattr(registry_module, "_METHODS", dict(registry_module._METHODS))


def test_duplicate_registration_raises(scratch_registry):
    def again(tensors, base, *, generator):
        """A second linear."""
        return tensors[0]

    with pytest.raises(DuplicateMergeMethod, match="'linear' is already registered"):
        merge_method("linear", "https://example.org")(again)
    assert issubclass(DuplicateMergeMethod, M2N2Error)


def test_registering_a_new_method_derives_its_schema(scratch_registry):
    @merge_method("first_model", "https://example.org")
    def first_model(tensors, base, *, generator, index: int = 0):
        """The chosen model's tensor, unchanged."""
        return tensors[index].float()

    method = get_method("first_model")
    assert isinstance(method, MergeMethod)
    assert method.defaults == {"index": 0} and method.description == "The chosen model's tensor, unchanged."
    assert "first_model" in available_methods()


def _plain(tensors, base, *, generator):
    """Model 0, unchanged."""
    return tensors[0]


def _no_doc(tensors, base, *, generator):
    return tensors[0]


def _no_default(tensors, base, *, generator, alpha):
    """Needs alpha, offers no default."""
    return tensors[0]


def _no_generator(tensors, base):
    """Forgets the generator."""
    return tensors[0]


def _reserved(tensors, base, *, generator, seed=0):
    """Would shadow merge()'s own seed."""
    return tensors[0]


@pytest.mark.parametrize(
    ("name", "fn", "error"),
    [
        ("Bad-Name", _plain, ValueError),
        ("no_doc", _no_doc, TypeError),
        ("no_default", _no_default, TypeError),
        ("no_generator", _no_generator, TypeError),
        ("reserved", _reserved, TypeError),
    ],
)
def test_malformed_registrations_are_refused(scratch_registry, name, fn, error):
    with pytest.raises(error):
        merge_method(name, "https://example.org")(fn)
    assert name not in available_methods()
