"""The page at ``/ui`` in Chromium, on a real ``bentoml serve``: every view draws, stays live, logs no error.

With ``M2N2_UI_SCREENSHOTS=docs/figures`` the tests also save a screenshot of each view there
(the figures of the README and docs/service.md).
"""

from pathlib import Path

import httpx
import pytest

from service.process import Server

LOADED = 20_000  # ms for a view to draw (the page polls every 300 ms in these tests)


def status(server: Server) -> dict:
    with server.client() as c:
        return c.post("/status", json={}).raise_for_status().json()


def wait_until_drawn(page) -> None:
    """Every view drawn: heatmap rows, the lineage tree, the timeline and the samples."""
    views = ("#row-labels .member-row", "#lineage-tree svg [data-root]", "#timeline li", "#sample-list .sample")
    for selector in views:
        page.wait_for_selector(selector, timeout=LOADED)


def shoot(page, folder: Path | None, view: str, name: str) -> None:
    if folder is not None:
        page.locator(f"#{view}").screenshot(path=folder / f"ui-{name}.png")


def test_digits_page_draws_every_view_without_console_errors(digits_server: Server, open_page, screenshots) -> None:
    page = open_page(digits_server)
    wait_until_drawn(page)
    now = status(digits_server)
    champion = now["champion"]["model"]

    assert page.locator("#row-labels .member-row").count() == len(now["archive"]) > 2
    assert page.get_attribute("#heatmap", "data-rows") == str(len(now["archive"]))
    assert page.get_attribute("#heatmap", "data-points") == str(now["tasks"][0]["fitness_points"])
    assert page.locator("#row-labels .member-row.champion").inner_text().count(champion[:10]) == 1
    assert page.locator("#niche-table tr").count() > 2  # a header and several niches

    root = page.locator("#lineage-tree [data-root]")
    assert root.get_attribute("data-model") == champion
    assert page.locator("#model-card").get_attribute("data-model") == champion
    if champion.startswith("child-"):  # a merge: its split point is located in a tensor of the MLP
        assert "split" in root.text_content() and ".weight" in root.text_content()
        card = page.locator("#model-card").inner_text()
        assert "mixing ratio" in card and "fc" in card and champion.removeprefix("child-") in card  # in its sha256
    shoot(page, screenshots, "lineage", "lineage")  # the champion's card, before another node is clicked
    specialist = page.locator("#lineage-tree .node.specialist").first
    specialist.click()
    card = page.locator("#model-card")
    assert card.get_attribute("data-model").startswith("digits-")
    assert "BSD-3-Clause" in card.inner_text() and "sklearn load_digits" in card.inner_text()

    assert page.locator("#timeline li").first.get_attribute("data-model") == champion
    samples = page.locator("#sample-list .sample")
    assert samples.count() == 4  # the newest four gate points of the one task
    assert samples.first.locator("canvas").count() == 1  # the 8x8 digit
    assert samples.first.locator(".answer .big").inner_text().isdigit()  # the predicted label

    assert page.locator("#error").is_hidden()
    assert page.errors == []
    shoot(page, screenshots, "niches", "niches")
    shoot(page, screenshots, "samples", "samples-digits")


def test_text_page_asks_for_the_token_then_shows_completions(text_server: Server, open_page, screenshots) -> None:
    with text_server.client(anonymous=True) as anonymous:
        for route in ("/niches", "/ancestry", "/samples", "/status"):
            assert anonymous.post(route, json={}).status_code == 401, route
    page = open_page(text_server)
    page.wait_for_selector("#token-form", state="visible", timeout=LOADED)
    assert page.locator("#views").is_hidden()
    page.fill("#token", text_server.env["M2N2_ADMIN_TOKEN"])
    page.click("#token-form button")
    wait_until_drawn(page)
    now = status(text_server)

    assert page.locator("#row-labels .member-row").count() == len(now["archive"]) >= 2
    assert page.get_attribute("#heatmap", "data-points") == str(sum(t["fitness_points"] for t in now["tasks"]))
    niches = page.locator("#niche-table").inner_text()
    assert "math" in niches and "greet" in niches  # niches are grouped by task
    completions = page.locator("#sample-list .sample pre.answer")
    assert completions.count() == sum(t["gate_points"] for t in now["tasks"]) == 2
    assert page.locator("#sample-list").inner_text().count("Question: what is 2 plus 3?") == 1
    assert page.errors == []
    shoot(page, screenshots, "niches", "niches-text")
    shoot(page, screenshots, "samples", "samples-text")


