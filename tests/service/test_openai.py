"""The OpenAI-compatible API, called with the official ``openai`` client, on a served tiny causal-LM ecosystem."""

import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator

import httpx
import openai
import pytest
from hf_models import lm_data_dir, tiny_llama
from transformers import AutoTokenizer

from service.process import Server, serve

PROMPT = "Once upon a time"
CAP = 48  # M2N2_SERVICE__MAX_TOKENS_CAP of the test server; the tiny Llama's context is 256 tokens


@pytest.fixture(scope="module")
def lm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One entry worker (so concurrent requests meet in one batcher), evolution only when asked."""
    root = tmp_path_factory.mktemp("lm")
    base = lm_data_dir(root)
    server = serve(
        root,
        M2N2_ADMIN_TOKEN="test-admin-token",
        M2N2_SERVICE__INIT_DEMO="false",
        M2N2_SERVICE__WORKERS="1",
        M2N2_SERVICE__MAX_TOKENS_CAP=str(CAP),
        M2N2_EVOLUTION__STEPS_PER_TICK="2",
    )
    server.base = base
    yield server
    server.stop()


@pytest.fixture(scope="module")
def lm(lm_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{lm_server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(lm_server: Server):
    return AutoTokenizer.from_pretrained(lm_server.base)


def champion(server: Server) -> tuple[str, int]:
    with server.client() as c:
        status = c.post("/status").json()["champion"]
    return status["model"], status["version"]


def test_models_lists_the_champion(lm: openai.OpenAI, lm_server: Server) -> None:
    name, version = champion(lm_server)
    assert [m.id for m in lm.models.list().data] == [f"{name}:{version}"]


def test_completion_names_the_champion_and_counts_tokens(lm: openai.OpenAI, lm_server: Server, tokenizer) -> None:
    raw = lm.completions.with_raw_response.create(model="any", prompt=PROMPT, max_tokens=12, temperature=0)
    completion = raw.parse()
    name, version = champion(lm_server)
    assert raw.headers["X-Model-Version"] == str(version) and completion.model == f"{name}:{version}"
    choice = completion.choices[0]
    assert choice.index == 0 and choice.finish_reason in ("stop", "length") and isinstance(choice.text, str)
    assert completion.usage.prompt_tokens == len(tokenizer(PROMPT)["input_ids"])
    assert 1 <= completion.usage.completion_tokens <= 12
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    if choice.finish_reason == "length":
        assert completion.usage.completion_tokens == 12
    again = lm.completions.create(model="any", prompt=PROMPT, max_tokens=12, temperature=0)
    assert again.choices[0].text == choice.text  # greedy decoding is deterministic


def test_seeds_reproduce_and_n_gives_several_choices(lm: openai.OpenAI) -> None:
    def sample(**kw):
        return lm.completions.create(model="any", prompt=PROMPT, max_tokens=16, temperature=1.0, top_p=0.95, **kw)

    first, second = sample(seed=7), sample(seed=7)
    assert first.choices[0].text == second.choices[0].text
    several = sample(seed=7, n=3)
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert several.choices[0].text == first.choices[0].text  # choice j is seeded seed + j
    assert len({c.text for c in several.choices}) > 1
    batch = lm.completions.create(model="any", prompt=[PROMPT, "Hi"], max_tokens=4, temperature=0, n=2)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3] and batch.choices[0].text == batch.choices[1].text


def test_streamed_completion_equals_the_whole_one(lm: openai.OpenAI, lm_server: Server) -> None:
    whole = lm.completions.create(model="any", prompt=PROMPT, max_tokens=20, temperature=0)
    chunks = list(
        lm.completions.create(
            model="any",
            prompt=PROMPT,
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    body = {"prompt": PROMPT, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{lm_server.url}/v1/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "X-Model-Version" in response.headers
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"


def test_chat_completion_whole_and_streamed(lm: openai.OpenAI, lm_server: Server) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    whole = lm.chat.completions.create(model="any", messages=messages, max_tokens=10, temperature=0)
    message = whole.choices[0].message
    assert message.role == "assistant" and isinstance(message.content, str)
    assert whole.model == "{}:{}".format(*champion(lm_server)) and whole.usage.completion_tokens <= 10
    stream = lm.chat.completions.create(model="any", messages=messages, max_tokens=10, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == message.content
    default = lm.chat.completions.create(model="any", messages=messages, temperature=0)  # no max_tokens: the cap
    assert default.usage.completion_tokens <= CAP


def test_a_stop_string_ends_the_text_before_it(lm: openai.OpenAI) -> None:
    free = lm.completions.create(model="any", prompt=PROMPT, max_tokens=24, temperature=0).choices[0].text
    stop = next((free[i : i + 2] for i in range(2, len(free) - 1) if free[i : i + 2].strip()), None)
    if stop is None:
        pytest.skip(f"the greedy text {free!r} has no two visible characters to stop at")
    stopped = lm.completions.create(model="any", prompt=PROMPT, max_tokens=24, temperature=0, stop=[stop])
    assert stopped.choices[0].text == free[: free.index(stop)] and stopped.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"temperature": 3}, "temperature", "less than or equal to 2"),
        ({"top_p": 0}, "top_p", "greater than 0"),
        ({"n": 0}, "n", "greater than or equal to 1"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"logprobs": 2}, "logprobs", "not supported by this server; leave it out or send null"),
        ({"frequency_penalty": 0.5}, "frequency_penalty", "not supported by this server; leave it out or send 0"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 stop sequences"),
        ({"max_tokens": CAP + 1}, "max_tokens", f"at most {CAP} (M2N2_SERVICE__MAX_TOKENS_CAP)"),
        ({"prompt": 300}, "prompt", "the model's context is 256 tokens"),
        ({"prompt": 230, "max_tokens": 40}, "max_tokens", "over the model's context of 256 tokens; ask for at most 26"),
    ],
)
def test_bad_parameters_are_422_in_openai_shape(
    lm_server: Server, tokenizer, body: dict, param: str, message: str
) -> None:
    if isinstance(body.get("prompt"), int):  # a prompt of that many tokens
        body = {**body, "prompt": prompt_of(tokenizer, body["prompt"])}
    request = {"model": "any", "prompt": PROMPT, **body}
    response = httpx.post(f"{lm_server.url}/v1/completions", json=request, timeout=60)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and message in error["message"]
    assert error.keys() == {"message", "type", "param", "code"}


def test_neutral_values_of_unimplemented_parameters_are_accepted(lm_server: Server) -> None:
    """What client libraries send by default (penalties 0, no logit bias, a user) must not be refused."""
    defaults = {"frequency_penalty": 0, "presence_penalty": 0, "logit_bias": {}, "n": 1, "top_p": 1, "user": "u"}
    body = {"model": "any", "prompt": PROMPT, "max_tokens": 2, "echo": False, "best_of": 1, **defaults}
    assert httpx.post(f"{lm_server.url}/v1/completions", json=body, timeout=60).status_code == 200
    chat = {"model": "any", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "logprobs": False}
    assert httpx.post(f"{lm_server.url}/v1/chat/completions", json={**chat, **defaults}, timeout=60).status_code == 200


def prompt_of(tokenizer, n_tokens: int) -> str:
    """A prompt the tokenizer reads as exactly ``n_tokens`` tokens."""
    ids = (tokenizer(PROMPT)["input_ids"] * n_tokens)[:n_tokens]
    for _ in range(10):  # decoding then encoding may merge tokens differently: pad until the count is right
        text = tokenizer.decode(ids)
        count = len(tokenizer(text)["input_ids"])
        if count == n_tokens:
            return text
        ids = ids + ids[: n_tokens - count] if count < n_tokens else ids[: n_tokens - (count - n_tokens)]
    raise AssertionError(f"no prompt of {n_tokens} tokens")


def test_the_client_raises_on_refusals(lm: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens"):
        lm.completions.create(model="any", prompt=PROMPT, max_tokens=CAP + 1)
    with pytest.raises(openai.UnprocessableEntityError, match="messages"):
        lm.chat.completions.create(model="any", messages=[{"role": "robot", "content": "hi"}])


def test_concurrent_requests_decode_in_one_batch_and_keep_their_own_text(lm: openai.OpenAI, lm_server: Server) -> None:
    prompts = [f"{PROMPT} {i}" for i in range(6)]

    def complete(i: int, results: dict) -> None:
        results[i] = lm.completions.create(
            model="any", prompt=prompts[i], max_tokens=40, temperature=1.0, seed=i, stream=i % 2 == 0
        )

    alone = {}
    for i in range(len(prompts)):
        complete(i, alone)
    batched: dict = {}
    threads = [threading.Thread(target=complete, args=(i, batched)) for i in range(len(prompts))]
    before = batch_rows(lm_server)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = batch_rows(lm_server)
    for i in range(len(prompts)):  # a seeded completion is the same text whatever it was batched with
        assert text_of(batched[i]) == text_of(alone[i]), i
    rows, batches = after[0] - before[0], after[1] - before[1]
    assert rows == len(prompts) and batches < len(prompts), f"{rows} sequences in {batches} batches"


def batch_rows(server: Server) -> tuple[float, float]:
    """(sequences, batches) decoded so far, from the m2n2_generation_batch_rows histogram."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    total = sum(float(v) for v in re.findall(r"^m2n2_generation_batch_rows_sum(?:\{[^}]*\})? (\S+)$", text, re.M))
    count = sum(float(v) for v in re.findall(r"^m2n2_generation_batch_rows_count(?:\{[^}]*\})? (\S+)$", text, re.M))
    return total, count


