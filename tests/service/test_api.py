"""Every endpoint of the running service, with its error paths and the auth cases."""

import io
import random
import zipfile

import httpx
import pytest
import torch
from safetensors.torch import load, save, save_file

DIGIT = [float(v % 17) for v in range(64)]


def state_dict(client: httpx.Client, model: str) -> dict[str, torch.Tensor]:
    """A stored model's weights, fetched through /export."""
    response = client.post("/export", json={"model": model})
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        return load(zf.read("model.safetensors"))


def upload(client: httpx.Client, name: str, body: bytes, **fields: str) -> httpx.Response:
    return client.post("/register", files={"weights": ("model.safetensors", body)}, data={"name": name, **fields})


def model_count(client: httpx.Client) -> int:
    status = client.post("/status").json()
    return len(status["archive"])


def test_predict_returns_labels_probabilities_and_the_served_version(client: httpx.Client) -> None:
    response = client.post("/predict", json={"inputs": [DIGIT, [0.0] * 64]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body) == 2
    for item in body:
        assert 0 <= item["label"] < 10 and len(item["probabilities"]) == 10
        assert sum(item["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert item["label"] == max(range(10), key=item["probabilities"].__getitem__)
    assert response.headers["X-Model-Version"] == str(body[0]["model_version"])
    champion = client.post("/status").json()["champion"]
    assert body[0]["model_version"] <= champion["version"]


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ([[1.0, 2.0]], "inputs[0]: expected a list of 64 numbers, got 2 values"),
        ([DIGIT, [1.0, 2.0]], "inputs[1]: expected a list of 64 numbers, got 2 values"),
        ([["x"] * 64], "inputs.0.0: Input should be a valid number"),
        ([], "inputs: List should have at least 1 item"),
    ],
)
def test_malformed_predict_input_is_422_naming_the_field(client: httpx.Client, inputs: list, field: str) -> None:
    response = client.post("/predict", json={"inputs": inputs})
    assert response.status_code == 422
    assert field in response.json()["error"]


def test_reads_are_open_and_writes_need_the_token(server) -> None:
    with server.client(anonymous=True) as anonymous, server.client(token="wrong") as wrong:
        assert anonymous.post("/status").status_code == 200
        assert anonymous.post("/predict", json={"inputs": [DIGIT]}).status_code == 200
        for path, body in [
            ("/rollback", {}),
            ("/promote", {"model": "digits-0-4"}),
            ("/evolve", {}),
            ("/tasks", {"name": "t", "scoring": "accuracy"}),
            ("/feedback", {"task": "digits", "points": [{"inputs": DIGIT, "target": 1}]}),
            ("/register_path", {"path": "/x", "name": "x"}),
        ]:
            missing = anonymous.post(path, json=body)
            assert missing.status_code == 401, path
            assert missing.headers["WWW-Authenticate"].startswith("Bearer")
            assert wrong.post(path, json=body).status_code == 403, path
        assert (
            anonymous.post("/register", files={"weights": ("m.safetensors", b"x")}, data={"name": "m"}).status_code
            == 401
        )


def test_status_lists_archive_coverage_champion_and_history(client: httpx.Client) -> None:
    status = client.post("/status").json()
    assert status["family"] == "classifier" and status["archive"]
    assert {"name": "digits", "scoring": "accuracy"}.items() <= status["tasks"][0].items()
    assert 0 <= status["coverage"]["all"] <= 1
    assert status["champion"]["gate"]["digits"] >= 0
    assert status["history"][-1]["action"] == "initial"
    assert sum(member["champion"] for member in status["archive"]) <= 1


def test_lineage_and_export_of_a_model(client: httpx.Client) -> None:
    lineage = client.post("/lineage", json={"model": "digits-0-4"}).json()
    assert lineage[0]["model"] == "digits-0-4" and lineage[0]["kind"] == "specialist" and lineage[0]["parents"] == []
    response = client.post("/export", json={"model": "digits-0-4"})
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        assert sorted(zf.namelist()) == ["README.md", "model.safetensors"]
        assert "digits-0-4" in zf.read("README.md").decode()
    assert client.post("/lineage", json={"model": "no-such-model"}).status_code == 404
    assert client.post("/export", json={"model": "no-such-model"}).status_code == 404


def test_register_an_upload_scores_it_and_says_where_it_went(client: httpx.Client) -> None:
    weights = {k: v + 0.01 * torch.randn_like(v) for k, v in state_dict(client, "digits-0-4").items()}
    response = upload(client, "digits-0-4-noisy", save(weights), source="test", licence="MIT")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["name"] == "digits-0-4-noisy" and not result["duplicate"]
    assert 0 <= result["scores"]["digits"] <= 1 and result["reason"]
    again = upload(client, "another-name", save(weights))
    assert again.status_code == 200 and again.json()["duplicate"] and again.json()["name"] == "digits-0-4-noisy"
    assert client.post("/lineage", json={"model": "another-name"}).status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x80\x02}q\x00.", "only safetensors is accepted"),
        (b"PK\x03\x04" + b"\x00" * 100, "zip archive"),
        (save({"fc1.weight": torch.zeros(3, 3)}), "fc1.weight"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{", "header"),
    ],
)
def test_refused_uploads_are_422_and_store_nothing(client: httpx.Client, body: bytes, message: str) -> None:
    before = model_count(client)
    response = upload(client, "refused-model", body)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]
    assert client.post("/lineage", json={"model": "refused-model"}).status_code == 404
    assert model_count(client) == before


