"""Prometheus metrics of the ecosystem, all prefixed ``m2n2_``.

Several processes export them (serving workers and the evolver). prometheus-client's
multiprocess mode aggregates them when ``PROMETHEUS_MULTIPROC_DIR`` is set before this
module is imported; each gauge states how its per-process values combine.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Merges of small models take microseconds and of 7B models minutes.
DURATION_BUCKETS = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300)

EVOLUTION_STEPS = Counter("m2n2_evolution_steps_total", "M2N2 generations run by the evolver.")
CHILDREN = Counter("m2n2_children_total", "Children evaluated, by whether they entered the archive.", ["outcome"])
ARCHIVE_SIZE = Gauge("m2n2_archive_size", "Models in the archive.", multiprocess_mode="livemostrecent")
COVERAGE = Gauge(
    "m2n2_archive_coverage_ratio",
    "Mean over fitness points of the best member's score (share solved, for binary scores).",
    multiprocess_mode="livemostrecent",
)
ENTROPY = Gauge(
    "m2n2_archive_entropy_nats",
    "Entropy of the archive's parent-selection distribution (shared fitness, normalised).",
    multiprocess_mode="livemostrecent",
)
BEST_FITNESS = Gauge(
    "m2n2_best_fitness_score",
    "Mean fitness-window score of the archive's best member, per task.",
    ["task"],
    multiprocess_mode="livemostrecent",
)
CHAMPION_GATE_SCORE = Gauge(
    "m2n2_champion_gate_score", "Mean gate score of the champion, per task.", ["task"], multiprocess_mode="mostrecent"
)
PROMOTIONS = Counter("m2n2_promotions_total", "Champion promotions.")
ROLLBACKS = Counter("m2n2_rollbacks_total", "Champion rollbacks.")
MERGE_DURATION = Histogram("m2n2_merge_duration_seconds", "Time to build one child.", buckets=DURATION_BUCKETS)
EVALUATION_DURATION = Histogram(
    "m2n2_evaluation_duration_seconds", "Time to score one model on the fitness points.", buckets=DURATION_BUCKETS
)
RAY_IN_FLIGHT = Gauge(
    "m2n2_ray_evaluations_in_flight", "Children being scored on Ray actors now.", multiprocess_mode="livesum"
)
RAY_EVALUATION_DURATION = Histogram(
    "m2n2_ray_evaluation_duration_seconds",
    "Time one Ray evaluator actor took to score a child, per actor index.",
    ["actor"],
    buckets=DURATION_BUCKETS,
)
RAY_ACTORS = Gauge("m2n2_ray_actors", "Ray evaluator actors up.", multiprocess_mode="livesum")
RAY_ACTOR_RESTARTS = Counter("m2n2_ray_actor_restarts_total", "Ray evaluator actors replaced after dying.")
RAY_FALLBACKS = Counter(
    "m2n2_ray_fallbacks_total", "Times the Ray cluster was unreachable and children were scored in-process."
)
FEEDBACK_POINTS = Counter(
    "m2n2_feedback_points_total", "Feedback data points accepted, per task and pool.", ["task", "pool"]
)
REGISTERED_MODELS = Counter(
    "m2n2_registered_models_total", "Specialists registered, by whether they entered the archive.", ["outcome"]
)
SERVED_VERSION = Gauge(
    "m2n2_served_model_version", "Champion version served by each worker.", ["worker"], multiprocess_mode="liveall"
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
PREDICT_BATCH_SIZE = Histogram(
    "m2n2_predict_batch_size",
    "Inputs per batch run by a serving worker (adaptive batching).",
    buckets=BATCH_SIZE_BUCKETS,
)
LAST_HOT_SWAP_SECONDS = Gauge(
    "m2n2_last_hot_swap_seconds", "How long each worker's last hot swap took.", ["worker"], multiprocess_mode="liveall"
)
CHAMPION_BEHIND = Gauge(
    "m2n2_worker_champion_behind",
    "1 while a worker serves an older champion because it could not load the newest one.",
    ["worker"],
    multiprocess_mode="liveall",
)
CHAMPION_LOAD_FAILURES = Counter(
    "m2n2_champion_load_failures_total", "Champion versions a serving worker could not load (it kept the old one)."
)
CLIENT_DISCONNECTS = Counter(
    "m2n2_client_disconnects_total", "Requests whose client disconnected before sending the whole body.", ["route"]
)
HOT_SWAP_DURATION = Histogram(
    "m2n2_hot_swap_duration_seconds", "Time to load, smoke-test and swap in a new champion.", buckets=DURATION_BUCKETS
)


def exposition() -> tuple[bytes, str]:
    """The Prometheus text exposition and its content type, aggregated over every process of the ecosystem.

    With ``PROMETHEUS_MULTIPROC_DIR`` set (several workers plus the evolver), it merges the
    per-process files; otherwise it reports this process's registry.
    """
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
