"""Request and response bodies of the OpenAI-compatible routes, and their error shape.

Requests follow OpenAI's API reference for the parameters this server implements; any other
field is refused (422) rather than silently ignored, so a client never believes a setting it
sent took effect. OpenAI parameters this server does not implement are accepted only at their
neutral values (``frequency_penalty: 0``, ``logit_bias: {}``, ...), which many client libraries
send by default; any other value is refused naming the parameter. Responses are built as plain
dicts (one per request or chunk, on the hot path) and documented by the models below.
"""

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ecosystem.families.base import Sampling

MAX_STOP = 4  # OpenAI's limit on stop sequences
MAX_N = 16  # choices per prompt
MAX_PROMPTS = 64  # prompts in one /v1/completions call
Text = Annotated[str, Field(max_length=1_000_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = Field(False, description="send a last chunk with the token counts (empty choices)")


def _neutral(value: Any, neutral: tuple[Any, ...]) -> Any:
    """``value`` if it asks for nothing this server would have to do, else a ValueError saying so."""
    if value not in neutral:
        allowed = " or ".join(json.dumps(v) for v in neutral if v is not None) or "null"
        raise ValueError(f"not supported by this server; leave it out or send {allowed}")
    return value


class _Sampled(_Strict):
    """The decoding parameters both routes share."""

    model: str | None = Field(None, description="any name: the served champion answers (see /v1/models)")
    temperature: float = Field(1.0, ge=0, le=2, description="0 decodes greedily")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: the smallest token set with this mass")
    stop: str | list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, description=f"up to {MAX_STOP} strings; the text ends before the first one (not included)"
    )
    seed: int | None = Field(None, description="the same seed gives the same text, whatever else is batched with it")
    n: int = Field(1, ge=1, le=MAX_N, description="choices per prompt")
    stream: bool = Field(False, description="server-sent events in OpenAI's chunk format, ending with [DONE]")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="accepted and ignored")
    # Not implemented: accepted only at the neutral values client libraries send by default.
    frequency_penalty: float | None = Field(None, description="0 only")
    presence_penalty: float | None = Field(None, description="0 only")
    logit_bias: dict[str, float] | None = Field(None, description="empty only")

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        return _neutral(value, (None, 0))

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict | None) -> dict | None:
        return _neutral(value, (None, {}))

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences, got {len(stop)}")
        if stop == "":
            raise ValueError("a stop sequence must not be empty")
        return stop

    def stops(self) -> tuple[str, ...]:
        return () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def sampling(self, max_tokens: int) -> list[Sampling]:
        """One ``Sampling`` per choice; seeded choices get consecutive seeds, so n > 1 gives n different texts."""
        return [
            Sampling(
                max_tokens=max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                stop=self.stops(),
                seed=None if self.seed is None else self.seed + j,
            )
            for j in range(self.n)
        ]


class CompletionRequest(_Sampled):
    """``POST /v1/completions``."""

    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_PROMPTS)]
    max_tokens: int | None = Field(16, ge=1, description="tokens to generate at most (OpenAI's default: 16)")
    logprobs: int | None = Field(None, description="null only")
    echo: bool = Field(False, description="false only")
    best_of: int | None = Field(None, description="1 only")
    suffix: str | None = Field(None, description="null only")

    @field_validator("logprobs", "suffix")
    @classmethod
    def _nothing(cls, value: Any) -> Any:
        return _neutral(value, (None,))

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        return _neutral(value, (False,))

    @field_validator("best_of")
    @classmethod
    def _one(cls, value: int | None) -> int | None:
        return _neutral(value, (None, 1))

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text
    name: str | None = None


class ChatRequest(_Sampled):
    """``POST /v1/chat/completions``: the messages become one prompt through the family's chat template."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1, description="default: what the context and the server's cap leave")
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens")
    logprobs: bool | None = Field(None, description="false only")
    top_logprobs: int | None = Field(None, description="null only")

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: Any) -> Any:
        return _neutral(value, (None, False))

    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


# --- answers -------------------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class Completion(BaseModel):
    """The answer of ``/v1/completions`` (each streamed chunk has this shape too, without usage)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str = Field(description="the champion that answered: name:version")
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class ChatCompletion(BaseModel):
    """The answer of ``/v1/chat/completions`` (streamed: ``chat.completion.chunk`` objects with ``delta``)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(description="the champion that answered: name:version")
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str = Field(description="the champion: name:version")
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "m2n2"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every refusal of the OpenAI-compatible routes, in OpenAI's error shape."""

    error: ErrorDetail


# --- building answers -------------------------------------------------------------------------------------


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_body(
    message: str, param: str | None = None, code: str | None = None, kind: str = "invalid_request_error"
) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
