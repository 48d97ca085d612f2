"""The promotion gate: hand-computed p-values for both paired tests, and every branch of decide()."""

import pytest
import torch

from ecosystem import gate


def binary_pairs(wins: int, losses: int, both: int = 0, neither: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Challenger/champion scores with the given counts of (1,0), (0,1), (1,1) and (0,0) pairs."""
    challenger = [1.0] * wins + [0.0] * losses + [1.0] * both + [0.0] * neither
    champion = [0.0] * wins + [1.0] * losses + [1.0] * both + [0.0] * neither
    return torch.tensor(challenger), torch.tensor(champion)


def test_mcnemar_exact_p_value_by_hand() -> None:
    # b = 8 wins, c = 1 loss: P(X >= 8 | X ~ Bin(9, 1/2)) = (C(9,8) + C(9,9)) / 2^9 = 10/512.
    result = gate.paired_test(*binary_pairs(8, 1, both=5, neither=6))
    assert result.method == gate.MCNEMAR and result.n == 20
    assert result.p_value == pytest.approx(10 / 512) == pytest.approx(0.01953125)
    assert result.mean_diff == pytest.approx(7 / 20)


def test_mcnemar_without_discordant_pairs_is_p_one() -> None:
    result = gate.paired_test(*binary_pairs(0, 0, both=7, neither=3))
    assert result == gate.TestResult(0.0, 1.0, 10, gate.MCNEMAR)


def test_wilcoxon_p_value_by_hand() -> None:
    # Non-zero differences +0.1, +0.2, +0.3, +0.4, -0.05: only the smallest is negative, so
    # W+ = 2 + 3 + 4 + 5 = 14; P(W+ >= 14) over the 2^5 equally likely sign patterns = 2/32.
    champion = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    challenger = champion + torch.tensor([0.0, 0.0, 0.0, 0.1, 0.2, 0.3, -0.05, 0.4])
    result = gate.paired_test(challenger, champion)
    assert result.method == gate.WILCOXON and result.n == 8
    assert result.p_value == pytest.approx(2 / 32)
    assert result.mean_diff == pytest.approx(0.95 / 8, abs=1e-6)


def test_wilcoxon_with_all_differences_zero_is_p_one() -> None:
    scores = torch.tensor([0.2, 0.7, 0.9])
    assert gate.paired_test(scores, scores.clone()) == gate.TestResult(0.0, 1.0, 3, gate.WILCOXON)


def test_one_continuous_side_uses_wilcoxon() -> None:
    assert gate.paired_test(torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0])).method == gate.WILCOXON


def test_no_points() -> None:
    assert gate.paired_test(torch.zeros(0), torch.zeros(0)) == gate.TestResult(0.0, 1.0, 0, gate.NO_POINTS)


@pytest.mark.parametrize(
    ("challenger", "champion", "match"),
    [
        (torch.zeros(3), torch.zeros(4), "equal length"),
        (torch.zeros(2, 2), torch.zeros(2, 2), "equal length"),
        (torch.tensor([1.5]), torch.tensor([1.0]), "challenger: scores must be finite and in"),
        (torch.tensor([1.0]), torch.tensor([float("nan")]), "champion:"),
    ],
)
def test_bad_scores_raise(challenger: torch.Tensor, champion: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gate.paired_test(challenger, champion)


def test_decide_promotes_when_every_condition_holds() -> None:
    decision = gate.decide(*binary_pairs(8, 1, both=5, neither=6), margin=0.1, significance=0.05, min_points=20)
    assert decision.promote and decision.test.p_value == pytest.approx(0.01953125)
    assert decision.reason.startswith("promote:")
    assert "n = 20 gate points (min 20)" in decision.reason and "+0.3500 (margin 0.1000)" in decision.reason
    assert "p = 0.01953 (mcnemar_exact, significance 0.05)" in decision.reason


def test_decide_keeps_on_too_few_points() -> None:
    decision = gate.decide(*binary_pairs(8, 1, both=5, neither=6), margin=0.1, significance=0.05, min_points=21)
    assert not decision.promote
    assert decision.reason.startswith("keep champion: too few gate points (20 < 21).")


def test_decide_keeps_when_the_margin_is_not_beaten() -> None:
    decision = gate.decide(*binary_pairs(8, 1, both=5, neither=6), margin=0.35, significance=0.05, min_points=20)
    assert not decision.promote
    assert "keep champion: mean difference +0.3500 is not above the margin 0.3500." in decision.reason


def test_decide_keeps_when_not_significant() -> None:
    # b = 3, c = 1: p = (C(4,3) + C(4,4)) / 16 = 5/16, though the mean difference beats the margin.
    decision = gate.decide(*binary_pairs(3, 1, neither=4), margin=0.1, significance=0.05, min_points=5)
    assert not decision.promote and decision.test.p_value == pytest.approx(5 / 16)
    assert "keep champion: p = 0.3125 is not below 0.05." in decision.reason


def test_decide_lists_every_failed_condition() -> None:
    decision = gate.decide(*binary_pairs(0, 2), margin=0.0, significance=0.05, min_points=10)
    assert not decision.promote
    for part in ("too few gate points (2 < 10)", "-1.0000 is not above the margin", "p = 1 is not below 0.05"):
        assert part in decision.reason


@pytest.mark.parametrize(("significance", "min_points"), [(0.0, 1), (1.5, 1), (0.05, 0)])
def test_decide_refuses_bad_settings(significance: float, min_points: int) -> None:
    with pytest.raises(ValueError, match=r"significance|min_points"):
        gate.decide(torch.ones(3), torch.zeros(3), 0.0, significance, min_points)
