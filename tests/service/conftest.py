"""A real ``bentoml serve`` of the whole ecosystem (entry workers + evolver) on a free port."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-admin-token"
STARTUP_SECONDS = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One ``bentoml serve service.app:Ecosystem`` process tree and a client for it."""

    data_dir: Path
    env: dict[str, str | None]  # None removes a variable
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        env = {**os.environ, "M2N2_DATA_DIR": str(self.data_dir), "BENTOML_PORT": str(self.port), **self.env}
        env = {k: v for k, v in env.items() if v is not None and k != "PROMETHEUS_MULTIPROC_DIR"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", "service.app:Ecosystem", "--host", "127.0.0.1"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches every worker
            )
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the service was not ready within {STARTUP_SECONDS} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def serve(tmp: Path, **env: str | None) -> Server:
    """Start a server on a fresh data directory (the evolver builds the digits demo on its first start)."""
    defaults = {
        "M2N2_ADMIN_TOKEN": TOKEN,
        "M2N2_EVOLUTION__INTERVAL_SECONDS": "3600",  # evolution runs when a test asks for it
        "M2N2_EVOLUTION__STEPS_PER_TICK": "100",
        "M2N2_SERVICE__POLL_SECONDS": "0.2",
        "BENTOML_HOME": str(tmp / "bentoml"),
    }
    return Server(tmp / "data", {**defaults, **env}, tmp / "serve.log").start()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server: two entry workers, a small upload limit, the admin token from the environment."""
    running = serve(tmp_path_factory.mktemp("service"), M2N2_SERVICE__MAX_REQUEST_BYTES=str(400_000))
    yield running
    running.stop()


@pytest.fixture
def start_server() -> Callable[..., Server]:
    """``serve`` for tests that need a server of their own."""
    return serve


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
