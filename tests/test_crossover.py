"""Split-point SLERP crossover on flat vectors and tensor by tensor, and lazy genomes on disk."""

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from m2n2.checkpoint import SafetensorsSource, StateDictSource, read_header, write_safetensors
from m2n2.crossover import slerp_weights, split_slerp, split_slerp_tensors
from m2n2.genomes import FlatGenomes, LazyGenomes
from m2n2.space import ParamSpace

SQRT3_2 = math.sqrt(3) / 2


def test_slerp_weights_by_hand() -> None:
    # cos = 0 -> Omega = pi/2: weights sin((1 - t) pi/2), sin(t pi/2)
    assert slerp_weights(0.0, 1 / 3) == pytest.approx((SQRT3_2, 0.5))
    assert slerp_weights(0.0, 2 / 3) == pytest.approx((0.5, SQRT3_2))
    # cos = 1/2 -> Omega = pi/3; t = 1/2: sin(pi/6) / sin(pi/3) = 1/sqrt(3) on each side
    assert slerp_weights(0.5, 0.5) == pytest.approx((1 / math.sqrt(3), 1 / math.sqrt(3)))
    # endpoints are the parents
    assert slerp_weights(0.3, 0.0) == pytest.approx((1.0, 0.0))
    assert slerp_weights(0.3, 1.0) == pytest.approx((0.0, 1.0), abs=1e-12)


@pytest.mark.parametrize("cos", [1.0, -1.0, 1.0 + 1e-9, -1.0 - 1e-9])
def test_slerp_weights_fall_back_to_linear_when_parallel(cos: float) -> None:
    assert slerp_weights(cos, 0.25) == (0.75, 0.25)


def test_split_at_zero_uses_one_minus_mixing_ratio_everywhere() -> None:
    a, b = torch.tensor([1.0, 0.0, 2.0, 0.0]), torch.tensor([0.0, 3.0, 0.0, 1.0])  # orthogonal: cos = 0
    wa, wb = slerp_weights(0.0, 1 - 2 / 3)  # t = 1/3 -> (sqrt(3)/2, 1/2)
    assert (wa, wb) == pytest.approx((SQRT3_2, 0.5))
    torch.testing.assert_close(split_slerp(a, b, 2 / 3, 0), wa * a + wb * b)
    torch.testing.assert_close(split_slerp(a, b, 2 / 3, 0), torch.tensor([SQRT3_2, 1.5, 2 * SQRT3_2, 0.5]))


def test_split_at_dim_uses_mixing_ratio_everywhere() -> None:
    a, b = torch.tensor([1.0, 0.0, 2.0, 0.0]), torch.tensor([0.0, 3.0, 0.0, 1.0])
    wa, wb = slerp_weights(0.0, 2 / 3)  # t = 2/3 -> (1/2, sqrt(3)/2)
    torch.testing.assert_close(split_slerp(a, b, 2 / 3, 4), wa * a + wb * b)
    torch.testing.assert_close(split_slerp(a, b, 2 / 3, 4), torch.tensor([0.5, 3 * SQRT3_2, 1.0, SQRT3_2]))


def test_one_global_angle_not_per_segment() -> None:
    # Whole vectors are orthogonal (Omega = pi/2), but the first segment is parallel and the
    # second antiparallel: per-segment SLERP would interpolate linearly and give [1, 0, 1/3, 0].
    a, b = torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, -1.0, 0.0])
    child = split_slerp(a, b, 1 / 3, 2)
    # before the split t = 1/3: (sqrt(3)/2, 1/2) -> sqrt(3)/2 + 1/2
    # from the split on t = 2/3: (1/2, sqrt(3)/2) -> 1/2 - sqrt(3)/2
    torch.testing.assert_close(child, torch.tensor([SQRT3_2 + 0.5, 0.0, 0.5 - SQRT3_2, 0.0]))


def test_identical_parents_return_the_parent() -> None:
    a = torch.randn(50, generator=torch.Generator().manual_seed(0))
    for ratio, split in ((0.3, 17), (0.9, 0), (0.01, 50)):
        torch.testing.assert_close(split_slerp(a, a.clone(), ratio, split), a, atol=1e-6, rtol=1e-6)


