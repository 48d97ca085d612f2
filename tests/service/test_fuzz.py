"""API fuzzing: schemathesis's ``st run`` drives every route of the published OpenAPI document on a real server.

Both a classifier ecosystem (the digits demo) and a causal-LM one (so the OpenAI-compatible
routes generate) are fuzzed, once with the admin token and once without. Every answer must be
a documented status with a body matching its schema and never a 5xx, protected routes must
refuse calls without the token, and a refused call (4xx) must leave the store as it was
(``fuzz_hooks``).
"""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hf_models import lm_data_dir

from service.process import Server, serve

TOKEN = "fuzz-admin-token"
HOOKS = Path(__file__).with_name("fuzz_hooks.py")
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "ignored_auth",
        "store_unchanged_after_refusal",
    ]
)
# Examples per route for the random phase, with and without the token. With it, the coverage phase adds its
# own deterministic cases (boundaries, missing fields, wrong media types) and `ignored_auth` retries each
# protected call without the token; without it, writes answer 401 at once, so the random phase suffices.
EXAMPLES = {True: 5, False: 3}
PHASES = {True: "examples,coverage,fuzzing", False: "examples,fuzzing"}


def st_run(server: Server, token: bool) -> str:
    """Run ``st run`` against ``server``; the report, after asserting it found nothing."""
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{server.url}/docs.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(EXAMPLES[token]),
        "--phases",
        PHASES[token],
        "--request-timeout",
        "60",
        "--seed",
        "1",
        "--no-color",
    ]
    if token:
        command += ["--header", f"Authorization: Bearer {TOKEN}"]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": HOOKS.stem,
        "PYTHONPATH": os.pathsep.join([str(HOOKS.parent), os.environ.get("PYTHONPATH", "")]),
        "M2N2_FUZZ_DATA_DIR": str(server.data_dir),
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    report = done.stdout + done.stderr
    summary = report[report.rfind("SUMMARY") :]
    assert done.returncode == 0, f"schemathesis found failures:\n{report[-12000:]}"
    generated = re.search(r"(\d+) generated", summary)
    assert "Tested: " in summary and generated, summary
    print(f"fuzzing {'with' if token else 'without'} the token: {generated[0]} cases")
    return report


@pytest.fixture(scope="module")
def digits_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = serve(tmp_path_factory.mktemp("fuzz-digits"), M2N2_ADMIN_TOKEN=TOKEN)
    running.wait_for_first_tick()  # a tick running meanwhile would change the store under the refusal check
    yield running
    running.stop()


@pytest.fixture(scope="module")
def lm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("fuzz-lm")
    lm_data_dir(root)
    running = serve(
        root,
        M2N2_ADMIN_TOKEN=TOKEN,
        M2N2_SERVICE__INIT_DEMO="false",
        M2N2_SERVICE__MAX_TOKENS_CAP="16",
        M2N2_EVOLUTION__STEPS_PER_TICK="4",
    )
    running.wait_for_first_tick()
    yield running
    running.stop()


@pytest.mark.parametrize("token", [True, False], ids=["token", "no-token"])
def test_the_classifier_service_answers_every_generated_request_as_documented(
    digits_server: Server, token: bool
) -> None:
    st_run(digits_server, token)


@pytest.mark.parametrize("token", [True, False], ids=["token", "no-token"])
def test_the_language_model_service_answers_every_generated_request_as_documented(
    lm_server: Server, token: bool
) -> None:
    st_run(lm_server, token)
