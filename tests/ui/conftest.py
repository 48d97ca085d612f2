"""A real browser (Playwright driving Chromium) on real servers: the digits ecosystem and a tiny text one.

Chromium comes from the system (``scripts/browser.sh`` installs Debian's; ``make test`` runs it and
sets ``M2N2_TEST_CHROMIUM``), never from Playwright's own download. Without Playwright or a
Chromium that starts, every browser test skips and says why.
"""

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hf_models import fine_tune, tiny_llama

from ecosystem.cli import main
from service.process import STARTUP_SECONDS, Server, serve

TOKEN = "test-admin-token"
MATH = [(f"Question: what is {a} plus {b}? Answer:", f" #### {a + b}") for a, b in ((2, 3), (1, 4), (3, 3), (4, 4))]
GREET = [("user: hello\nassistant:", " #### hi"), ("user: hi there\nassistant:", " #### hello")]
GREET += [("user: good morning\nassistant:", " #### morning")]


def chromium_path() -> str | None:
    """``M2N2_TEST_CHROMIUM``, else the first Chromium on the PATH."""
    found = os.environ.get("M2N2_TEST_CHROMIUM")
    if found:
        return found
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """One headless Chromium for the session."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found: run scripts/browser.sh (make test does) or set M2N2_TEST_CHROMIUM")
    with playwright_api.sync_playwright() as playwright:
        try:
            # --no-sandbox: Chromium refuses to run its sandbox as root, as in CI containers.
            launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        except playwright_api.Error as error:
            pytest.skip(f"Chromium at {path} does not start: {str(error).splitlines()[0]}")
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser) -> Iterator[Callable]:
    """``open_page(server)``: a fresh page on ``/ui/`` (polling fast), with its console errors collected."""
    contexts = []

    def open_(server: Server):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(f"uncaught: {e}"))
        page.goto(f"{server.url}/ui?poll=300")
        return page

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def digits_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """What ``make run`` builds on an empty data directory: the digits demo, after one evolution tick."""
    running = serve(tmp_path_factory.mktemp("digits"), M2N2_ADMIN_TOKEN=TOKEN, M2N2_SERVICE__WORKERS="1")
    yield after_first_tick(running)
    running.stop()


def after_first_tick(server: Server) -> Server:
    """Wait until the evolver's first tick (run at start) is stored, so the archive holds still for the tests."""
    deadline = time.monotonic() + STARTUP_SECONDS
    with server.client() as c:
        while c.post("/status", json={}).raise_for_status().json()["steps"] == 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no evolution tick within {STARTUP_SECONDS} s:\n{server.log()[-4000:]}")
            time.sleep(0.5)
    return server


def build_text_ecosystem(root: Path) -> Path:
    """A causal-lm ecosystem made with the CLI: a tiny Llama base, math and greeting specialists, two tasks."""
    base = tiny_llama(root / "models" / "base")
    fine_tune(base, root / "models" / "math", MATH, steps=80)
    fine_tune(base, root / "models" / "greet", GREET, steps=80)
    data = root / "data"
    d = ("--data-dir", str(data))
    commands = [
        ("init", "--family", "causal-lm", "--base", str(base), "--set", "max_new_tokens=8"),
        ("register", str(root / "models" / "math"), "--name", "math", "--licence", "apache-2.0"),
        ("register", str(root / "models" / "greet"), "--name", "greet", "--licence", "mit"),
        ("task", "create", "math", "--scoring", "exact_match"),
        ("task", "create", "greet", "--scoring", "exact_match"),
    ]
    for task, pairs in (("math", MATH), ("greet", GREET)):
        points = root / f"{task}.jsonl"
        rows = [{"inputs": q, "target": a, "pool": "gate" if i == 0 else "fitness"} for i, (q, a) in enumerate(pairs)]
        points.write_text("".join(json.dumps(r) + "\n" for r in rows))
        commands.append(("feedback", "import", task, str(points)))
    for command in commands:
        if main([*command, *d]) != 0:
            raise RuntimeError(f"m2n2 {' '.join(command)} failed")
    return data


@pytest.fixture(scope="session")
def text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The tiny text ecosystem served with its reading routes protected by the token."""
    root = tmp_path_factory.mktemp("text")
    build_text_ecosystem(root)
    running = serve(
        root,
        M2N2_ADMIN_TOKEN=TOKEN,
        M2N2_SERVICE__INIT_DEMO="false",
        M2N2_SERVICE__WORKERS="1",
        M2N2_SERVICE__PROTECT_READS="true",
        M2N2_EVOLUTION__STEPS_PER_TICK="4",
    )
    yield after_first_tick(running)
    running.stop()


@pytest.fixture(scope="session")
def screenshots() -> Path | None:
    """Where the tests save a screenshot of each view: ``M2N2_UI_SCREENSHOTS`` (e.g. docs/figures), else nowhere."""
    folder = os.environ.get("M2N2_UI_SCREENSHOTS")
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder)
