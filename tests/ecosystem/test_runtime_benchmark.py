"""The runtime benchmark runs end to end on a tiny budget (its figures are in BENCHMARKS.md)."""

import logging

from benchmarks import runtime


def test_runtime_benchmark_takes_turns_and_reports_its_figures(settings_env, capsys):
    ecosystem_log = logging.getLogger("ecosystem")
    level = ecosystem_log.level
    try:
        result = runtime.main(["--steps", "30", "--seeds", "1", "--steps-per-tick", "10", "--threads", "1"])
    finally:
        ecosystem_log.setLevel(level)  # main() quiets the runtime's log for its own output
    assert (result["steps"], result["seeds"], len(result["overhead_ratios"])) == (30, 1, 1)
    assert result["overhead_ratio_median"] > 0 and len(result["promotions"]) == 1
    assert 0 <= result["best_specialist_gate_accuracy"] <= 1 and 0 <= result["champion_gate_accuracy_mean"] <= 1
    assert '"overhead_ratio_median"' in capsys.readouterr().out