def test_evolution_a_promotion_and_a_rollback_show_without_a_reload(
    digits_server: Server, open_page, screenshots
) -> None:
    page = open_page(digits_server)
    wait_until_drawn(page)
    page.evaluate("window.notReloaded = true")
    with digits_server.client() as admin:
        admin.post("/evolve", json={"steps": 20}).raise_for_status()
    steps = status(digits_server)["steps"]
    page.wait_for_selector(f"#heatmap[data-steps='{steps}']", timeout=LOADED)  # the niches were fetched again
    before = status(digits_server)
    old = before["champion"]["model"]
    new = next(m["model"] for m in reversed(before["archive"]) if not m["champion"] and m["kind"] == "child")

    with digits_server.client() as admin:
        admin.post("/promote", json={"model": new, "reason": "shown in the browser test"}).raise_for_status()
    page.wait_for_function(
        "name => document.querySelector('#lineage-tree [data-root]')?.dataset.model === name"
        " && document.querySelector('#timeline li')?.dataset.model === name",
        arg=new,
        timeout=LOADED,
    )
    first = page.locator("#timeline li").first.inner_text()
    assert f"promoted {new} over {old}" in first and "shown in the browser test" in first
    assert "gate score: champion" in first and "360 gate points" in first  # the gate's evidence, both scores
    version = status(digits_server)["champion"]["version"]
    page.wait_for_selector(f"#sample-list[data-version='{version}']", timeout=LOADED)  # the worker swapped

    with digits_server.client() as admin:
        admin.post("/rollback", json={"reason": "rolled back in the browser test"}).raise_for_status()
    page.wait_for_function(
        "name => document.querySelector('#lineage-tree [data-root]')?.dataset.model === name"
        " && document.querySelector('#timeline li')?.classList.contains('rollback')",
        arg=old,
        timeout=LOADED,
    )
    assert page.evaluate("window.notReloaded") is True
    assert page.errors == []
    shoot(page, screenshots, "history", "history")


@pytest.mark.parametrize("body", [{"model": "no-such-model"}, {"depth": 65}])
def test_ancestry_refuses_bad_requests(digits_server: Server, body: dict) -> None:
    with digits_server.client() as c:
        answer = c.post("/ancestry", json=body)
    assert answer.status_code in (404, 422) and "error" in answer.json()


def test_niches_partition_the_fitness_points(digits_server: Server) -> None:
    with httpx.Client(base_url=digits_server.url, timeout=60) as c:
        niches = c.post("/niches", json={}).raise_for_status().json()
        ancestry = c.post("/ancestry", json={"depth": 2}).raise_for_status().json()
    n = len(niches["point_ids"])
    assert sorted(niches["point_ids"]) == sorted(set(niches["point_ids"])) and n == 1437
    assert len(niches["scores"]) == len(niches["members"]) and {len(row) for row in niches["scores"]} == {n}
    starts = [g["start"] for g in niches["niches"]]
    assert starts == sorted(starts) and sum(g["points"] for g in niches["niches"]) == n
    assert all(0 <= g["crowding"] <= len(niches["members"]) for g in niches["niches"])
    for node in ancestry["nodes"]:
        split = node["split"]
        if split is not None:  # the MLP's tensors in order: fc1.weight holds the first 64 * 256 parameters
            assert split["fraction"] == pytest.approx(split["index"] / ancestry["n_params"])
            assert (split["tensor"] == "fc1.weight") == (split["index"] < 64 * 256)
    assert max(node["depth"] for node in ancestry["nodes"]) <= 2
