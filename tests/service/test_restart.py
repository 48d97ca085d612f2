"""The generated admin token, and a restart that keeps archive, champion and tasks."""

from pathlib import Path


def test_generated_token_and_restart_keep_the_ecosystem(tmp_path: Path, start_server) -> None:
    server = start_server(tmp_path, M2N2_ADMIN_TOKEN=None)  # no token in the environment: one is generated
    try:
        token_file = server.data_dir / "admin-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert server.log().count(token) == 1  # printed once, by the process that generated it
        with server.client(token=token) as c:
            assert c.post("/tasks", json={"name": "kept", "scoring": "likelihood"}).status_code == 200
            champion = c.post("/status").json()["champion"]["model"]
            other = "digits-5-9" if champion != "digits-5-9" else "digits-0-4"
            assert c.post("/promote", json={"model": other}).status_code == 200
            before = c.post("/status").json()
    finally:
        server.stop()

    server.start()  # same data directory, same port; its first tick may promote again, never forget
    try:
        with server.client(token=token) as c:
            served = int(c.post("/predict", json={"inputs": [[0.0] * 64]}).headers["X-Model-Version"])
            after = c.post("/status").json()
            for member in before["archive"]:  # every model is still stored, whatever the archive holds now
                assert c.post("/lineage", json={"model": member["model"]}).status_code == 200
        assert before["champion"]["version"] <= served <= after["champion"]["version"]
        kept = [(e["version"], e["action"], e["model"]) for e in before["history"]]
        assert kept == [(e["version"], e["action"], e["model"]) for e in after["history"]][-len(kept) :]
        assert {t["name"] for t in after["tasks"]} == {"digits", "kept"}
        assert after["steps"] >= before["steps"]
        assert token_file.read_text().strip() == token and server.log().count(token) == 1
    finally:
        server.stop()


def test_not_ready_without_a_champion(tmp_path: Path, start_server) -> None:
    """An empty store and no demo: the workers live, but are not ready and refuse predictions."""
    server = start_server(tmp_path, until="/livez", M2N2_SERVICE__INIT_DEMO="false")
    try:
        with server.client() as c:
            assert c.get("/livez").status_code == 200
            assert c.get("/readyz").status_code == 503
            response = c.post("/predict", json={"inputs": [[0.0] * 64]})
            assert response.status_code == 503 and "no champion" in response.text
    finally:
        server.stop()
