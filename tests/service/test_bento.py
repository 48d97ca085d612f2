"""``bentoml build`` works without a package index, and the built Bento serves the ecosystem."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_built_bento_serves_the_ecosystem(tmp_path: Path, start_server) -> None:
    home = tmp_path / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "PIP_NO_INDEX": "1"}  # building must not reach an index
    built = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith("m2n2-ecosystem:")
    source = home / "bentos" / "m2n2-ecosystem" / tag.split(":")[1] / "src"
    assert {p.name for p in source.iterdir()} >= {"m2n2", "ecosystem", "service"}

    server = start_server(tmp_path, target=tag)  # served from the Bento store, outside the source tree
    try:
        with server.client() as c:
            response = c.post("/predict", json={"inputs": [[0.0] * 64]})
            assert response.status_code == 200 and "X-Model-Version" in response.headers
            assert c.post("/status").json()["tasks"][0]["name"] == "digits"
    finally:
        server.stop()
