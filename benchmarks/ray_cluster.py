"""A real single-node Ray cluster for tests and benchmarks: ``ray start --head``, stopped by its process group.

``ray start --block`` keeps the head's processes (GCS, raylet, workers) in one process group of its own,
so stopping the cluster signals exactly the processes it started, never another Ray on the machine.
Token authentication is turned off for the cluster and this process alike (``RAY_AUTH_MODE``), so a
leftover token from an earlier cluster cannot lock the driver out.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """``with LocalCluster(num_cpus=2) as cluster:`` a head node until the block ends.

    ``address`` is its GCS (``host:port``), ``client_address`` its Ray Client server (``ray://host:port``).
    """

    def __init__(self, num_cpus: int = 2, start_seconds: float = 120.0) -> None:
        self.num_cpus, self.start_seconds = num_cpus, start_seconds
        self.address = self.client_address = ""
        self._head: subprocess.Popen | None = None
        self._temp: Path | None = None

    def start(self) -> "LocalCluster":
        """Start the head and wait until its GCS and Ray Client ports answer (``RuntimeError`` with its log if not)."""
        os.environ.update(RAY_ENV)
        port, client_port = free_port(), free_port()
        # Ray's unix sockets live under the temp dir, and their paths must stay under ~107 characters.
        self._temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        ray = Path(sys.executable).with_name("ray")
        command = [
            str(ray) if ray.is_file() else "ray",
            *("start", "--head", "--block", "--port", str(port), "--num-cpus", str(self.num_cpus)),
            *("--ray-client-server-port", str(client_port)),
            *("--temp-dir", str(self._temp), "--node-ip-address", "127.0.0.1"),
            *("--include-dashboard=false", "--disable-usage-stats"),
        ]
        log = open(self._temp / "head.log", "w")  # noqa: SIM115 - the head writes to it until it stops
        self._head = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **RAY_ENV}, start_new_session=True
        )
        self.address, self.client_address = f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}"
        deadline = time.monotonic() + self.start_seconds
        while time.monotonic() < deadline:
            if self._head.poll() is not None:
                break
            try:
                for listening in (port, client_port):
                    socket.create_connection(("127.0.0.1", listening), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ray start --head did not come up: {(self._temp / 'head.log').read_text()[-2000:]}")

    def kill(self) -> None:
        """Stop the cluster at once (SIGKILL to its process group), as a crashed node would."""
        if self._head is not None and self._head.poll() is None:
            os.killpg(self._head.pid, signal.SIGKILL)
            self._head.wait()

    def stop(self) -> None:
        """Stop the cluster (SIGTERM, then SIGKILL after 5 s) and delete its temp dir."""
        if self._head is not None:
            if self._head.poll() is None:
                os.killpg(self._head.pid, signal.SIGTERM)
                try:
                    self._head.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(self._head.pid, signal.SIGKILL)
                    self._head.wait()
            with contextlib.suppress(ProcessLookupError):  # workers the head started may outlive it briefly
                os.killpg(self._head.pid, signal.SIGKILL)
            self._head = None
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
