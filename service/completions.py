"""The OpenAI-compatible API, mounted at ``/v1`` on the entry service (families whose ``api`` is "completions").

    client = openai.OpenAI(base_url="http://localhost:3000/v1", api_key="unused")
    client.completions.create(model="champion", prompt="Once upon a time", max_tokens=32)

A FastAPI app, so requests are validated by their pydantic models with OpenAI's own status
(422) and error shape, and the routes appear in the service's OpenAPI document. Every answer
names the champion that produced it (``model``: ``name:version``, and ``X-Model-Version``);
concurrent requests decode together (``service.generation``).
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import bentoml
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, StreamingResponse

from service.champion import Served
from service.generation import Job
from service.http import VERSION_HEADER
from service.openai_schemas import (
    ChatCompletion,
    ChatRequest,
    Completion,
    CompletionRequest,
    ErrorBody,
    ModelList,
    error_body,
    new_id,
    now,
    usage,
)

app = FastAPI(title="OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": meaning}
    for status, meaning in [
        (400, "a body that is not JSON, or several Authorization headers"),
        (401, "no bearer token (only with M2N2_SERVICE__PROTECT_READS)"),
        (404, "the served family does not generate text"),
        (413, "the request body is over the size limit"),
        (415, "a Content-Type other than application/json"),
        (422, "an invalid or unknown parameter, named in error.param"),
        (503, "no champion loaded yet"),
    ]
}

# With "stream": true the answer is server-sent events: "data: <chunk JSON>" lines, then "data: [DONE]".
STREAM: dict[str, Any] = {
    "description": "the completion, or with stream: true its chunks as server-sent events",
    "content": {
        "text/event-stream": {
            "schema": {  # one event: a chunk as JSON in "data", and last "data: [DONE]"
                "type": "object",
                "required": ["data"],
                "properties": {"data": {"type": "string", "description": "a chunk as JSON, or [DONE]"}},
            }
        }
    },
}


class OpenAIError(Exception):
    """A refusal in OpenAI's error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


@app.exception_handler(OpenAIError)
async def _refused(request: Request, error: OpenAIError) -> JSONResponse:
    return JSONResponse(error_body(error.message, error.param, kind=error.kind), status_code=error.status)


@app.exception_handler(HTTPException)
async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    """FastAPI's own refusals (a body it cannot parse) in OpenAI's error shape."""
    return JSONResponse(error_body(str(error.detail)), status_code=error.status_code, headers=error.headers)


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 naming every bad field; ``param`` is the first (``messages.0.role``), ``code`` pydantic's error type."""
    problems = error.errors()

    def where(problem: dict) -> str:
        return ".".join(str(part) for part in problem["loc"] if part != "body")

    message = "; ".join(f"{where(p) or 'body'}: {p['msg']}" for p in problems)
    first = problems[0] if problems else {"loc": (), "type": None}
    return JSONResponse(error_body(message, where(first) or None, first["type"]), status_code=422)


def _worker() -> Any:
    """The entry service instance of this worker (its champion watcher, batcher and settings)."""
    return bentoml.get_current_service()


Worker = Annotated[Any, Depends(_worker)]


def text_champion(worker: Any) -> Served:
    """The served champion, if it generates text; else the refusal that says why."""
    served = worker.watcher.current
    if served is None:
        raise OpenAIError(503, "no champion is loaded yet; /readyz answers 200 once one is", kind="unavailable")
    if not served.generates_text:
        message = (
            f"the served model family {served.family.name!r} does not generate text, so it has no OpenAI-compatible "
            "API; call POST /predict"
        )
        raise OpenAIError(404, message, kind="not_found_error")
    return served


@app.get("/models", responses={200: {"model": ModelList}, **ERRORS})
async def models(worker: Worker) -> JSONResponse:
    """The one model served: the champion, as ``name:version``."""
    served = text_champion(worker)
    card = {"id": _name(served), "object": "model", "created": now(), "owned_by": "m2n2"}
    return JSONResponse({"object": "list", "data": [card]}, headers=_headers(served))


@app.post("/completions", responses={200: {"model": Completion, **STREAM}, **ERRORS})
async def completions(body: CompletionRequest, worker: Worker) -> Any:
    """Complete each prompt with the champion (``stream``: server-sent events)."""
    served = text_champion(worker)
    prompts = body.prompts()
    counts = [served.family.count_tokens(served.config, p) for p in prompts]
    max_tokens = _budget(served, counts, body.max_tokens, body.n, worker.settings.service, "prompt")
    return await _generate(worker, body, prompts, counts, max_tokens, chat=False)


@app.post("/chat/completions", responses={200: {"model": ChatCompletion, **STREAM}, **ERRORS})
async def chat_completions(body: ChatRequest, worker: Worker) -> Any:
    """Answer the conversation: the family's chat template turns the messages into one prompt."""
    served = text_champion(worker)
    try:
        prompt = served.family.chat_prompt(served.config, [m.model_dump(exclude_none=True) for m in body.messages])
    except ValueError as error:
        raise OpenAIError(422, str(error), "messages") from None
    counts = [served.family.count_tokens(served.config, prompt)]
    max_tokens = _budget(served, counts, body.limit(), body.n, worker.settings.service, "messages")
    return await _generate(worker, body, [prompt], counts, max_tokens, chat=True)


