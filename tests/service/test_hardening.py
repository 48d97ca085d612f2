"""Hostile and broken requests on a real server: media types, URL uploads, dropped uploads, non-finite answers,
and a worker that cannot load the champion the store names."""

import http.server
import re
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from ecosystem import store
from ecosystem.db import begin_write
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings
from ecosystem.smoke import finite
from service.process import Server, serve

TOKEN = "hardening-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own: the last test here breaks its champion on purpose."""
    running = serve(tmp_path_factory.mktemp("hardening"), M2N2_ADMIN_TOKEN=TOKEN)
    running.wait_for_first_tick()
    yield running
    running.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def metric(server: Server, name: str) -> float:
    """The sum of a metric's samples over every label set and worker."""
    text = httpx.get(f"{server.url}/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


@pytest.mark.parametrize(
    ("route", "content_type", "status"),
    [
        ("/lineage", "multipart/form-data", 415),  # BentoML would fail with a 500 (no boundary)
        ("/register", "multipart/form-data", 400),  # the route's type, but no boundary
        ("/promote", "multipart/form-data; boundary=x", 415),
        ("/status", "text/plain", 415),
        ("/register", "application/x-www-form-urlencoded", 415),
        ("/register", "application/json", 415),
        ("/v1/completions", "text/plain", 415),
    ],
)
def test_a_request_in_a_media_type_the_route_does_not_take_is_refused(
    client: httpx.Client, route: str, content_type: str, status: int
) -> None:
    before = client.post("/status").json()["champion"]
    response = client.post(route, content=b'{"model": "0"}', headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert "Content-Type" in response.text or "boundary" in response.text
    assert client.post("/status").json()["champion"] == before


def test_the_server_never_downloads_a_url_sent_as_the_weights(client: httpx.Client) -> None:
    hits: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"not a checkpoint")

        def log_message(self, *args: object) -> None:
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Recorder) as listener:
        threading.Thread(target=listener.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{listener.server_port}/model.safetensors"
        response = client.post("/register", files={"weights": (None, url)}, data={"name": "fetched"})
        listener.shutdown()
    assert response.status_code == 422, response.text
    assert "upload the file" in response.json()["error"]
    assert hits == []


def test_a_client_that_drops_its_upload_is_logged_as_a_disconnect_not_an_error(server: Server) -> None:
    before = metric(server, "m2n2_client_disconnects_total")
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        head = (
            "POST /register HTTP/1.1\r\nHost: test\r\n"
            f"Authorization: Bearer {TOKEN}\r\n"
            "Content-Type: multipart/form-data; boundary=XX\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        part = b'--XX\r\nContent-Disposition: form-data; name="weights"; filename="m.safetensors"\r\n\r\n' + b"a" * 4096
        s.sendall(head.encode() + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while metric(server, "m2n2_client_disconnects_total") == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(server, "m2n2_client_disconnects_total") == before + 1
    log = server.log()
    assert "path=/register" in log and "status=499" in log
    assert "ClientDisconnect" not in log and "status=500" not in log


def test_an_answer_that_is_not_finite_is_refused_not_a_500(server: Server, client: httpx.Client) -> None:
    """Inputs valid as float32 can still overflow inside a model: that request gets 422, the others go on."""
    move = client.post("/promote", json={"model": "digits-0-4"}).json()
    runtime = open_runtime(Settings(data_dir=server.data_dir), migrate=False)
    try:  # which extreme input overflows depends on the weights: find one on the champion itself
        with runtime.sessions() as session:
            family, config, _ = runtime.family(session)
            model = store.model_by_name_or_id(session, "digits-0-4")
        module = family.build(config, runtime.source(model), "cpu")
        candidates = [[sign * 3e38] * 64 for sign in (1, -1)] + [[3e38, -3e38] * 32, [-3e38, 3e38] * 32]
        overflowing = next(x for x in candidates if not finite(family.predict(module, config, [x])))
    finally:
        runtime.close()
    deadline = time.monotonic() + 30
    while client.post("/predict", json={"inputs": [[1.0] * 64]}).headers["X-Model-Version"] != str(move["version"]):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    response = client.post("/predict", json={"inputs": [[1.0] * 64, overflowing]})
    assert response.status_code == 422, response.text
    assert "inputs [1]" in response.json()["error"] and "not finite" in response.json()["error"]
    assert client.post("/predict", json={"inputs": [[1.0] * 64]}).status_code == 200


def test_readyz_and_status_say_what_each_worker_serves(server: Server, client: httpx.Client) -> None:
    champion = client.post("/status").json()["champion"]
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["ready"] is True and ready["behind"] is False and ready["version"] == champion["version"]
    deadline = time.monotonic() + 30
    while len(workers := client.post("/status").json()["workers"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(workers) == 2  # the test server's two entry workers
    assert {w["version"] for w in workers} == {champion["version"]}
    assert all(w["model"] == champion["model"] and not w["behind"] for w in workers)


def test_a_worker_that_cannot_load_the_champion_keeps_serving_the_last_good_one_and_says_so(
    server: Server, client: httpx.Client
) -> None:
    good = client.post("/status").json()["champion"]
    runtime = open_runtime(Settings(data_dir=server.data_dir), migrate=False)
    try:  # the stored champion moves to a model whose weights then vanish (a disk fault, say)
        with runtime.sessions() as session:
            begin_write(session)
            other = next(m for m in store.archive(session).values() if m.name != good["model"])
            name = other.name
            runtime.artifacts.path_for(other.sha256).unlink()
            store.set_champion(session, other.id, "promote", "test", reason="a champion whose weights are gone")
            session.commit()
    finally:
        runtime.close()
    deadline = time.monotonic() + 30
    workers = client.post("/status").json()["workers"]
    while not all(w["behind"] for w in workers):
        assert time.monotonic() < deadline, workers
        time.sleep(0.5)
        workers = client.post("/status").json()["workers"]
    assert {w["version"] for w in workers} == {good["version"]} and {w["model"] for w in workers} == {good["model"]}
    assert {w["failed_version"] for w in workers} == {good["version"] + 1}
    assert all("has no stored weights" in w["error"] for w in workers), workers
    answer = client.post("/predict", json={"inputs": [[1.0] * 64]})
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == str(good["version"])
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["behind"] is True and ready.json()["model"] == good["model"]
    assert metric(server, "m2n2_worker_champion_behind") == 2
    assert name not in {w["model"] for w in workers}