def test_weights_with_nan_are_refused(client: httpx.Client) -> None:
    weights = state_dict(client, "digits-5-9")
    first = next(iter(weights))
    weights[first].view(-1)[0] = float("nan")
    response = upload(client, "nan-model", save(weights))
    assert response.status_code == 422 and "NaN" in response.json()["error"]


def test_an_upload_over_the_body_limit_is_413(client: httpx.Client) -> None:
    response = upload(client, "too-big", b"\x00" * 500_000)
    assert response.status_code == 413
    assert "exceeds the limit of 400000 bytes" in response.json()["error"]


def test_a_streamed_body_over_the_limit_is_413(client: httpx.Client) -> None:
    def chunks():  # no Content-Length: the limit is enforced while the body arrives
        for _ in range(10):
            yield b"\x00" * 50_000

    response = client.post("/feedback", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_register_by_path_only_under_the_import_directories(server, client: httpx.Client) -> None:
    outside = server.data_dir.parent / "outside.safetensors"
    weights = {k: v * 0.99 for k, v in state_dict(client, "digits-5-9").items()}
    save_file(weights, outside)
    refused = client.post("/register_path", json={"path": str(outside), "name": "by-path"})
    assert refused.status_code == 422 and "incoming" in refused.json()["error"]
    incoming = server.data_dir / "incoming"
    incoming.mkdir(exist_ok=True)
    inside = incoming / "by-path.safetensors"
    save_file(weights, inside)
    response = client.post("/register_path", json={"path": str(inside), "name": "by-path", "licence": "MIT"})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "by-path"


def test_tasks_and_feedback(client: httpx.Client) -> None:
    created = client.post("/tasks", json={"name": "digits-likelihood", "scoring": "likelihood", "gate_share": 0.5})
    assert created.status_code == 200, created.text
    assert created.json()["scoring"] == "likelihood"
    assert client.post("/tasks", json={"name": "digits-likelihood", "scoring": "likelihood"}).status_code == 409
    unknown_rule = client.post("/tasks", json={"name": "t2", "scoring": "bleu"})
    assert unknown_rule.status_code == 422 and "accuracy" in unknown_rule.json()["error"]
    points = [{"inputs": [float(i)] * 64, "target": i % 10} for i in range(12)]
    posted = client.post("/feedback", json={"task": "digits-likelihood", "points": points})
    assert posted.status_code == 200, posted.text
    assert posted.json()["added"] == 12 and posted.json()["fitness"] + posted.json()["gate"] == 12
    repeated = client.post("/feedback", json={"task": "digits-likelihood", "points": points[:1]}).json()
    assert repeated["added"] == 0 and repeated["duplicates"] == 1
    tasks = {t["name"]: t for t in client.post("/status").json()["tasks"]}
    assert tasks["digits-likelihood"]["fitness_points"] + tasks["digits-likelihood"]["gate_points"] == 12


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([{"inputs": [1.0, 2.0], "target": 1}], "points[1]: inputs: expected a list of 64 numbers"),
        ([{"inputs": DIGIT, "target": 10}], "points[1]: target"),
        ([{"inputs": DIGIT, "target": 1, "weight": 0}], "points.1.weight"),
        ([{"inputs": DIGIT, "target": 1, "colour": "red"}], "points.1.colour"),
    ],
)
def test_malformed_feedback_is_422_and_stores_nothing(client: httpx.Client, points: list, message: str) -> None:
    good = {"inputs": [random.uniform(0, 16) for _ in range(64)], "target": 3}  # new to the store
    response = client.post("/feedback", json={"task": "digits", "points": [good, *points]})
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]
    retry = client.post("/feedback", json={"task": "digits", "points": [good]}).json()
    assert retry["added"] == 1  # the good point of the refused batch was not stored