def test_parallel_parents_interpolate_linearly() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # b = 2a: child = (1 - t) a + t 2a = (1 + t) a; t = .25 then .75
    torch.testing.assert_close(split_slerp(a, 2 * a, 0.25, 2), torch.tensor([1.25, 2.5, 5.25, 7.0]))


def test_antiparallel_parents_interpolate_linearly() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # b = -a: child = (1 - 2t) a; t = .25 then .75 -> .5 a then -.5 a
    child = split_slerp(a, -a, 0.25, 2)
    assert torch.isfinite(child).all()
    torch.testing.assert_close(child, torch.tensor([0.5, 1.0, -1.5, -2.0]))
    # b = -2a: child = (1 - 3t) a; t = .5 everywhere -> -.5 a
    torch.testing.assert_close(split_slerp(a, -2 * a, 0.5, 4), -0.5 * a)


def test_zero_parent_has_no_angle_and_interpolates() -> None:
    b = torch.tensor([2.0, -4.0])
    torch.testing.assert_close(split_slerp(torch.zeros(2), b, 0.25, 2), 0.25 * b)


# --- the tensor-by-tensor path --------------------------------------------------------------------


def make_state_dict(seed: int, dtype16: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Tiny multi-tensor model: 12 + 4 + 1 + 6 = 23 parameters, one 0-dim tensor."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(3, 4, generator=gen),
        "b": torch.randn(4, generator=gen).to(dtype16),
        "scale": torch.randn((), generator=gen),
        "v": torch.randn(2, 3, generator=gen),
    }


def flat_child(space: ParamSpace, tensors) -> torch.Tensor:
    return space.flatten(dict(tensors))


@pytest.mark.parametrize("split", [0, 5, 12, 14, 16, 17, 20, 23])  # inside, at boundaries, 0 and D
def test_split_slerp_tensors_matches_flat_split_slerp(split: int) -> None:
    sa, sb = make_state_dict(0), make_state_dict(1)
    space = ParamSpace.from_state_dict(sa)
    assert space.dim == 23 and [s.offset for s in space] == [0, 12, 16, 17]
    lazy = flat_child(space, split_slerp_tensors(StateDictSource(sa), StateDictSource(sb), space, 0.3, split))
    flat = split_slerp(space.flatten(sa), space.flatten(sb), 0.3, split)
    torch.testing.assert_close(lazy, flat, atol=1e-6, rtol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 23), st.floats(0, 1), st.integers(0, 100))
def test_split_slerp_tensors_matches_flat_for_any_split(split: int, ratio: float, seed: int) -> None:
    sa, sb = make_state_dict(seed), make_state_dict(seed + 1)
    space = ParamSpace.from_state_dict(sa)
    lazy = flat_child(space, split_slerp_tensors(StateDictSource(sa), StateDictSource(sb), space, ratio, split))
    flat = split_slerp(space.flatten(sa), space.flatten(sb), ratio, split)
    torch.testing.assert_close(lazy, flat, atol=1e-6, rtol=1e-5)


# --- property: every child lies elementwise on the SLERP arc ----------------------------------------

# multiples of 1/8 in [-10, 10]: dot products are exact in float32 and float64, so the test and
# the library see the same cosine, and exactly (anti)parallel pairs come up often
grid = st.integers(-80, 80).map(lambda k: k / 8)


