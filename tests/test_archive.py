"""The archive's admission rule: first empty slot, else evict the lowest of P + 1 (ties evict the member)."""

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from m2n2.archive import Archive
from m2n2.competition import fitness
from m2n2.errors import ShapeMismatch
from m2n2.evolution import M2N2, EvolutionConfig


def full_archive(rows: list[list[float]], alpha: float = 1.0) -> Archive:
    archive = Archive(len(rows), len(rows[0]), alpha)
    for i, row in enumerate(rows):
        archive.put(i, f"m{i}", torch.tensor(row))
    return archive


def test_child_takes_first_empty_slot_even_with_zero_fitness() -> None:
    archive = Archive(3, 2)
    archive.put(1, "m1", torch.tensor([1.0, 1.0]))
    assert archive.replacement_slot(torch.zeros(2)) == 0
    archive.put(0, "m0", torch.tensor([1.0, 0.0]))
    assert archive.replacement_slot(torch.zeros(2)) == 2
    assert len(archive) == 2


def test_full_archive_evicts_lowest_member() -> None:
    archive = full_archive([[1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])
    # with child [0, 0, 0, 1]: z = [2, 1, 1, 1] -> m0 = 1/2 + 1 = 1.5, m1 = 1, m2 = 1/2, child = 1
    assert archive.replacement_slot(torch.tensor([0.0, 0.0, 0.0, 1.0])) == 2


def test_full_archive_drops_lowest_child() -> None:
    archive = full_archive([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]])
    # with child [1, 0, 0, 0]: z = [3, 1, 2, 1] -> m0 = 1/3 + 1, m1 = 1/2 + 1, m2 = 1/3 + 1/2, child = 1/3
    assert archive.replacement_slot(torch.tensor([1.0, 0.0, 0.0, 0.0])) is None
    assert archive.replacement_slot(torch.zeros(4)) is None


def test_tie_between_child_and_lowest_member_evicts_the_member() -> None:
    archive = full_archive([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    # with child [1, 0, 0, 0]: z = [2, 1, 1, 0] -> m0 = 1/2, m1 = 1, m2 = 1, child = 1/2: m0 and child tie
    assert archive.replacement_slot(torch.tensor([1.0, 0.0, 0.0, 0.0])) == 0
    # a different child with the same fitness: every point shared by two -> everyone scores exactly 1
    archive = full_archive([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]])
    assert archive.replacement_slot(torch.tensor([1.0, 0.0, 0.0, 1.0])) == 0  # first lowest member


@pytest.mark.parametrize("seed", range(5))
def test_child_equal_to_a_member_is_never_dropped(seed: int) -> None:
    """Equal score rows must tie bit for bit, however many points, so the member goes, not the child."""
    gen = torch.Generator().manual_seed(seed)
    scores = (torch.rand(20, 1437, generator=gen) < 0.5).float()  # (20, 1437), digits-sized
    archive = full_archive(scores.tolist())
    for k in range(20):
        assert archive.replacement_slot(scores[k].clone()) is not None


def test_replacement_uses_fitness_recomputed_over_p_plus_one_rows() -> None:
    # Old fitness (2 rows): slot 0 solves 3 points alone (f = 3), slot 1 solves 4 alone (f = 4): slot 0 looks worst.
    # The child shares all 4 of slot 1's points and one of slot 0's: z = [2, 1, 1, 2, 2, 2, 2]
    # -> slot 0 = 1/2 + 1 + 1 = 2.5, slot 1 = 4 * 1/2 = 2, child = 1/2 + 4 * 1/2 = 2.5: slot 1 goes.
    archive = full_archive([[1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1]])
    child = torch.tensor([1.0, 0, 0, 1, 1, 1, 1])
    assert archive.fitness.tolist() == [3.0, 4.0]
    assert archive.replacement_slot(child) == 1


def test_alpha_zero_archive_keeps_the_highest_counts() -> None:
    archive = full_archive([[1, 1, 0], [0, 0, 1]], alpha=0.0)
    # plain counts: m0 = 2, m1 = 1, child = 2 -> m1 goes, however unique its point
    assert archive.replacement_slot(torch.tensor([1.0, 1.0, 0.0])) == 1


def test_put_returns_displaced_genome_and_checks_shape() -> None:
    archive = Archive(2, 3)
    assert archive.put(0, "first", torch.ones(3)) is None
    assert archive.put(0, "second", torch.zeros(3)) == "first"
    with pytest.raises(ShapeMismatch, match="3"):
        archive.put(1, "bad", torch.ones(4))


def test_best_index_is_highest_mean_occupied_slot() -> None:
    archive = Archive(4, 4)
    archive.put(1, "a", torch.tensor([1.0, 0.0, 0.0, 0.0]))
    archive.put(3, "b", torch.tensor([1.0, 1.0, 1.0, 0.0]))
    archive.put(2, "c", torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert archive.best_index() == 3
    only_zero = Archive(3, 2)
    only_zero.put(2, "z", torch.zeros(2))
    assert only_zero.best_index() == 2  # empty slots never win, even against an all-zero member


class RecordingGenomes:
    """A stand-in Genomes that records what the loop releases."""

    dim = 1

    def __init__(self) -> None:
        self.released: list[Any] = []

    def child(self, *args: Any) -> Any:  # pragma: no cover - offer() never makes children
        raise AssertionError("not used")

    def release(self, genome: Any) -> None:
        self.released.append(genome)


@st.composite
def offers(draw: st.DrawFn) -> tuple[int, list[torch.Tensor]]:
    size, n_points = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    binary = draw(st.booleans())
    value = st.sampled_from([0.0, 1.0]) if binary else st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])
    rows = draw(st.lists(st.lists(value, min_size=n_points, max_size=n_points), min_size=1, max_size=12))
    return size, [torch.tensor(r) for r in rows]


@settings(max_examples=50, deadline=None)
@given(offers())
def test_offer_keeps_at_most_p_members_and_never_prefers_a_worse_child(case: tuple[int, list[torch.Tensor]]) -> None:
    size, rows = case
    genomes = RecordingGenomes()
    evolver = M2N2(lambda g: g, EvolutionConfig(archive_size=size), genomes)
    for i, child in enumerate(rows):
        before_scores = evolver.archive_.scores.clone() if hasattr(evolver, "archive_") else None
        before_genomes = list(evolver.archive_.genomes) if before_scores is not None else [None] * size
        n_before = sum(g is not None for g in before_genomes)
        slot, evicted = evolver.offer(f"child{i}", child)
        archive = evolver.archive_
        assert len(archive) <= size
        assert len(archive) == sum(g is not None for g in archive.genomes)
        if n_before < size:  # an empty slot is always taken, and it is the first one
            assert slot == before_genomes.index(None) and not evicted
            continue
        # fitness over the P + 1 rows, in float64, from the (hand-checked) fitness function
        f = fitness(torch.cat([before_scores, child[None]]).double(), archive.alpha)
        f_child, f_members = float(f[-1]), f[:-1]
        if slot is None:
            # dropped: no member was worse, and nothing changed
            assert f_child <= float(f_members.min()) + 1e-9
            assert archive.genomes == before_genomes
            assert torch.equal(archive.scores, before_scores)
        else:
            # the evicted member was a lowest one and no better than the child: ties evict the member
            assert evicted and genomes.released[-1] == before_genomes[slot]
            assert float(f_members[slot]) <= float(f_members.min()) + 1e-9
            assert float(f_members[slot]) <= f_child + 1e-9
            assert archive.genomes[slot] == f"child{i}"
            assert torch.equal(archive.scores[slot], child)