def _budget(served: Served, counts: list[int], requested: int | None, n: int, limits: Any, prompt: str) -> int:
    """The max_tokens to decode: ``requested`` if the cap and the context allow it, else a 422 naming why."""
    cap, context = limits.max_tokens_cap, served.family.context_length(served.config)
    longest = max(counts)
    if requested is not None and requested > cap:
        message = f"max_tokens is {requested}; this server allows at most {cap} (M2N2_SERVICE__MAX_TOKENS_CAP)"
        raise OpenAIError(422, message, "max_tokens")
    if min(counts) == 0:
        raise OpenAIError(422, f"{prompt} is empty: the model needs at least one token to continue", prompt)
    if longest >= context:
        message = f"the {prompt} has {longest} tokens; the model's context is {context} tokens, with room to answer"
        raise OpenAIError(422, message, prompt)
    max_tokens = requested if requested is not None else min(cap, context - longest)
    if longest + max_tokens > context:
        message = (
            f"the {prompt} has {longest} tokens and max_tokens asks for {max_tokens} more, over the model's "
            f"context of {context} tokens; ask for at most {context - longest}"
        )
        raise OpenAIError(422, message, "max_tokens")
    if len(counts) * n > limits.max_generation_rows:
        message = (
            f"{len(counts)} prompts times n={n} is {len(counts) * n} sequences; this server decodes at most "
            f"{limits.max_generation_rows} in one batch (M2N2_SERVICE__MAX_GENERATION_ROWS)"
        )
        raise OpenAIError(422, message, "n")
    return max_tokens


async def _generate(worker: Any, body: Any, prompts: list[str], counts: list[int], max_tokens: int, chat: bool):
    """Queue the sequences (prompts times n) and answer once, or as a stream of chunks."""
    rows = [p for p in prompts for _ in range(body.n)]  # choice i is prompt i // n
    sampling = [s for _ in prompts for s in body.sampling(max_tokens)]
    try:
        served, job = await worker.generation.submit(rows, sampling)
    except ValueError as error:  # the family refused an argument the checks above let through
        raise OpenAIError(422, str(error)) from None
    head = {
        "id": new_id("chatcmpl" if chat else "cmpl"),
        "object": "chat.completion.chunk" if chat and body.stream else "chat.completion" if chat else "text_completion",
        "created": now(),
        "model": _name(served),
    }
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        events = _events(job, head, len(rows), sum(counts), chat, include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=_headers(served))
    texts, finish, tokens = [""] * len(rows), [None] * len(rows), [0] * len(rows)
    try:
        async for step in job.steps():
            for i, delta in step:
                texts[i] += delta.text
                finish[i], tokens[i] = delta.finish_reason or finish[i], delta.completion_tokens
    except asyncio.CancelledError:
        job.cancelled = True  # the client left: its rows stop counting in the batch
        raise
    choices = [
        {"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": reason}
        if chat
        else {"index": i, "text": text, "logprobs": None, "finish_reason": reason}
        for i, (text, reason) in enumerate(zip(texts, finish, strict=True))
    ]
    answer = {**head, "choices": choices, "usage": usage(sum(counts), sum(tokens))}
    return JSONResponse(answer, headers=_headers(served))


async def _events(
    job: Job, head: dict[str, Any], n_rows: int, prompt_tokens: int, chat: bool, include_usage: bool
) -> AsyncIterator[str]:
    """OpenAI's chunk stream: one chunk per decoding step with the choices that got text, then ``[DONE]``."""
    tokens = [0] * n_rows
    try:
        if chat:  # OpenAI opens every chat choice with the assistant role
            opening = [_chunk_choice(i, "", None, chat, role=True) for i in range(n_rows)]
            yield _sse({**head, "choices": opening})
        async for step in job.steps():
            choices = []
            for i, delta in step:
                tokens[i] = delta.completion_tokens
                choices.append(_chunk_choice(i, delta.text, delta.finish_reason, chat))
            yield _sse({**head, "choices": choices})
        if include_usage:
            yield _sse({**head, "choices": [], "usage": usage(prompt_tokens, sum(tokens))})
    except (asyncio.CancelledError, GeneratorExit):
        job.cancelled = True
        raise
    except Exception as error:  # the status line is sent already: the error travels as an event
        yield _sse(error_body(f"generation failed: {error}", kind="server_error"))
    yield "data: [DONE]\n\n"


def _chunk_choice(index: int, text: str, finish: str | None, chat: bool, role: bool = False) -> dict[str, Any]:
    if not chat:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
    delta = {"role": "assistant", "content": text} if role else {"content": text}
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def _name(served: Served) -> str:
    return f"{served.model_name}:{served.version}"


def _headers(served: Served) -> dict[str, str]:
    return {VERSION_HEADER: str(served.version)}