@st.composite
def parent_pairs(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    dim = draw(st.integers(1, 8))
    a = draw(st.lists(grid, min_size=dim, max_size=dim))
    if draw(st.booleans()):
        b = draw(st.lists(grid, min_size=dim, max_size=dim))
    else:  # an exact multiple: parallel, antiparallel or zero
        k = draw(st.sampled_from([2.0, 0.5, -1.0, -2.0, 0.0, 1.0]))
        b = [k * x for x in a]
    return a, b


@settings(max_examples=50, deadline=None)
@given(parent_pairs(), st.floats(0, 1), st.data())
def test_child_lies_elementwise_on_the_slerp_arc(pair: tuple[list[float], list[float]], ratio: float, data) -> None:
    a_list, b_list = pair
    dim = len(a_list)
    split = data.draw(st.integers(0, dim))
    a, b = torch.tensor(a_list), torch.tensor(b_list)
    child = split_slerp(a, b, ratio, split)
    dot = sum(x * y for x, y in zip(a_list, b_list, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a_list)), math.sqrt(sum(y * y for y in b_list))
    cos = dot / (na * nb) if na * nb > 0 else 1.0
    for i in range(dim):
        t = ratio if i < split else 1.0 - ratio
        wa, wb = slerp_weights(cos, t)
        if abs(cos) == 1.0:  # (anti)parallel: the linear weights
            assert (wa, wb) == (1.0 - t, t)
        expected = wa * a_list[i] + wb * b_list[i]
        tol = 1e-5 * (abs(wa * a_list[i]) + abs(wb * b_list[i])) + 1e-6
        assert abs(float(child[i]) - expected) <= tol


# --- genomes --------------------------------------------------------------------------------------


def test_flat_genomes_without_parent_b_copies_parent_a() -> None:
    a = torch.arange(5.0)
    child = FlatGenomes(5).child(a, None, 0.5, 2, 0.0, torch.Generator())
    assert torch.equal(child, a) and child.data_ptr() != a.data_ptr()


@pytest.fixture
def parent_files(tmp_path: Path) -> tuple[Path, Path, ParamSpace]:
    """Two parents on disk (given to LazyGenomes, so never its to delete), one tensor in float16."""
    paths = []
    for seed in (0, 1):
        sd = make_state_dict(seed, dtype16=torch.float16)
        space = ParamSpace.from_state_dict(sd)
        paths.append(write_safetensors(tmp_path / f"parent{seed}.safetensors", space, sd.items()))
    return paths[0], paths[1], space


def test_lazy_genomes_write_valid_children_and_release_only_their_own(tmp_path: Path, parent_files) -> None:
    path_a, path_b, space = parent_files
    out = tmp_path / "children"
    genomes = LazyGenomes(space, out)
    pa, pb = SafetensorsSource(path_a), SafetensorsSource(path_b)
    child = genomes.child(pa, pb, 0.3, 14, 0.0, torch.Generator())
    assert isinstance(child, SafetensorsSource) and child.path.parent == out
    child_space, _ = read_header(child.path)
    assert [(s.name, s.shape, s.dtype) for s in child_space] == [(s.name, s.shape, s.dtype) for s in space]
    assert load_file(str(child.path))["b"].dtype == torch.float16  # readable by the reference reader
    expected = split_slerp(space.flatten(load_file(str(path_a))), space.flatten(load_file(str(path_b))), 0.3, 14)
    got = space.flatten({s.name: child.get(s.name) for s in space})
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=2e-3)  # the float16 tensor is rounded
    assert list(out.iterdir()) == [child.path]  # no temp files left

    copy = genomes.child(pa, None, 0.5, 0, 0.0, torch.Generator())
    for s in space:
        assert torch.equal(copy.get(s.name), pa.get(s.name))

    genomes.release(pa)  # a parent it was given: never deleted
    genomes.release(pb)
    assert path_a.exists() and path_b.exists()
    genomes.release(child)
    genomes.release(copy)
    assert not child.path.exists() and not copy.path.exists()
    assert list(out.iterdir()) == []


def test_lazy_genomes_mutation_keeps_dtypes(tmp_path: Path, parent_files) -> None:
    path_a, _, space = parent_files
    genomes = LazyGenomes(space, tmp_path / "children")
    pa = SafetensorsSource(path_a)
    child = genomes.child(pa, None, 0.5, 0, 0.1, torch.Generator().manual_seed(0))
    for s in space:
        t = child.get(s.name)
        assert t.dtype == s.dtype and tuple(t.shape) == s.shape
        assert not torch.equal(t, pa.get(s.name))


def test_lazy_genomes_in_memory_without_out_dir() -> None:
    sa, sb = make_state_dict(0), make_state_dict(1)
    space = ParamSpace.from_state_dict(sa)
    child = LazyGenomes(space).child(StateDictSource(sa), StateDictSource(sb), 0.7, 5, 0.0, torch.Generator())
    assert isinstance(child, StateDictSource)
    expected = split_slerp(space.flatten(sa), space.flatten(sb), 0.7, 5)
    torch.testing.assert_close(space.flatten(child.state_dict), expected, atol=1e-6, rtol=1e-6)