def test_empty_feedback_is_422(client: httpx.Client) -> None:
    response = client.post("/feedback", json={"task": "digits", "points": []})
    assert response.status_code == 422 and "points" in response.json()["error"]


def test_feedback_to_an_unknown_task_is_404(client: httpx.Client) -> None:
    response = client.post("/feedback", json={"task": "nope", "points": [{"inputs": DIGIT, "target": 1}]})
    assert response.status_code == 404 and "nope" in response.json()["error"]


def test_evolve_promote_and_rollback(server, client: httpx.Client) -> None:
    tick = client.post("/evolve", json={"steps": 20})
    assert tick.status_code == 200, tick.text
    assert tick.json()["steps"] == 20
    assert client.post("/evolve", json={"steps": 0}).status_code == 422
    before = client.post("/status").json()["champion"]
    target = "digits-5-9" if before["model"] != "digits-5-9" else "digits-0-4"
    promoted = client.post("/promote", json={"model": target, "reason": "test"})
    assert promoted.status_code == 200, promoted.text
    move = promoted.json()
    assert move["action"] == "promote" and move["model"] == target and move["version"] == before["version"] + 1
    assert move["previous_model"] == before["model"] and move["champion_score"] is not None
    assert client.post("/promote", json={"model": target}).status_code == 409
    assert client.post("/promote", json={"model": "no-such"}).status_code == 404
    back = client.post("/rollback", json={})
    assert back.status_code == 200 and back.json()["model"] == before["model"]


def test_readyz_livez_metrics_and_openapi(server) -> None:
    with server.client(anonymous=True) as c:
        assert c.get("/livez").status_code == 200 and c.get("/readyz").status_code == 200
        metrics = c.get("/metrics").text
        for name in ("m2n2_served_model_version", "m2n2_evolution_steps_total", "bentoml_service_request_total"):
            assert name in metrics
        spec = c.get("/docs.json").json()
        for path in ("/predict", "/status", "/register", "/register_path", "/feedback", "/promote", "/evolve"):
            assert path in spec["paths"], path
        predict = spec["paths"]["/predict"]["post"]["responses"]
        assert {"200", "400", "413", "415", "422", "503"} <= predict.keys() and "401" not in predict
        assert {"401", "403", "409", "422"} <= spec["paths"]["/promote"]["post"]["responses"].keys()
        assert "multipart/form-data" in spec["paths"]["/register"]["post"]["requestBody"]["content"]
        inputs = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        families = {s["title"]: s for s in inputs["properties"]["inputs"]["items"]["anyOf"]}
        assert families["classifier"]["items"]["type"] == "number" and families["causal-lm"]["type"] == "string"
        for path in ("/v1/completions", "/v1/chat/completions", "/v1/models"):  # the mounted OpenAI-compatible API
            assert path in spec["paths"], path
        completions = spec["paths"]["/v1/completions"]["post"]
        assert completions["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("CompletionRequest")
        assert {"200", "404", "422", "503"} <= completions["responses"].keys()


def test_metrics_add_up_over_every_worker(server) -> None:
    """Counters from whichever worker took each call are summed in one exposition."""
    with server.client() as admin:
        admin.post("/tasks", json={"name": "metered", "scoring": "accuracy", "gate_share": 0.0})
    for i in range(8):  # a new connection per call: the kernel spreads them over the workers
        with server.client() as c:
            points = [{"inputs": [float(i), float(j)] + [0.0] * 62, "target": j} for j in range(3)]
            assert c.post("/feedback", json={"task": "metered", "points": points}).status_code == 200
    with server.client() as c:
        exposition = c.get("/metrics").text
    line = next(x for x in exposition.splitlines() if x.startswith("m2n2_feedback_points_total{") and "metered" in x)
    assert float(line.rsplit(" ", 1)[1]) == 24
