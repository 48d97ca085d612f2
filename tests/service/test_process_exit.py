"""A server whose main process dies or is asked to stop leaves no worker behind, and restarts on its port."""

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from service.process import Server, serve

EXIT_SECONDS = 30  # the bound on a shutdown: the workers' graceful stop, with margin for a loaded machine


def children(pid: int) -> set[int]:
    """Processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_until(condition, seconds: float = EXIT_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.fixture
def server(tmp_path: Path):
    started = serve(tmp_path, M2N2_ADMIN_TOKEN="process-test-token", M2N2_SERVICE__WORKERS="2")
    yield started
    started.stop()


def test_a_sigkill_of_the_server_alone_ends_its_workers_and_the_port_is_reusable(server: Server) -> None:
    workers = children(server.process.pid)
    assert len(workers) >= 3  # two entry workers and the evolver
    os.kill(server.process.pid, signal.SIGKILL)  # the main process alone, not its group
    server.process.wait()
    assert wait_until(lambda: not any(alive(w) for w in workers)), "workers outlived their server"
    assert wait_until(lambda: port_closed(server.port))
    restarted = Server(server.data_dir, server.env, server.log_path, port=server.port).start()
    try:
        assert restarted.client().get("/readyz").status_code == 200  # and its evolver took the lock again
    finally:
        restarted.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_server_within_a_bound(server: Server, signum: int) -> None:
    workers = children(server.process.pid)
    start = time.monotonic()
    os.kill(server.process.pid, signum)
    server.process.wait(timeout=EXIT_SECONDS)
    assert wait_until(lambda: not any(alive(w) for w in workers), EXIT_SECONDS - (time.monotonic() - start))
