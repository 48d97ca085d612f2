"""``python -m benchmarks.diffusion`` end to end on untrained tiny models: every row, the grid, the JSON line."""

import json
from pathlib import Path

import pytest
from PIL import Image

from benchmarks import diffusion


def test_every_row_is_scored_and_the_grid_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    figure = tmp_path / "grid.png"
    argv = ["--build", "tiny", "--cache", str(tmp_path / "cache"), "--figure", str(figure), "--steps", "1"]
    argv += ["--archive", "3", "--seeds", "2", "--sample-steps", "1", "--fitness-steps", "1"]
    result = diffusion.main(argv)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(result))
    expected = {"base", "English specialist", "Japanese specialist", "linear", "slerp", "ties", "dare"}
    assert set(result["rows"]) == expected | {"M2N2 (attention)", "M2N2 (single)"}
    for row in result["rows"].values():
        assert 0 <= row["en"] <= 1 and 0 <= row["ja"] <= 1 and row["diversity"] >= 0
        assert row["mean"] == pytest.approx((row["en"] + row["ja"]) / 2, abs=1e-3)
    assert set(result["target"]) == {"above_every_other_row", "within_10_points_of_specialists"}
    assert result["m2n2"]["attention"]["steps"] == 1 and result["evaluation_seconds_per_model"] > 0
    assert Image.open(figure).format == "PNG"
