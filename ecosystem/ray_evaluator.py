"""Children scored on a Ray cluster: a pool of evaluator actors reading children from the shared artifact volume.

Each actor holds the family, the fitness points' task data and the scorer once; a child travels as the
path of its safetensors file (the data directory is mounted at the same path on every node), never as
tensors through Ray's object store. Results come back in the order asked for, whatever the order in
which actors finish, so a seeded batch-parallel run does not depend on the number of actors.

Faults: an actor that dies mid-evaluation is replaced and its child scored again; when the cluster
itself is gone (a replacement cannot start, or Ray cannot be reached) the pool scores in this process,
logs a warning, counts ``m2n2_ray_fallbacks_total`` and tries the cluster again later. ``ray`` is an
optional dependency (the ``ray`` extra), imported only when a Ray address is set.
"""

import contextlib
import functools
import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import torch

from ecosystem import metrics
from ecosystem.errors import EcosystemError
from ecosystem.families import get_family
from ecosystem.scoring import InProcessEvaluator, TaskData, task_data
from ecosystem.settings import EvolutionSettings
from m2n2.checkpoint import SafetensorsSource

log = logging.getLogger(__name__)

ACTOR_START_SECONDS = 120.0  # a pool (or a replacement actor) not up by then: the cluster cannot host it
RECONNECT_SECONDS = 300.0  # after losing the cluster, score in-process this long before trying it again
MAX_ATTEMPTS = 3  # a child that took down this many actors is an error of the child, not of the cluster
# A Ray driver exits its whole process when the cluster's GCS stays unreachable this long (Ray's default is
# 60 s): the evolver must outlive its cluster, so it waits a day and notices the loss itself (``_alive``).
DRIVER_GCS_TIMEOUT_SECONDS = 86_400
NAMESPACE = "m2n2"


class ClusterLost(EcosystemError):
    """The Ray cluster cannot be reached or cannot host the evaluator actors."""


class ScoringActor:
    """One evaluator on the cluster (a Ray actor once ``ray.remote`` wraps it): scores children by path."""

    def __init__(self, family: str, config: dict[str, Any], device: str, threads: int) -> None:
        torch.set_num_threads(threads)
        self.family, self.config, self.device = get_family(family), config, device
        self.version_: int | None = None
        self.scorer_: InProcessEvaluator | None = None

    def pid(self) -> int:
        """This actor's process id (also the call that tells the actor is up)."""
        return os.getpid()

    def set_points(self, version: int, tasks: TaskData) -> None:
        """Hold the fitness points' task data (``version`` names them in later ``score`` calls)."""
        self.scorer_ = InProcessEvaluator(self.family, self.config, tasks, self.device)
        self.version_ = version

    def score(self, version: int, path: str) -> tuple[torch.Tensor, float]:
        """The child's scores (n_points,) on points ``version``, and the seconds they took."""
        if version != self.version_ or self.scorer_ is None:
            raise RuntimeError(f"actor holds points version {self.version_}, asked to score on {version}")
        start = time.perf_counter()
        with SafetensorsSource(path) as source:
            scores = self.scorer_(source)
        return scores, time.perf_counter() - start


def _listening(address: str) -> bool:
    """Whether something accepts connections at ``host:port`` (or ``ray://host:port``) within 2 s.

    Asked before connecting, because Ray's driver waits for an unreachable cluster as long as it would
    for a restarting one; ``auto`` is left to Ray to resolve.
    """
    if address == "auto":
        return True
    host, port = address.removeprefix("ray://").rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
    except OSError:
        return False
    return True


@functools.cache
def _actor_class() -> Any:
    import ray

    return ray.remote(ScoringActor)


