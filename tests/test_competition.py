"""Resource-competition fitness, attraction and sampling (M2N2, arXiv 2508.16204, Sec. 3.2-3.3).

Expected numbers are worked out by hand in the comments, not recomputed with the library's formula.
"""

from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from m2n2.archive import Archive
from m2n2.competition import attraction, fitness, point_weights, sample_index, shared_fitness_matrix

# Three models, four points. Point 0 is solved by models 0 and 1, point 1 by model 0 alone,
# point 2 by models 1 and 2, point 3 by nobody: z = [2, 1, 2, 0], c = [1, 1, 1, 0].
BINARY = torch.tensor(
    [
        [1.0, 1.0, 0.0, 0.0],
        [1.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ]
)


def test_point_weights_by_hand() -> None:
    totals, capacity = torch.tensor([2.0, 1.0, 0.0, 4.0]), torch.tensor([1.0, 1.0, 0.0, 0.5])
    # alpha = 1: c / z, with z = 0 counted as 1 -> [1/2, 1, 0, 1/8]
    assert point_weights(totals, capacity, 1.0).tolist() == [0.5, 1.0, 0.0, 0.125]
    # alpha = 2: c / z^2 -> [1/4, 1, 0, 1/32]
    assert point_weights(totals, capacity, 2.0).tolist() == [0.25, 1.0, 0.0, 0.03125]
    # alpha = 0: just the capacity
    assert point_weights(totals, capacity, 0.0).tolist() == [1.0, 1.0, 0.0, 0.5]


def test_binary_fitness_alpha_one_by_hand() -> None:
    # model 0: 1/2 (shares point 0) + 1 (alone on point 1) = 1.5
    # model 1: 1/2 (point 0) + 1/2 (point 2) = 1.0
    # model 2: 1/2 (point 2) = 0.5
    assert fitness(BINARY, alpha=1.0).tolist() == [1.5, 1.0, 0.5]


def test_binary_shared_fitness_matrix_by_hand() -> None:
    expected = [
        [0.5, 1.0, 0.0, 0.0],
        [0.5, 0.0, 0.5, 0.0],
        [0.0, 0.0, 0.5, 0.0],
    ]
    assert shared_fitness_matrix(BINARY, alpha=1.0).tolist() == expected


def test_alpha_zero_is_plain_count() -> None:
    # the plain GA: each model's number of solved points
    assert fitness(BINARY, alpha=0.0).tolist() == [2.0, 2.0, 1.0]


def test_unsolved_point_contributes_nothing_and_never_divides_by_zero() -> None:
    shared = shared_fitness_matrix(BINARY)
    assert torch.isfinite(shared).all()
    assert shared[:, 3].tolist() == [0.0, 0.0, 0.0]
    nobody = torch.zeros(2, 3)
    assert fitness(nobody).tolist() == [0.0, 0.0]
    assert shared_fitness_matrix(nobody).tolist() == [[0.0] * 3] * 2


def test_continuous_scores_use_capacity_max_by_hand() -> None:
    scores = torch.tensor([[0.5, 0.2, 0.0], [0.25, 0.6, 0.0]], dtype=torch.float64)
    # z = [0.75, 0.8, 0], c = [0.5, 0.6, 0]
    # F_00 = 0.5 * 0.5 / 0.75 = 1/3     F_01 = 0.6 * 0.2 / 0.8 = 0.15
    # F_10 = 0.5 * 0.25 / 0.75 = 1/6    F_11 = 0.6 * 0.6 / 0.8 = 0.45
    expected_shared = torch.tensor([[1 / 3, 0.15, 0.0], [1 / 6, 0.45, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(shared_fitness_matrix(scores), expected_shared)
    torch.testing.assert_close(fitness(scores), torch.tensor([1 / 3 + 0.15, 1 / 6 + 0.45], dtype=torch.float64))
    # alpha = 0 keeps the capacity: f_0 = 0.5 * 0.5 + 0.6 * 0.2 = 0.37, f_1 = 0.5 * 0.25 + 0.6 * 0.6 = 0.485
    torch.testing.assert_close(fitness(scores, alpha=0.0), torch.tensor([0.37, 0.485], dtype=torch.float64))


def test_empty_rows_have_zero_fitness() -> None:
    with_empty = torch.cat([BINARY, torch.zeros(2, 4)])
    f = fitness(with_empty)
    assert f.tolist() == [1.5, 1.0, 0.5, 0.0, 0.0]


def test_attraction_by_hand() -> None:
    shared = shared_fitness_matrix(BINARY)  # rows [.5, 1, 0, 0], [.5, 0, .5, 0], [0, 0, .5, 0]
    # A = 0: B = 1 is stronger only on point 2 (+.5); B = 2 likewise (+.5)
    assert attraction(shared, 0).tolist() == [0.0, 0.5, 0.5]
    # A = 2: B = 0 adds .5 + 1 on points 0, 1; B = 1 adds .5 on point 0
    assert attraction(shared, 2).tolist() == [1.5, 0.5, 0.0]
    # A = 1: B = 0 adds 1 on point 1; B = 2 is nowhere stronger
    assert attraction(shared, 1).tolist() == [1.0, 0.0, 0.0]


def _draw(weights: list[float], occupied: list[bool], n: int = 4000, seed: int = 0) -> Counter:
    gen = torch.Generator().manual_seed(seed)
    w, oc = torch.tensor(weights), torch.tensor(occupied)
    return Counter(sample_index(w, oc, gen) for _ in range(n))


def test_sample_index_is_proportional_and_skips_zero_weights() -> None:
    counts = _draw([0.0, 3.0, 0.0, 1.0], [True, True, True, True])
    assert set(counts) == {1, 3}
    assert counts[1] / 4000 == pytest.approx(0.75, abs=0.03)


def test_sample_index_never_draws_an_empty_slot() -> None:
    # slot 2 has the largest weight but is empty
    counts = _draw([1.0, 1.0, 5.0, 1.0], [True, True, False, True])
    assert set(counts) == {0, 1, 3}
    for i in (0, 1, 3):
        assert counts[i] / 4000 == pytest.approx(1 / 3, abs=0.03)


def test_sample_index_all_zero_weights_is_uniform_over_occupied() -> None:
    counts = _draw([0.0] * 5, [False, True, False, True, True])
    assert set(counts) == {1, 3, 4}
    for i in (1, 3, 4):
        assert counts[i] / 4000 == pytest.approx(1 / 3, abs=0.03)
    # weights only on empty slots count as zero too
    counts = _draw([7.0, 0.0, 7.0, 0.0], [False, True, False, True])
    assert set(counts) == {1, 3}


def test_select_parents_falls_back_when_attraction_is_all_zero() -> None:
    # Slot 0 is at least as good as slot 1 on every point: g(0, .) = 0 everywhere.
    # Shared: z = [2, 1, 1]; F_0 = [.5, 1, 1] (f = 2.5), F_1 = [.5, 0, 0] (f = .5); slot 2 empty.
    archive = Archive(3, 3)
    archive.put(0, "dominant", torch.tensor([1.0, 1.0, 1.0]))
    archive.put(1, "weak", torch.tensor([1.0, 0.0, 0.0]))
    gen = torch.Generator().manual_seed(0)
    pairs = [archive.select_parents(True, gen) for _ in range(3000)]
    assert all(a in (0, 1) and b in (0, 1) for a, b in pairs)  # never the empty slot
    # A = 1: g(1, .) = [2, 0, 0] -> B is always 0
    assert all(b == 0 for a, b in pairs if a == 1)
    # A = 0: fitness-proportional fallback -> B = 1 with probability .5 / 3 = 1/6
    b_given_0 = [b for a, b in pairs if a == 0]
    assert sum(b == 1 for b in b_given_0) / len(b_given_0) == pytest.approx(1 / 6, abs=0.03)


def test_select_parents_with_zero_fitness_everywhere() -> None:
    # nobody solves anything: fitness and attraction are all zero; draw uniformly, no NaN
    archive = Archive(4, 3)
    archive.put(0, "a", torch.zeros(3))
    archive.put(2, "b", torch.zeros(3))
    gen = torch.Generator().manual_seed(1)
    pairs = [archive.select_parents(True, gen) for _ in range(500)]
    assert {a for a, _ in pairs} == {0, 2}
    assert {b for _, b in pairs} == {0, 2}
    assert torch.isfinite(archive.fitness).all()


def test_select_parents_with_single_member() -> None:
    archive = Archive(5, 2)
    archive.put(3, "only", torch.tensor([1.0, 0.0]))
    gen = torch.Generator().manual_seed(2)
    assert {archive.select_parents(use, gen) for use in (True, False) for _ in range(50)} == {(3, 3)}


@st.composite
def binary_scores(draw: st.DrawFn) -> torch.Tensor:
    n_models, n_points = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    bits = draw(st.lists(st.booleans(), min_size=n_models * n_points, max_size=n_models * n_points))
    return torch.tensor(bits, dtype=torch.float64).view(n_models, n_points)


@settings(max_examples=50, deadline=None)
@given(binary_scores())
def test_binary_fitness_is_nonnegative_and_sums_to_solved_points(scores: torch.Tensor) -> None:
    f = fitness(scores, alpha=1.0)
    assert (f >= 0).all()
    solved = int((scores.sum(dim=0) > 0).sum())
    assert float(f.sum()) == pytest.approx(solved)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 5).flatmap(
        lambda m: st.integers(1, 6).flatmap(
            lambda n: st.lists(st.floats(0, 1), min_size=m * n, max_size=m * n).map(
                lambda xs: torch.tensor(xs, dtype=torch.float64).view(m, n)
            )
        )
    )
)
def test_continuous_fitness_hands_out_each_points_capacity(scores: torch.Tensor) -> None:
    # with alpha = 1, point j's resource c_j = max_i s_ij is split among the models that score on it
    f = fitness(scores, alpha=1.0)
    assert (f >= 0).all()
    assert float(f.sum()) == pytest.approx(float(scores.amax(dim=0).sum()), abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 10), st.booleans()), min_size=1, max_size=8).filter(
        lambda xs: any(oc for _, oc in xs)
    ),
    st.integers(0, 2**31),
)
def test_sample_index_draws_occupied_positive_weight_slots(pairs: list[tuple[float, bool]], seed: int) -> None:
    weights = torch.tensor([w for w, _ in pairs])
    occupied = torch.tensor([oc for _, oc in pairs])
    gen = torch.Generator().manual_seed(seed)
    any_positive = bool(((weights > 0) & occupied).any())
    for _ in range(10):
        i = sample_index(weights, occupied, gen)
        assert occupied[i]
        if any_positive:
            assert weights[i] > 0
