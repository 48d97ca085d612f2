"""Batch-parallel M2N2: k children proposed from one archive, scored together, admitted in proposal order.

k = 1 is the paper's serial generation, draw for draw; for k > 1 the run depends on the seed and k only,
not on the order in which a batch's evaluations finish.
"""

import random
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from m2n2.archive import Archive
from m2n2.evolution import M2N2, EvolutionConfig, StepResult
from m2n2.genomes import FlatGenomes

DIM = 24


def scores_of(genome: torch.Tensor) -> torch.Tensor:
    """Point j is solved by a positive parameter j, graded: shape (DIM,), in [0, 1]."""
    return torch.sigmoid(4 * genome)


def inits(n: int = 4) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return [torch.randn(DIM, generator=gen) for _ in range(n)]


def serial_reference(config: EvolutionConfig, steps: int) -> tuple[Archive, list[tuple[Any, ...]]]:
    """The paper's loop written out: pick parents, draw ratio and split, make, score, offer; one at a time."""
    archive = Archive(config.archive_size, DIM, config.alpha)
    for slot, genome in enumerate(inits()):
        archive.put(slot, genome, scores_of(genome))
    gen = torch.Generator().manual_seed(config.seed)
    genomes = FlatGenomes(DIM)
    trace = []
    for _ in range(steps):
        a, b = archive.select_parents(config.attraction, gen)
        ratio = float(torch.rand((), generator=gen))
        split = int(torch.randint(0, DIM, (), generator=gen))
        child = genomes.child(archive.genomes[a], archive.genomes[b], ratio, split, config.mutation_std, gen)
        scores = scores_of(child)
        slot = archive.replacement_slot(scores)
        if slot is not None:
            archive.put(slot, child, scores)
        trace.append((a, b, ratio, split, slot, child))
    return archive, trace


def evolve(config: EvolutionConfig, steps: int, evaluate_batch=None) -> tuple[M2N2, list[StepResult]]:
    results: list[StepResult] = []
    evolver = M2N2(scores_of, config, FlatGenomes(DIM), evaluate_batch)
    archive = Archive(config.archive_size, DIM, config.alpha)
    for slot, genome in enumerate(inits()):
        archive.put(slot, genome, scores_of(genome))
    evolver.resume(archive).run(steps=steps, callback=results.append)
    return evolver, results


def shuffled_batch_evaluator(seed: int):
    """Scores a batch in a random order (as workers finishing in any order would), returned in input order."""
    order = random.Random(seed)

    def evaluate(genomes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        indices = list(range(len(genomes)))
        order.shuffle(indices)
        done = {i: scores_of(genomes[i]) for i in indices}
        return [done[i] for i in range(len(genomes))]

    return evaluate


def test_batch_of_one_is_the_serial_loop() -> None:
    config = EvolutionConfig(archive_size=6, mutation_std=0.05, seed=11)
    reference, trace = serial_reference(config, steps=40)
    evolver, results = evolve(config, steps=40)
    assert [r.proposal for r in results] == [0] * 40
    for (a, b, ratio, split, slot, child), r in zip(trace, results, strict=True):
        assert (a, b, ratio, split, slot) == (r.parent_a, r.parent_b, r.mixing_ratio, r.split_point, r.slot)
        assert torch.equal(child, r.child)
    assert torch.equal(evolver.archive_.scores, reference.scores)
    assert evolver.archive_.best_index() == reference.best_index()
    assert sum(r.slot is not None for r in results) > 3, "the comparison covers admissions, not only rejections"


@pytest.mark.parametrize("k", [2, 5])
def test_a_batch_is_reproducible_whatever_the_finish_order(k: int) -> None:
    config = EvolutionConfig(archive_size=6, mutation_std=0.05, seed=3, batch=k)
    first, results_1 = evolve(config, steps=23)
    second, results_2 = evolve(config, steps=23, evaluate_batch=shuffled_batch_evaluator(seed=k))
    assert len(results_1) == 23
    assert [r.proposal for r in results_1] == [i % k for i in range(23)]  # the last batch is cut to the budget
    for r1, r2 in zip(results_1, results_2, strict=True):
        assert (r1.parent_a, r1.parent_b, r1.split_point, r1.slot) == (
            r2.parent_a,
            r2.parent_b,
            r2.split_point,
            r2.slot,
        )
        assert torch.equal(r1.child, r2.child)
    assert torch.equal(first.archive_.scores, second.archive_.scores)
    serial, _ = evolve(config.model_copy(update={"batch": 1}), steps=23)
    assert not torch.equal(serial.archive_.scores, first.archive_.scores), "k changes the run (parents are older)"


def test_a_batch_proposes_from_the_archive_before_its_admissions() -> None:
    config = EvolutionConfig(archive_size=4, seed=1, batch=4)
    evolver, _ = evolve(config, steps=0)
    before = [g.clone() for g in evolver.archive_.genomes]
    results = evolver.step_batch(4)
    for r in results:  # every child is a merge of two genomes the archive held before the batch
        expected = FlatGenomes(DIM).child(
            before[r.parent_a], before[r.parent_b], r.mixing_ratio, r.split_point, 0.0, None
        )
        assert torch.equal(r.child, expected)


def test_a_failed_batch_releases_every_child() -> None:
    released = []

    class Counting(FlatGenomes):
        def release(self, genome: torch.Tensor) -> None:
            released.append(genome)

    def broken(genomes):
        raise RuntimeError("worker lost")

    evolver = M2N2(scores_of, EvolutionConfig(archive_size=4, batch=3), Counting(DIM), broken)
    archive = Archive(4, DIM)
    for slot, genome in enumerate(inits()):
        archive.put(slot, genome, scores_of(genome))
    evolver.resume(archive)
    with pytest.raises(RuntimeError, match="worker lost"):
        evolver.step_batch(3)
    assert len(released) == 3
