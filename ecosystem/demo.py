"""The embedded default ecosystem: the paper's digits setting, ready in seconds.

Two specialists (digits 0-4 and 5-9, one shared init) are registered with lineage; the
``digits`` task gets the training split as fitness feedback and the held-out split as
its gate set. ``simulate_feedback`` streams new labelled digits to exercise the
fresh-feedback path.
"""

import logging
import tempfile
import time
from pathlib import Path

import torch

from ecosystem import metrics, store
from ecosystem.db import begin_write
from ecosystem.runtime import Runtime
from ecosystem.specialists import Registration, register
from m2n2 import digits
from m2n2.checkpoint import write_safetensors

log = logging.getLogger(__name__)

TASK = "digits"
FAMILY_CONFIG = {"layers": [64, 256, 10]}
SOURCE = "sklearn load_digits, first 80% of images, digits {}; 10 full-batch Adam steps (lr 3e-3) from a shared init"
LICENCE = "BSD-3-Clause"  # scikit-learn's, which ships the digits data


def init_digits(runtime: Runtime, seed: int = 42) -> list[Registration]:
    """Create the digits ecosystem in an empty store and register its two specialists."""
    data = digits.load_split()
    space = digits.mlp_space()
    settings = runtime.settings.evolution
    with runtime.sessions() as session:
        store.create_ecosystem(
            session,
            family="classifier",
            family_config=FAMILY_CONFIG,
            space=space,
            archive_size=settings.archive_size,
            alpha=settings.alpha,
        )
        task = store.create_task(session, name=TASK, scoring="accuracy", window=len(data.x_train), gate_share=0.2)
        splits = (("fitness", data.x_train, data.y_train), ("gate", data.x_test, data.y_test))
        for pool, x, y in splits:
            points = [
                {"inputs": row, "target": label, "pool": pool}
                for row, label in zip(x.tolist(), y.tolist(), strict=True)
            ]
            added, _ = store.add_points(session, task, points)
            metrics.FEEDBACK_POINTS.labels(TASK, pool).inc(len(added))
        session.commit()
    registrations = []
    with tempfile.TemporaryDirectory(dir=runtime.artifacts.root) as tmp:
        for label, flat in zip(("0-4", "5-9"), digits.train_specialists(data, space, seed), strict=True):
            path = write_safetensors(Path(tmp) / f"digits-{label}.safetensors", space, space.unflatten(flat).items())
            registrations.append(
                register(
                    runtime,
                    path,
                    name=f"digits-{label}",
                    registered_by="m2n2 init --demo",
                    source=SOURCE.format(label),
                    licence=LICENCE,
                )
            )
    return registrations


def simulate_feedback(runtime: Runtime, rate: float = 2.0, seconds: float | None = None, seed: int = 0) -> int:
    """Post new labelled digits (dataset images with pixel noise) at ``rate`` per second; returns how many."""
    data = digits.load_split()
    images, labels = data.x_train, data.y_train
    generator = torch.Generator().manual_seed(seed)
    deadline = None if seconds is None else time.monotonic() + seconds
    posted = 0
    while deadline is None or time.monotonic() < deadline:
        i = int(torch.randint(len(images), (), generator=generator))
        noisy = (images[i] + torch.randn(images.shape[1], generator=generator)).round().clamp(0, 16)
        with runtime.sessions() as session:
            begin_write(session)  # reads, then writes: on SQLite it must hold the write lock from the start
            task = store.get_task(session, TASK)
            added, _ = store.add_points(session, task, [{"inputs": noisy.tolist(), "target": int(labels[i])}])
            session.commit()
            for point in added:
                metrics.FEEDBACK_POINTS.labels(TASK, point.pool).inc()
        posted += len(added)
        time.sleep(1.0 / rate)
    return posted
