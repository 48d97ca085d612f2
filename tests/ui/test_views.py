"""The data behind the page (``ecosystem/views.py``), on small stores built here: no server, no browser."""

from pathlib import Path

import torch

from ecosystem import setup, tasks, views
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings
from m2n2.space import ParamSpace


def test_an_empty_archive_or_window_gives_empty_niches(tmp_path: Path) -> None:
    runtime = open_runtime(Settings(data_dir=tmp_path))
    try:
        setup.create(runtime, "classifier", {"layers": [4, 3]})
        assert views.niches(runtime)["niches"] == []
        tasks.create_task(runtime, name="t", scoring="accuracy", gate_share=0.0)
        tasks.add_feedback(runtime, "t", [{"inputs": [0.0, 1.0, 2.0, float(i)], "target": i % 3} for i in range(5)])
        found = views.niches(runtime)
    finally:
        runtime.close()
    assert found["members"] == [] and found["scores"] == [] and len(found["point_ids"]) == 5
    assert found["best"] == [None] * 5 and found["sharing"] == [0] * 5
    assert [(g["task"], g["points"], g["crowding"]) for g in found["niches"]] == [("t", 5, 0.0)]
    assert found["tasks"] == [{"name": "t", "points": 5, "coverage": 0.0}]


def test_clusters_are_deterministic_and_keep_equal_columns_together() -> None:
    generator = torch.Generator().manual_seed(0)
    patterns = (torch.rand(12, 5, generator=generator) > 0.5).float()  # up to 12 ways 5 members solve points
    columns = patterns[torch.randint(12, (300,), generator=generator)]  # (300 points, 5 members)
    labels = views._clusters(columns)
    assert torch.equal(labels, views._clusters(columns)) and int(labels.max()) < views.CLUSTERS
    for pattern in torch.unique(columns, dim=0):
        same = (columns == pattern).all(dim=1)
        assert len(set(labels[same].tolist())) == 1  # points every member scores alike share a niche
    few = columns[:, :1]  # one member: its solved and unsolved points, two niches
    assert sorted(set(views._clusters(few).tolist())) == [0, 1]


def test_a_split_point_is_located_in_its_tensor() -> None:
    space = ParamSpace([("a.weight", (4, 8), torch.float32), ("a.bias", (4,), torch.float32), ("b", (10,), torch.int8)])
    assert views.locate_split(space, 0)["tensor"] == "a.weight"
    found = views.locate_split(space, 33)
    assert (found["tensor"], found["tensor_index"], found["tensor_numel"]) == ("a.bias", 1, 4)
    assert found["fraction"] == 33 / 46
    assert views.locate_split(space, 45)["tensor"] == "b"
