"""The M2N2 loop: determinism, variants, score validation, budgets, and short runs on digits."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import torch

from m2n2.checkpoint import SafetensorsSource, StateDictSource, load_state_dict, write_safetensors
from m2n2.crossover import split_slerp
from m2n2.digits import DigitsSplit, FlatMLPScorer, load_split, mlp_space, train_specialists
from m2n2.errors import InvalidScores, M2N2Error, ShapeMismatch
from m2n2.evolution import M2N2, VARIANTS, EvolutionConfig, StepResult
from m2n2.genomes import FlatGenomes, LazyGenomes
from m2n2.space import ParamSpace

DIM = 16


def sign_scores(genome: torch.Tensor) -> torch.Tensor:
    """Toy task: point j is solved when parameter j is positive. Shape (DIM,)."""
    return (genome > 0).float()


def random_inits(n: int, dim: int = DIM, seed: int = 123) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(dim, generator=gen) for _ in range(n)]


def toy_run(config: EvolutionConfig, steps: int = 60) -> tuple[M2N2, list[StepResult]]:
    results: list[StepResult] = []
    evolver = M2N2(sign_scores, config, FlatGenomes(DIM)).seed_archive(random_inits(4))
    evolver.run(steps=steps, callback=results.append)
    return evolver, results


def trace(results: list[StepResult]) -> list[tuple[Any, ...]]:
    return [(r.parent_a, r.parent_b, r.mixing_ratio, r.split_point, r.slot, r.evicted) for r in results]


def test_same_seed_same_run_different_seed_different_run() -> None:
    config = EvolutionConfig(archive_size=6, mutation_std=0.3, seed=7)
    first, results_1 = toy_run(config)
    second, results_2 = toy_run(config)
    assert trace(results_1) == trace(results_2)
    assert torch.equal(first.archive_.scores, second.archive_.scores)
    assert all(torch.equal(x, y) for x, y in zip(first.archive_.genomes, second.archive_.genomes, strict=True))
    _, results_3 = toy_run(config.model_copy(update={"seed": 8}))
    assert trace(results_3) != trace(results_1)


def test_variants_are_flags_of_one_loop() -> None:
    default = EvolutionConfig()
    assert (default.alpha, default.attraction, default.crossover, default.split_point) == (1.0, True, True, True)
    assert set(VARIANTS) == {"m2n2", "m2n2-no-crossover", "m2n2-no-attraction", "m2n2-no-split", "ga"}
    flags = {
        name: (c.alpha, c.attraction, c.crossover, c.split_point)
        for name, c in ((name, EvolutionConfig.variant(name)) for name in VARIANTS)
    }
    assert flags == {
        "m2n2": (1.0, True, True, True),
        "m2n2-no-crossover": (1.0, True, False, True),
        "m2n2-no-attraction": (1.0, False, True, True),
        "m2n2-no-split": (1.0, True, True, False),
        "ga": (0.0, False, True, True),
    }
    assert EvolutionConfig.variant("ga", seed=3, archive_size=5).seed == 3
    with pytest.raises(M2N2Error, match="m2n2-no-split"):
        EvolutionConfig.variant("no-such-variant")


def test_config_is_validated_and_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        EvolutionConfig(archive_size=0)
    with pytest.raises(pydantic.ValidationError):
        EvolutionConfig(alpha=-1)
    with pytest.raises(pydantic.ValidationError):
        EvolutionConfig(mutation_rate=0.1)  # a typo is an error, not a silent default
    with pytest.raises(pydantic.ValidationError):
        EvolutionConfig().seed = 1  # type: ignore[misc]


def step_with_parents(evolver: M2N2) -> tuple[StepResult, list[Any]]:
    """One step, plus the archive's genomes as they were when the parents were chosen."""
    before = list(evolver.archive_.genomes)
    return evolver.step(), before


def test_child_is_split_slerp_of_the_chosen_parents() -> None:
    evolver = M2N2(sign_scores, EvolutionConfig(archive_size=5, seed=1), FlatGenomes(DIM))
    evolver.seed_archive(random_inits(5))
    for _ in range(30):
        result, before = step_with_parents(evolver)
        assert 0 <= result.split_point < DIM and 0 <= result.mixing_ratio < 1
        parent_a, parent_b = before[result.parent_a], before[result.parent_b]
        expected = split_slerp(parent_a, parent_b, result.mixing_ratio, result.split_point)
        assert torch.equal(result.child, expected)


