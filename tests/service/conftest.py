"""A real ``bentoml serve`` of the whole ecosystem (entry workers + evolver) on a free port."""

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service import process
from service.process import Server

TOKEN = "test-admin-token"


def serve(tmp: Path, target: str = Server.target, until: str = "/readyz", **env: str | None) -> Server:
    """A server on a fresh data directory with the test token (the evolver builds the digits demo first)."""
    return process.serve(tmp, target, until, **{"M2N2_ADMIN_TOKEN": TOKEN, **env})


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