def text_of(result) -> str:
    if isinstance(result, openai.Stream):
        return "".join(c.choices[0].text for c in result if c.choices)
    return result.choices[0].text


def test_predict_is_generic_over_families(lm_server: Server) -> None:
    with lm_server.client() as c:
        response = c.post("/predict", json={"inputs": [PROMPT, "Hi"]})
        assert response.status_code == 200, response.text
        answers = response.json()
        assert [set(a) for a in answers] == [{"text", "model", "model_version"}] * 2
        assert response.headers["X-Model-Version"] == str(answers[0]["model_version"])
        refused = c.post("/predict", json={"inputs": [PROMPT, [1, 2]]})
        assert refused.status_code == 422 and "inputs.1: Input should be a valid string" in refused.json()["error"]


def test_export_writes_the_native_layout_and_the_card(lm_server: Server) -> None:
    name, _ = champion(lm_server)
    with lm_server.client() as c:
        response = c.post("/export", json={"model": name})
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        names = set(zf.namelist())
        assert {"config.json", "README.md", "tokenizer.json"} <= names
        assert any(n.endswith(".safetensors") for n in names)
        assert name in zf.read("README.md").decode()
        assert json.loads(zf.read("config.json"))["model_type"] == "llama"


def test_a_checkpoint_directory_registers_by_path(lm_server: Server) -> None:
    incoming = lm_server.data_dir / "incoming"
    directory = tiny_llama(incoming / "lm-3", seed=3)  # save_pretrained's layout, tokenizer included
    with lm_server.client() as admin:
        response = admin.post("/register_path", json={"path": str(directory), "name": "lm-3", "licence": "MIT"})
        assert response.status_code == 200, response.text
        assert response.json()["name"] == "lm-3" and 0 <= response.json()["scores"]["arithmetic"] <= 1
        outside = admin.post("/register_path", json={"path": str(lm_server.base), "name": "lm-base"})
        assert outside.status_code == 422 and "incoming" in outside.json()["error"]


def test_a_promotion_swaps_the_generating_champion(lm: openai.OpenAI, lm_server: Server) -> None:
    name, version = champion(lm_server)
    other = "lm-2" if name != "lm-2" else "lm-1"
    with lm_server.client() as admin:
        assert admin.post("/promote", json={"model": other}).status_code == 200
    expected = f"{other}:{version + 1}"
    for _ in range(100):
        if lm.models.list().data[0].id == expected:
            break
        threading.Event().wait(0.1)
    raw = lm.completions.with_raw_response.create(model="any", prompt=PROMPT, max_tokens=2)
    assert raw.parse().model == expected and raw.headers["X-Model-Version"] == str(version + 1)


def test_a_classifier_has_no_openai_routes(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="'classifier' does not generate text"):
        client.completions.create(model="any", prompt="hi")
    response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 404 and "/predict" in response.json()["error"]["message"]