class RayEvaluator:
    """The ``Evaluator`` protocol over ``settings.ray_actors`` Ray actors, with an in-process fallback.

    ``bind`` points it at a family and a point set (the in-process evaluator of the same points, which
    also scores whatever has no file and everything while the cluster is gone).
    """

    def __init__(self, settings: EvolutionSettings) -> None:
        self.settings = settings
        self.local_: InProcessEvaluator | None = None
        self.actors_: list[Any] = []  # Ray actor handles, by index (the metrics' "actor" label)
        self.pids_: list[int] = []
        self._family_key: tuple[str, str] | None = None
        self._version = 0
        self._actor_versions: list[int | None] = []
        self._lost_at: float | None = None

    # -- setup ---------------------------------------------------------------------------------------
    def bind(self, family: str, local: InProcessEvaluator) -> "RayEvaluator":
        """Score ``local``'s points with ``family`` from now on; actors of another family or config go."""
        key = (family, repr(sorted(local.config.items())))
        if key != self._family_key and self.actors_:
            self._stop_actors()
        self._family_key, self.local_ = key, local
        self._version += 1  # actors take the new points before their next child
        return self

    def _new_actor(self) -> Any:
        assert self.local_ is not None and self._family_key is not None
        gpus = self.settings.ray_actor_gpus
        device = "cuda" if gpus > 0 else "cpu"  # Ray sets the actor's CUDA_VISIBLE_DEVICES to its own GPUs
        resources = {"num_cpus": self.settings.torch_threads, "num_gpus": gpus}
        return (
            _actor_class()
            .options(max_restarts=0, **resources)
            .remote(self._family_key[0], self.local_.config, device, self.settings.torch_threads)
        )

    def _start(self) -> None:
        """Connect to the cluster and start the pool; ``ClusterLost`` when either fails."""
        try:
            import ray
        except ImportError:
            raise EcosystemError(
                "M2N2_EVOLUTION__RAY_ADDRESS is set but ray is not installed: pip install 'm2n2[ray]'"
            ) from None

        if not ray.is_initialized() and not _listening(self.settings.ray_address):
            raise ClusterLost(f"nothing answers at the Ray address {self.settings.ray_address}")
        actors: list[Any] = []
        try:
            if not ray.is_initialized():
                os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(DRIVER_GCS_TIMEOUT_SECONDS))
                ray.init(address=self.settings.ray_address, namespace=NAMESPACE, log_to_driver=False)
            actors = [self._new_actor() for _ in range(self.settings.ray_actors)]
            self.pids_ = ray.get([a.pid.remote() for a in actors], timeout=ACTOR_START_SECONDS)
        except Exception as e:  # connection refused, auth, no room for the actors: no usable cluster
            for handle in actors:  # actors still waiting for resources would hold them later
                with contextlib.suppress(Exception):
                    ray.kill(handle, no_restart=True)
            raise ClusterLost(f"no Ray cluster at {self.settings.ray_address}: {e}") from e
        self.actors_ = actors
        self._actor_versions = [None] * len(actors)
        metrics.RAY_ACTORS.set(len(actors))
        log.info("scoring children on %d Ray actors at %s", len(actors), self.settings.ray_address)

    def _ready(self) -> bool:
        """Whether the pool is up, starting it unless the cluster was lost less than RECONNECT_SECONDS ago."""
        if self.actors_:
            if self._alive():
                return True
            self._fall_back(ClusterLost(f"the Ray cluster at {self.settings.ray_address} is gone"))
            return False
        if self._lost_at is not None and time.monotonic() - self._lost_at < RECONNECT_SECONDS:
            return False
        try:
            self._start()
        except ClusterLost as e:
            self._fall_back(e)
            return False
        return True

    # -- the Evaluator protocol ----------------------------------------------------------------------
    def __call__(self, genome: Any) -> torch.Tensor:
        return self.evaluate([genome])[0]

    def evaluate(self, genomes: Sequence[Any]) -> list[torch.Tensor]:
        """Scores of ``genomes`` in order: files on the actors, in-memory genomes (and all, without a cluster) here."""
        if self.local_ is None:
            raise EcosystemError("RayEvaluator.bind() was not called: no points to score on")
        results: list[torch.Tensor | None] = [None] * len(genomes)
        remote = [i for i, g in enumerate(genomes) if getattr(g, "path", None) is not None]
        if remote and self._ready():
            try:
                self._score_remotely(genomes, remote, results)
            except ClusterLost as e:
                self._fall_back(e)
        for i, genome in enumerate(genomes):
            if results[i] is None:
                results[i] = self._score_here(genome)
        return results

    def _score_here(self, genome: Any) -> torch.Tensor:
        assert self.local_ is not None
        with metrics.EVALUATION_DURATION.time():
            return self.local_(genome)

    def _score_remotely(self, genomes: Sequence[Any], indices: list[int], results: list) -> None:
        """Fill ``results[i]`` for ``indices``: one child per idle actor, dead actors replaced, children retried."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        queue, idle = deque(indices), deque(range(len(self.actors_)))
        in_flight: dict[Any, tuple[int, int]] = {}  # object ref -> (actor, child)
        attempts: Counter[int] = Counter()
        try:
            while queue or in_flight:
                while queue and idle:
                    actor, child = idle.popleft(), queue.popleft()
                    try:  # Ray Client raises ConnectionError here (hashing the ref) once the cluster is gone
                        in_flight[self._submit(actor, str(genomes[child].path))] = (actor, child)
                    except Exception as e:
                        raise ClusterLost(f"Ray refused a child: {e}") from e
                metrics.RAY_IN_FLIGHT.set(len(in_flight))
                try:
                    done, _ = ray.wait(list(in_flight), num_returns=1)
                except Exception as e:
                    raise ClusterLost(f"Ray stopped answering: {e}") from e
                for ref in done:
                    actor, child = in_flight.pop(ref)
                    try:
                        scores, seconds = ray.get(ref)
                    except RayActorError as e:
                        if not self._alive():
                            raise ClusterLost(f"the Ray cluster at {self.settings.ray_address} is gone") from e
                        attempts[child] += 1
                        if attempts[child] >= MAX_ATTEMPTS:
                            raise EcosystemError(
                                f"child {genomes[child].path.name} ended {MAX_ATTEMPTS} evaluator actors"
                            ) from e
                        log.warning("Ray evaluator actor %d died (%s); replacing it", actor, type(e).__name__)
                        self._replace(actor)
                        queue.appendleft(child)
                    except RayTaskError as e:  # the scoring itself failed: the child's error, raised as it was
                        raise e.as_instanceof_cause() from None
                    except Exception as e:
                        raise ClusterLost(f"Ray lost a result: {e}") from e
                    else:
                        results[child] = scores
                        metrics.RAY_EVALUATION_DURATION.labels(str(actor)).observe(seconds)
                        metrics.EVALUATION_DURATION.observe(seconds)
                    idle.append(actor)
        finally:
            metrics.RAY_IN_FLIGHT.set(0)

    def _submit(self, actor: int, path: str) -> Any:
        handle = self.actors_[actor]
        if self._actor_versions[actor] != self._version:
            assert self.local_ is not None
            handle.set_points.remote(self._version, task_data(self.local_.points))  # runs before the score below
            self._actor_versions[actor] = self._version
        return handle.score.remote(self._version, path)

    def _replace(self, actor: int) -> None:
        """A fresh actor in place of a dead one; ``ClusterLost`` when it cannot start."""
        import ray

        metrics.RAY_ACTOR_RESTARTS.inc()
        with contextlib.suppress(Exception):  # already gone: nothing to stop
            ray.kill(self.actors_[actor], no_restart=True)
        try:
            fresh = self._new_actor()
            self.pids_[actor] = ray.get(fresh.pid.remote(), timeout=ACTOR_START_SECONDS)
        except Exception as e:
            raise ClusterLost(f"a replacement evaluator actor did not start: {e}") from e
        self.actors_[actor], self._actor_versions[actor] = fresh, None

    # -- losing the cluster --------------------------------------------------------------------------
    def _alive(self) -> bool:
        """Whether the cluster still answers: Ray Client's connection, else a TCP connect to the GCS (2 s)."""
        import ray
        from ray.util.client import ray as client

        if client.is_connected():
            return True  # a lost Ray Client connection raises ConnectionError on the next call instead
        return ray.is_initialized() and _listening(ray.get_runtime_context().gcs_address)

    def _fall_back(self, error: Exception) -> None:
        log.warning(
            "%s; scoring children in this process, trying the cluster again in %.0f s", error, RECONNECT_SECONDS
        )
        metrics.RAY_FALLBACKS.inc()
        self._lost_at = time.monotonic()
        self.actors_, self.pids_, self._actor_versions = [], [], []
        metrics.RAY_ACTORS.set(0)
        self._disconnect()

    def _stop_actors(self) -> None:
        import ray

        for handle in self.actors_ if ray.is_initialized() else ():  # ray.kill would start a local Ray
            with contextlib.suppress(Exception):  # the cluster or the actor is gone already
                ray.kill(handle, no_restart=True)
        self.actors_, self.pids_, self._actor_versions = [], [], []
        metrics.RAY_ACTORS.set(0)

    def _disconnect(self) -> None:
        import ray

        try:
            ray.shutdown()  # a driver left attached to a dead cluster may exit the process later
        except Exception as e:
            log.debug("ray.shutdown after losing the cluster: %s", e)

    def close(self) -> None:
        """Stop the actors and leave the cluster."""
        if self.actors_:
            self._stop_actors()
        self._disconnect()
