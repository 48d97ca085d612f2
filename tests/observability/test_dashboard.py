"""The Grafana dashboard: its structure, and every query it holds answered by a real Prometheus.

The live test drives the real service for a few seconds (feedback, evolution ticks, a registration, a
promotion and a rollback, predictions of which some fail) while Prometheus scrapes it every second, then
evaluates each panel target and each annotation query of the dashboard file through Prometheus' HTTP
API. A query that errors, returns nothing or returns only NaN fails the test: a panel would be blank.
"""

import io
import json
import math
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import torch
from prometheus_client.metrics import MetricWrapperBase
from safetensors.torch import load, save

from ecosystem import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "k8s" / "base" / "monitoring" / "m2n2-dashboard.json"
DOCS = ROOT / "docs" / "observability.md"
DIGIT = [float(v % 17) for v in range(64)]

# What Grafana would put in for its built-in variables, for a few-minute-old Prometheus scraping every second.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(panels: list[dict]) -> Iterator[dict]:
    """Every panel, including those inside (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def queries(board: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every Prometheus annotation of the dashboard."""
    found = []
    for panel in all_panels(board["panels"]):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['id']} {panel['title']!r} target {target['refId']}", target["expr"]))
    for annotation in board.get("annotations", {}).get("list", []):
        expr = annotation.get("expr") or annotation.get("target", {}).get("expr")
        if expr:
            found.append((f"annotation {annotation['name']!r}", expr))
    return found


def variable_values(board: dict) -> dict[str, str]:
    """Each dashboard variable as Grafana expands it by default: "All" (its allValue) where it has one."""
    values = dict(BUILTINS)
    for variable in board.get("templating", {}).get("list", []):
        if variable["type"] == "datasource":
            continue
        if variable.get("includeAll"):
            values[variable["name"]] = variable.get("allValue") or ".*"
        else:
            values[variable["name"]] = str(variable.get("current", {}).get("value", ""))
    return values


def expand(expr: str, values: dict[str, str]) -> str:
    """``expr`` with ``$var``, ``${var}``, ``${var:format}`` and ``[[var]]`` replaced by ``values``."""

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name.isdigit():  # $1 in a label_replace replacement is PromQL's, not Grafana's
            return match.group(0)
        assert name in values, f"unknown dashboard variable ${name} in {expr!r}"
        return values[name]

    return VARIABLE.sub(replace, expr)


def our_metric_names() -> list[str]:
    """Every metric ecosystem/metrics.py defines, as Prometheus names it (counters with ``_total``)."""
    names = []
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            names.append(value._name + ("_total" if value._type == "counter" else ""))
    return sorted(names)


# -- the file itself -------------------------------------------------------------------------------------


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    board = dashboard()
    assert board["title"] == "M2N2 ecosystem" and board["uid"] == "m2n2-ecosystem"
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    ids = [p["id"] for p in all_panels(board["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in all_panels(board["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target.get("datasource", source) == source, panel["title"]
    names = {a["name"] for a in board["annotations"]["list"]}
    assert {"Promotions", "Rollbacks"} <= names


def test_every_m2n2_metric_is_on_the_dashboard_and_documented() -> None:
    exprs = " ".join(expr for _, expr in queries(dashboard()))
    docs = DOCS.read_text(encoding="utf-8")
    for name in our_metric_names():
        assert re.search(rf"\b{name}(_bucket|_sum|_count)?\b", exprs), f"{name} is on no panel"
        assert f"`{name}`" in docs, f"{name} is not described in {DOCS.name}"
    for name in sorted(set(re.findall(r"\bbentoml_\w+", exprs))):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert f"`{base}`" in docs, f"{base} is not described in {DOCS.name}"


def test_variables_expand_like_grafana() -> None:
    values = {"namespace": ".*", **BUILTINS}
    assert expand('x{a=~"$namespace"}[$__rate_interval]', values) == 'x{a=~".*"}[1m]'
    assert expand("${namespace:regex} [[namespace]] $1", values) == ".* .* $1"


# -- every query answered by a real Prometheus ------------------------------------------------------------


def export(client: httpx.Client, model: str) -> dict[str, torch.Tensor]:
    response = client.post("/export", json={"model": model})
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        return load(zf.read("model.safetensors"))


def drive(client: httpx.Client) -> None:
    """A few seconds of everything the dashboard shows: feedback, ticks, a registration, champion moves, traffic."""

    def ok(response: httpx.Response) -> httpx.Response:
        assert response.status_code == 200, f"{response.request.url}: {response.status_code} {response.text}"
        return response

    def predict_traffic() -> None:
        for i in range(6):
            ok(client.post("/predict", json={"inputs": [[float((v + i) % 17) for v in range(64)]]}))
        for bad in ([[0.0] * 3], "not a list", []):  # wrong width, wrong type, empty: 4xx each
            assert client.post("/predict", json={"inputs": bad}).status_code in (400, 422)

    generator = torch.Generator().manual_seed(7)
    for round_ in range(2):
        points = [{"inputs": [float((v * (k + 3) + round_) % 17) for v in range(64)], "target": k} for k in range(10)]
        ok(client.post("/feedback", json={"task": "digits", "points": points}))
        predict_traffic()
        ok(client.post("/evolve", json={"steps": 10}))
        time.sleep(1)
    weights = {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in export(client, "digits-0-4").items()}
    registered = client.post("/register", files={"weights": ("m.safetensors", save(weights))}, data={"name": "noisy"})
    ok(registered)
    ok(client.post("/status"))
    ok(client.post("/lineage", json={"model": "noisy"}))
    champion = ok(client.post("/status")).json()["champion"]["model"]
    other = "digits-5-9" if champion != "digits-5-9" else "digits-0-4"
    ok(client.post("/promote", json={"model": other, "reason": "observability test"}))
    assert client.post("/promote", json={"model": "no-such-model"}).status_code == 404
    time.sleep(1.5)  # both workers swap in the new champion
    ok(client.post("/rollback", json={"reason": "observability test"}))
    time.sleep(1.5)
    predict_traffic()
    ok(client.post("/evolve", json={"steps": 10}))


def test_every_dashboard_query_returns_data(prometheus, admin: httpx.Client) -> None:
    prometheus.wait_for('count_over_time(up{job="m2n2"}[1m]) >= 2')  # a baseline before the traffic
    drive(admin)
    prometheus.wait_for("sum(m2n2_rollbacks_total) >= 1")
    time.sleep(2)  # a couple more scrapes, so the last requests are in every rate window

    board = dashboard()
    values = variable_values(board)
    found = queries(board)
    assert len(found) >= 20
    failures = []
    for where, expr in found:
        query = expand(expr, values)
        answer = prometheus.query(query)
        if answer.get("status") != "success":
            failures.append(f"{where}: error {answer.get('error')!r}\n    {query}")
            continue
        data = answer["data"]
        samples = [data["result"]] if data["resultType"] == "scalar" else [s["value"] for s in data["result"]]
        if not samples:
            failures.append(f"{where}: empty result\n    {query}")
        elif not any(math.isfinite(float(value)) for _, value in samples):
            failures.append(f"{where}: only NaN or infinite values\n    {query}")
    assert not failures, f"{len(failures)} of {len(found)} dashboard queries show nothing:\n" + "\n".join(failures)
