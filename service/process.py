"""``bentoml serve`` of the whole ecosystem as a child process on a free port: for tests and benchmarks."""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]  # the source tree: `service.app` imports from here
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
    target: str = "service.app:Ecosystem"  # what `bentoml serve` serves: the source tree, or a built Bento's tag
    cwd: Path = ROOT
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, until: str = "/readyz") -> "Server":
        """Start ``bentoml serve`` and wait until ``until`` answers 200 (``/livez``: up, champion or not)."""
        env = {**os.environ, "M2N2_DATA_DIR": str(self.data_dir), "BENTOML_PORT": str(self.port), **self.env}
        env = {k: v for k, v in env.items() if v is not None and k != "PROMETHEUS_MULTIPROC_DIR"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", self.target, "--host", "127.0.0.1"],
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches every worker
            )
        self.wait_for(until)
        return self

    def wait_for(self, route: str = "/readyz") -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"{self.url}{route}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{route} did not answer 200 within {STARTUP_SECONDS} s:\n{self.log()[-4000:]}")

    def wait_for_first_tick(self, timeout: float = 120) -> None:
        """Wait until the evolver's tick at start and its promotion are over: the store then stays put.

        Done when ``/status`` shows at least one tick's steps and the same steps and champion
        version twice, a second apart.
        """
        steps = int(self.env.get("M2N2_EVOLUTION__STEPS_PER_TICK") or 1)
        deadline, last = time.monotonic() + timeout, None
        with self.client() as c:
            while True:
                status = c.post("/status").json()
                now = (status["steps"], (status["champion"] or {}).get("version"))
                if status["steps"] >= steps and now == last:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the evolver's first tick did not finish within {timeout} s: {now}")
                last = now
                time.sleep(1.0)

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

    def client(self, token: str | None = None, anonymous: bool = False) -> httpx.Client:
        """A client sending ``token`` (default: the server's M2N2_ADMIN_TOKEN), or none when ``anonymous``."""
        token = None if anonymous else token or self.env.get("M2N2_ADMIN_TOKEN")
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def serve(workdir: Path, target: str = Server.target, until: str = "/readyz", **env: str | None) -> Server:
    """Start a server whose data directory, BentoML home and log live in ``workdir``; it evolves only when asked.

    ``env`` adds or (with None) removes environment variables; a built Bento's tag as ``target``
    is served from ``workdir``, outside the source tree.
    """
    defaults = {
        "M2N2_EVOLUTION__INTERVAL_SECONDS": "3600",  # one tick at start, then only on /evolve
        "M2N2_EVOLUTION__STEPS_PER_TICK": "100",
        "M2N2_SERVICE__POLL_SECONDS": "0.2",
        "BENTOML_HOME": str(workdir / "bentoml"),
    }
    cwd = ROOT if target == Server.target else workdir
    return Server(workdir / "data", {**defaults, **env}, workdir / "serve.log", target, cwd).start(until)
