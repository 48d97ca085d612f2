"""A real ``bentoml serve`` of the ecosystem, scraped every second by a real Prometheus.

Prometheus comes from scripts/prometheus.sh: it installs Debian's ``prometheus`` package when the binary is
missing (root and apt-get needed), then runs ``/usr/bin/prometheus`` on a free loopback port with its config
and TSDB in a temporary directory. Where it can be neither found nor installed, the tests that need it skip
and say why.
"""

import math
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.process import Server, serve

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "prometheus.sh"
INSTALL_SECONDS = 600  # apt-get update + install on a slow mirror


@dataclass
class Prometheus:
    """A running Prometheus and a small client for its HTTP API."""

    url: str

    def query(self, expr: str) -> dict:
        """``/api/v1/query`` at now: the whole answer (``status``, ``data`` or ``error``)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        try:
            return response.json()
        except ValueError:
            return {"status": "error", "error": f"HTTP {response.status_code}: {response.text[:500]}"}

    def values(self, expr: str) -> list[float]:
        """The sample values of an instant query (empty on an error or no result)."""
        answer = self.query(expr)
        if answer.get("status") != "success":
            return []
        data = answer["data"]
        if data["resultType"] == "scalar":
            return [float(data["result"][1])]
        return [float(sample["value"][1]) for sample in data["result"]]

    def wait_for(self, expr: str, timeout: float = 30) -> None:
        """Wait until ``expr`` returns at least one finite value (a filter such as ``x >= 3`` works)."""
        deadline = time.monotonic() + timeout
        while not any(math.isfinite(v) for v in self.values(expr)):
            assert time.monotonic() < deadline, f"Prometheus never answered {expr!r} within {timeout} s"
            time.sleep(0.25)


def _run_script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The Prometheus binary, installed from Debian's package when missing; skips where that cannot work."""
    try:
        done = _run_script("install", timeout=INSTALL_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.skip(f"installing Prometheus took over {INSTALL_SECONDS} s (scripts/prometheus.sh install)")
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-3:]
        pytest.skip(f"Prometheus is not installed and `scripts/prometheus.sh install` failed: {' / '.join(reason)}")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, prometheus_binary: str) -> Iterator[Server]:
    """The whole ecosystem (two entry workers and the evolver) on a fresh data directory.

    It needs Prometheus: without it there is nothing to test here, so it is not started.
    """
    running = serve(tmp_path_factory.mktemp("observed"), M2N2_ADMIN_TOKEN="observability-token")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, server: Server) -> Iterator[Prometheus]:
    """Prometheus scraping the server's /metrics every second, from now on."""
    workdir = tmp_path_factory.mktemp("prometheus") / "server"
    started = _run_script("start", str(workdir), f"127.0.0.1:{server.port}", timeout=120)
    if started.returncode != 0:
        pytest.fail(f"scripts/prometheus.sh start failed:\n{started.stderr[-3000:]}")
    try:
        yield Prometheus(started.stdout.strip().splitlines()[-1])
    finally:
        _run_script("stop", str(workdir), timeout=60)


@pytest.fixture
def admin(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client