def test_no_split_variant_mixes_the_whole_vector() -> None:
    evolver = M2N2(sign_scores, EvolutionConfig.variant("m2n2-no-split", seed=2), FlatGenomes(DIM))
    evolver.seed_archive(random_inits(3))
    results: list[StepResult] = []
    evolver.run(steps=20, callback=results.append)
    assert all(r.split_point == DIM and r.parent_b is not None for r in results)


def test_no_crossover_child_is_parent_a() -> None:
    evolver = M2N2(sign_scores, EvolutionConfig.variant("m2n2-no-crossover", seed=3), FlatGenomes(DIM))
    evolver.seed_archive(random_inits(4))
    for _ in range(30):
        result, before = step_with_parents(evolver)
        assert result.parent_b is None
        assert torch.equal(result.child, before[result.parent_a])
        assert result.child is not before[result.parent_a]  # a copy, never the parent itself


def test_no_crossover_with_mutation_adds_gaussian_noise() -> None:
    dim, std = 4000, 0.5
    config = EvolutionConfig.variant("m2n2-no-crossover", mutation_std=std)
    evolver = M2N2(lambda g: (g[:8] > 0).float(), config, FlatGenomes(dim))
    evolver.seed_archive(random_inits(2, dim))
    result, before = step_with_parents(evolver)
    noise = result.child - before[result.parent_a]  # (dim,)
    assert abs(float(noise.mean())) < 0.05
    assert float(noise.std()) == pytest.approx(std, rel=0.05)


@pytest.mark.parametrize(
    "bad", [[0.5, 1.2], [-0.1, 0.5], [float("nan"), 0.5], [float("inf"), 0.0], [0.5, float("nan")]]
)
def test_scores_outside_unit_interval_or_nan_are_rejected(bad: list[float]) -> None:
    evolver = M2N2(lambda g: torch.tensor(bad), EvolutionConfig(), FlatGenomes(2))
    with pytest.raises(InvalidScores):
        evolver.seed_archive([torch.zeros(2)])


def test_scores_must_be_one_vector_of_fixed_length() -> None:
    evolver = M2N2(lambda g: torch.zeros(2, 3), EvolutionConfig(), FlatGenomes(2))
    with pytest.raises(ShapeMismatch, match=r"\[2, 3\]"):
        evolver.seed_archive([torch.zeros(2)])
    n_points = iter([3, 4])
    evolver = M2N2(lambda g: torch.zeros(next(n_points)), EvolutionConfig(), FlatGenomes(2))
    evolver.seed_archive([torch.zeros(2)])
    with pytest.raises(ShapeMismatch, match="4"):
        evolver.seed_archive([torch.ones(2)])


def test_scores_may_be_lists_and_boundaries_are_valid() -> None:
    evolver = M2N2(lambda g: [0.0, 1.0, 0.5], EvolutionConfig(), FlatGenomes(2)).seed_archive([torch.zeros(2)])
    assert evolver.archive_.scores[0].tolist() == [0.0, 1.0, 0.5]
    assert evolver.n_evaluations_ == 1


def test_step_on_empty_archive_raises() -> None:
    evolver = M2N2(sign_scores, EvolutionConfig(), FlatGenomes(DIM))
    with pytest.raises(M2N2Error, match="seed_archive"):
        evolver.step()
    with pytest.raises(M2N2Error, match="budget"):
        evolver.run()


def test_run_stops_after_seconds_or_steps() -> None:
    evolver = M2N2(sign_scores, EvolutionConfig(archive_size=4), FlatGenomes(DIM)).seed_archive(random_inits(4))
    start = time.monotonic()
    evolver.run(seconds=0.2)
    assert time.monotonic() - start < 5.0
    assert evolver.n_evaluations_ > 4
    calls: list[StepResult] = []
    evolver.run(steps=5, seconds=60, callback=calls.append)
    assert len(calls) == 5


def test_archive_never_exceeds_size_and_admission_is_reported() -> None:
    evolver, results = toy_run(EvolutionConfig(archive_size=3, mutation_std=0.5, seed=4), steps=50)
    assert len(evolver.archive_) == 3
    for r in results:
        assert (r.slot is None) == (not r.evicted)  # the archive is full: admitted children always evict


