"""A real ``bentoml serve`` of the whole ecosystem (entry workers + evolver) on a free port."""

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service.process import ROOT, Server

TOKEN = "test-admin-token"


def serve(tmp: Path, target: str = "service.app:Ecosystem", **env: str | None) -> Server:
    """Start a server on a fresh data directory (the evolver builds the digits demo on its first start)."""
    defaults = {
        "M2N2_ADMIN_TOKEN": TOKEN,
        "M2N2_EVOLUTION__INTERVAL_SECONDS": "3600",  # evolution runs when a test asks for it
        "M2N2_EVOLUTION__STEPS_PER_TICK": "100",
        "M2N2_SERVICE__POLL_SECONDS": "0.2",
        "BENTOML_HOME": str(tmp / "bentoml"),
    }
    cwd = ROOT if target == Server.target else tmp  # a built Bento is served from outside the source tree
    return Server(tmp / "data", {**defaults, **env}, tmp / "serve.log", target, cwd).start()


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
