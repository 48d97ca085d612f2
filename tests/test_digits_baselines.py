"""The figure's baselines (CMA-ES, MAP-Elites, brute-force SLERP), the tuned mutation schedule,
and the digits benchmark end to end on tiny budgets."""

import json
import logging
import math

import pytest
import torch

from benchmarks import baselines
from benchmarks import digits as bench
from m2n2 import M2N2, EvolutionConfig, FlatGenomes
from m2n2.evolution import MORE_VARIANTS


def sign_scores(genome: torch.Tensor) -> torch.Tensor:
    """Toy task: point j is solved when parameter j is positive."""
    return (genome > 0).float()


def test_brute_force_slerp_takes_the_first_best_ratio_on_the_arc() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # the arc point at ratio t is (cos(t pi/2), sin(t pi/2)): both coordinates exceed 0.5 for t in (1/3, 2/3)
    best, ratio = baselines.brute_force_slerp(lambda x: (x > 0.5).float(), a, b, passes=11)
    assert ratio == pytest.approx(0.4)
    torch.testing.assert_close(best, torch.tensor([math.cos(0.2 * math.pi), math.sin(0.2 * math.pi)]))


def test_map_elites_keeps_the_best_model_of_each_cell() -> None:
    odd = torch.tensor([True, True, False, False])
    elites = baselines.MapElites(sign_scores, odd, seed=0)
    elites.offer(torch.tensor([1.0, -1.0, -1.0, -1.0]))  # odd 0.5, even 0.0 -> cell (5, 0)
    elites.offer(torch.tensor([1.0, 1.0, 1.0, -1.0]))  # odd 1.0 (the top bin), even 0.5 -> cell (9, 5)
    elites.offer(torch.tensor([-1.0, 1.0, -2.0, -2.0]))  # same cell as the first, not better: dropped
    assert elites.quality == {(5, 0): 0.25, (9, 5): 0.75}
    assert elites.genomes[(5, 0)][0] == 1.0
    assert torch.equal(elites.best, torch.tensor([1.0, 1.0, 1.0, -1.0]))
    for _ in range(50):
        elites.step()
    assert elites.n_evaluations == 53
    assert max(elites.quality.values()) >= 0.75


def test_cma_es_spends_the_budget_and_finds_the_positive_orthant() -> None:
    pytest.importorskip("cma")
    scored = []

    def score(x: torch.Tensor) -> torch.Tensor:
        scored.append(x)
        return sign_scores(x)

    checkpoints = []
    best = baselines.cma_es(
        score, -0.01 * torch.ones(10), passes=1_010, seed=3, checkpoint=lambda n, _: checkpoints.append(n)
    )
    assert len(scored) == 1_000 and checkpoints[-1] == 1_000  # 50 generations of 20; the remainder is not spent
    assert float(sign_scores(best).mean()) == 1.0
    assert best.dtype == torch.float32


def test_mutation_decay_shrinks_the_noise_and_one_keeps_the_paper_loop() -> None:
    def distances(config: EvolutionConfig) -> list[float]:
        """The std of each child's noise around its parent (the archive's one member)."""
        evolver = M2N2(sign_scores, config, FlatGenomes(10_000)).seed_archive([torch.ones(10_000)])
        out = []
        for _ in range(4):
            parent = evolver.archive_.genomes[0].clone()
            out.append(float((evolver.step().child - parent).std()))
        return out

    steady = distances(EvolutionConfig.variant("m2n2-no-crossover", mutation_std=0.5, archive_size=1))
    decaying = distances(
        EvolutionConfig.variant("m2n2-no-crossover", mutation_std=0.5, mutation_decay=0.5, archive_size=1)
    )
    assert steady == pytest.approx([0.5] * 4, rel=0.1)
    assert decaying == pytest.approx([0.5, 0.25, 0.125, 0.0625], rel=0.1)
    explicit = distances(
        EvolutionConfig.variant("m2n2-no-crossover", mutation_std=0.5, mutation_decay=1.0, archive_size=1)
    )
    assert explicit == steady


def test_more_variants_are_named_settings() -> None:
    assert EvolutionConfig.variant("ga-no-crossover").model_dump(include={"alpha", "attraction", "crossover"}) == {
        "alpha": 0.0,
        "attraction": False,
        "crossover": False,
    }
    assert set(bench.BEYOND_PAPER) <= set(MORE_VARIANTS)
    for name in bench.BEYOND_PAPER:  # each differs from the paper's M2N2 in settings, not in its flags
        tuned = EvolutionConfig.variant(name)
        assert tuned != EvolutionConfig()
        assert (tuned.attraction, tuned.crossover, tuned.split_point) == (True, True, True)


@pytest.mark.parametrize("panel", ["scratch", "pretrained"])
def test_benchmark_runs_every_method_and_reuses_cached_runs(panel, tmp_path, capsys, caplog) -> None:
    argv = ["--panel", panel, "--seeds", "2", "--passes", "20", "--pairs", "2", "--out", str(tmp_path)]
    argv += ["--cache", str(tmp_path / "cache"), "--threads", "1"]
    first = bench.main(argv)
    expected = bench.PANELS[panel][1]
    assert list(first["methods"]) == expected and list(first["beyond_paper"]) == list(bench.BEYOND_PAPER)
    for summary in first["methods"].values():
        assert 0.0 <= summary["acc_mean"] <= 1.0
    if panel == "pretrained":
        assert first["pairs"] == [42, 43] and first["methods"]["m2n2"]["runs"] == 4
        assert first["methods"]["slerp-brute-force"]["runs"] == 2  # it draws nothing at random: one run per pair
        assert first["classic_merges"]["base"] == "zero"
    assert (tmp_path / f"digits_{panel}.png").stat().st_size > 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["methods"].keys() == first["methods"].keys()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="benchmarks.digits")
    again = bench.main(argv)
    assert again["methods"] == {
        m: {**s, "seconds_per_run": again["methods"][m]["seconds_per_run"]} for m, s in first["methods"].items()
    }
    counts = [r.getMessage().split(",") for r in caplog.records if r.getMessage().endswith("from the cache")]
    assert len(counts) == 1 and int(counts[0][0].split()[0]) == int(counts[0][1].split()[0]) > 0  # all read back


def test_benchmark_refuses_unknown_and_misplaced_methods() -> None:
    with pytest.raises(SystemExit, match="unknown method 'cmaes'"):
        bench.main(["--methods", "cmaes"])
    with pytest.raises(SystemExit, match="cma-es belongs to the scratch panel"):
        bench.main(["--panel", "pretrained", "--methods", "cma-es"])
