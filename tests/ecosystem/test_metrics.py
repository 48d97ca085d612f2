"""Metrics exported by several processes add up in one exposition (prometheus-client multiprocess mode)."""

import os
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

WORKER = """
import sys
from ecosystem import metrics
steps, admitted, size, worker = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
metrics.EVOLUTION_STEPS.inc(steps)
metrics.CHILDREN.labels("admitted").inc(admitted)
metrics.ARCHIVE_SIZE.set(size)
metrics.SERVED_VERSION.labels(worker).set(steps)
metrics.MERGE_DURATION.observe(0.002)
sys.stdin.read()  # stay alive until the test has read the metrics: "live" gauges drop dead processes
"""


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_from_several_processes_are_aggregated(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, *args], env=env, stdin=subprocess.PIPE)
        for args in (("5", "2", "4", "w1"), ("7", "3", "6", "w2"))
    ]
    try:
        reader = "from ecosystem.metrics import exposition; import sys; sys.stdout.write(exposition()[0].decode())"
        for _ in range(50):  # wait until both workers have written their samples
            text = subprocess.run(
                [sys.executable, "-c", reader], env=env, capture_output=True, text=True, check=True
            ).stdout
            got = samples(text)
            if got.get(("m2n2_evolution_steps_total", ())) == 12:
                break
        assert got[("m2n2_evolution_steps_total", ())] == 12
        assert got[("m2n2_children_total", (("outcome", "admitted"),))] == 5
        assert got[("m2n2_merge_duration_seconds_count", ())] == 2
        assert got[("m2n2_served_model_version", (("worker", "w1"),))] == 5
        assert got[("m2n2_served_model_version", (("worker", "w2"),))] == 7
        assert got[("m2n2_archive_size", ())] in (4, 6)  # the most recent write of a live process
    finally:
        for worker in workers:
            worker.communicate(b"")


def test_exposition_without_multiprocess_dir_reports_this_process(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    from ecosystem import metrics

    metrics.PROMOTIONS.inc()
    text, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    assert b"m2n2_promotions_total" in text


def test_a_tick_times_every_merge_and_evaluation(demo_dir):
    from ecosystem import metrics
    from ecosystem.evolver import Evolver
    from ecosystem.runtime import open_runtime
    from ecosystem.settings import Settings

    def count(histogram) -> float:
        return next(s.value for s in histogram.collect()[0].samples if s.name.endswith("_count"))

    runtime = open_runtime(Settings(data_dir=demo_dir))
    merges, evaluations = count(metrics.MERGE_DURATION), count(metrics.EVALUATION_DURATION)
    report = Evolver(runtime).tick(steps=20)
    runtime.close()
    assert report.steps == 20
    assert count(metrics.MERGE_DURATION) - merges == 20
    assert count(metrics.EVALUATION_DURATION) - evaluations == 20
