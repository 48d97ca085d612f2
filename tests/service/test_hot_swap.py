"""Hot swap under load: promotions and rollbacks while clients call predict, and no request fails."""

import re
import threading
import time

import httpx

CLIENTS = 4
MOVES = 12  # six promotions and six rollbacks
PAUSE = 1.5  # seconds between moves: about 20 s of load in all
SERVED = re.compile(r'^m2n2_served_model_version\{[^}]*worker="(\d+)"[^}]*\} ([0-9.]+)$', re.M)


def served_versions(client: httpx.Client) -> dict[str, int]:
    """The version each live worker serves, from /metrics."""
    return {worker: int(float(v)) for worker, v in SERVED.findall(client.get("/metrics").text)}


def test_swaps_under_load_fail_no_request_and_reach_every_worker_quickly(server) -> None:
    stop = threading.Event()
    seen: list[tuple[int, str | None]] = []  # (status, X-Model-Version) of every predict
    lock = threading.Lock()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/predict", json={"inputs": [[float(i % 17) for i in range(64)]]})
                    result = (r.status_code, r.headers.get("X-Model-Version"))
                except httpx.HTTPError as error:
                    result = (0, repr(error))
                with lock:
                    seen.append(result)

    threads = [threading.Thread(target=load) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    lags: list[float] = []
    try:
        with server.client() as admin:
            champion = admin.post("/status").json()["champion"]["model"]
            other = "digits-5-9" if champion != "digits-5-9" else "digits-0-4"
            workers = set(served_versions(admin))
            assert len(workers) == 2
            for i in range(MOVES):
                move = admin.post("/promote", json={"model": other}) if i % 2 == 0 else admin.post("/rollback", json={})
                assert move.status_code == 200, move.text
                version, moved_at = move.json()["version"], time.monotonic()
                while (served := served_versions(admin)) and any(served.get(w) != version for w in workers):
                    assert time.monotonic() - moved_at < 10, f"workers still serve {served}, expected {version}"
                    time.sleep(0.05)
                lags.append(time.monotonic() - moved_at)
                time.sleep(PAUSE)
            history = admin.post("/status").json()["history"]
    finally:
        stop.set()
        for t in threads:
            t.join()

    failures = [s for s in seen if s[0] != 200]
    assert not failures, f"{len(failures)} of {len(seen)} predict calls failed, e.g. {failures[:3]}"
    champion_versions = {str(event["version"]) for event in history}
    assert {v for _, v in seen} <= champion_versions
    assert len({v for _, v in seen}) >= MOVES // 2  # the clients really saw the swaps
    assert max(lags) < 2.0, f"slowest worker caught up after {max(lags):.2f} s"