# --- digits ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> tuple[DigitsSplit, ParamSpace, torch.Tensor, torch.Tensor, FlatMLPScorer]:
    data, space = load_split(), mlp_space()
    low, high = train_specialists(data, space)
    return data, space, low, high, FlatMLPScorer(data.x_train, data.y_train, space)


def test_digits_run_beats_the_better_specialist(digits) -> None:
    _, space, low, high, scorer = digits
    better = max(float(scorer(low).mean()), float(scorer(high).mean()))
    assert 0.4 < better < 0.6  # each specialist knows only half the digits
    evolver = M2N2(scorer, EvolutionConfig(seed=0), FlatGenomes(space.dim)).seed_archive([low, high])
    evolver.run(steps=300)
    assert float(scorer(evolver.best_).mean()) > better + 0.1
    assert evolver.n_evaluations_ == 302


def test_lazy_genomes_match_flat_genomes_without_mutation(digits) -> None:
    _, space, low, high, scorer = digits

    def run(evaluate: Callable[[Any], torch.Tensor], genomes, seeds) -> tuple[torch.Tensor, list]:
        results: list[StepResult] = []
        evolver = M2N2(evaluate, EvolutionConfig(seed=5), genomes).seed_archive(seeds)
        evolver.run(steps=50, callback=results.append)
        return evolver.archive_.scores, trace(results)

    flat_scores, flat_trace = run(scorer, FlatGenomes(space.dim), [low, high])
    lazy_scores, lazy_trace = run(
        lambda source: scorer(space.flatten(load_state_dict(source))),
        LazyGenomes(space),
        [StateDictSource(space.unflatten(low)), StateDictSource(space.unflatten(high))],
    )
    assert lazy_trace == flat_trace
    assert torch.equal(lazy_scores, flat_scores)


def test_lazy_genomes_on_disk_keep_parent_files_and_clean_up_children(tmp_path: Path) -> None:
    sd = {"w": torch.zeros(3, 4), "b": torch.zeros(4, dtype=torch.float16)}
    space = ParamSpace.from_state_dict(sd)
    parents = []
    for i, init in enumerate(random_inits(3, space.dim, seed=9)):
        path = write_safetensors(tmp_path / f"parent{i}.safetensors", space, space.unflatten(init).items())
        parents.append(SafetensorsSource(path))
    out = tmp_path / "children"
    evolver = M2N2(
        lambda source: sign_scores(space.flatten(load_state_dict(source))),
        EvolutionConfig(archive_size=3, mutation_std=0.3, seed=0),
        LazyGenomes(space, out),
    )
    evolver.seed_archive(parents).run(steps=25)
    members = {g.path for g in evolver.archive_.genomes}
    assert all(p.path.exists() for p in parents)  # given files survive eviction
    assert set(out.iterdir()) == members - {p.path for p in parents}  # released children are gone
    assert members - {p.path for p in parents}, "expected some children to be admitted"


class CountingSource(StateDictSource):
    """A state dict that counts the tensors read from it."""

    reads = 0

    def get(self, name: str) -> torch.Tensor:
        self.reads += 1
        return super().get(name)


def test_lazy_genomes_measure_a_pair_angle_once_and_merge_it_identically() -> None:
    sd = {"w": torch.randn(3, 4, generator=torch.Generator().manual_seed(1)), "b": torch.randn(4)}
    space = ParamSpace.from_state_dict(sd)
    a, b = CountingSource(sd), CountingSource({k: v.flip(-1) for k, v in sd.items()})
    genomes = LazyGenomes(space)
    first = genomes.child(a, b, 0.3, 5, 0.0, torch.Generator())
    assert (a.reads, b.reads) == (4, 4)  # an angle pass and a merge pass, two tensors each
    again = genomes.child(b, a, 0.3, 5, 0.0, torch.Generator())  # the same pair, either order
    assert (a.reads, b.reads) == (6, 6)  # the merge pass only
    fresh = LazyGenomes(space).child(a, b, 0.3, 5, 0.0, torch.Generator())
    for name in space.names:
        assert torch.equal(first.get(name), fresh.get(name))  # a remembered angle changes no bit
    assert not torch.equal(first.get("w"), again.get("w"))  # b, a is another child: parents swap sides
