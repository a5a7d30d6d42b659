"""The model server's protocol: JSON lines on the server's stdin (requests) and stdout (events).

`python -m trainer serve` (trainer/serve.py) reads one request per line and answers with events,
one per line; `desktop.core.model_server.ModelServer` is the app's side. Pydantic only, so both
processes import it (the app never loads torch).

Why pipes and not loopback HTTP: the server belongs to exactly one client, so a pipe needs no
port, no per-process token and no listener another local user could reach; and the server's
stdin closing is the one signal that its parent is gone (killed, crashed or closed), so it can
never outlive the app.

Requests (`extra="forbid"`: a client's typo is an error naming the field):

- `{"op": "generate", "id": ..., "messages": [...] | "prompt": ..., "adapter": true,
  "settings": {...}}` streams `token` events, then one `done`;
- `{"op": "stop", "id": ...}` answers `stop_ack`; no `token` of that request follows the ack
  (the server sets the request's stop flag and writes the ack under the same lock its token
  writer takes), and its `done` says `"stopped"`;
- `{"op": "logprob", "id": ..., "messages" | "prompt", "answer": ..., "adapter": ...}`: the sum
  of the log-probabilities of the answer's tokens after the prompt;
- `{"op": "eval_records", "id": ..., "limit": N}`: the first N records of the job's eval split
  as prompts with their reference answers.

Events (`extra="ignore"`: a newer server may add fields): `ready` once the model is loaded,
`token`, `done`, `stop_ack`, `logprob`, `eval_records`, and `error` (with the request's id, or
none when the server cannot start).
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

__all__ = [
    "ChatMessage",
    "DoneEvent",
    "ErrorEvent",
    "EvalRecord",
    "EvalRecordsEvent",
    "EvalRecordsRequest",
    "GenerateRequest",
    "GenerationSettings",
    "LogprobEvent",
    "LogprobRequest",
    "ReadyEvent",
    "ServerEvent",
    "ServerRequest",
    "StopAckEvent",
    "StopRequest",
    "TokenEvent",
    "encode",
    "parse_event",
    "parse_request",
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ChatMessage(_Request):
    """One turn of a conversation."""

    role: Literal["system", "user", "assistant"]
    content: str


class GenerationSettings(_Request):
    """How to sample an answer. Temperature 0 is greedy decoding (the same answer every time)."""

    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=256, ge=1, le=32768)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)


class _Prompted(_Request):
    """A request holding a conversation (`messages`) or one user turn (`prompt`)."""

    id: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    adapter: bool = True

    @model_validator(mode="after")
    def _one_prompt(self) -> _Prompted:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give either 'messages' or 'prompt', not both or neither")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' is empty: give at least one user turn")
        return self

    def conversation(self) -> list[ChatMessage]:
        """The turns to prompt with (`prompt` becomes one user turn)."""
        if self.messages is not None:
            return list(self.messages)
        return [ChatMessage(role="user", content=self.prompt or "")]


class GenerateRequest(_Prompted):
    """Stream an answer to the conversation, from the adapter (or the base with adapter=False)."""

    op: Literal["generate"] = "generate"
    settings: GenerationSettings = GenerationSettings()


class LogprobRequest(_Prompted):
    """Sum of log-probabilities of `answer`'s tokens following the prompted conversation."""

    op: Literal["logprob"] = "logprob"
    answer: str = Field(min_length=1)


class StopRequest(_Request):
    """Stop the generation with this id (a queued one never starts)."""

    op: Literal["stop"] = "stop"
    id: str = Field(min_length=1, max_length=200)


class EvalRecordsRequest(_Request):
    """The first `limit` records of the job's eval split, as prompts and reference answers."""

    op: Literal["eval_records"] = "eval_records"
    id: str = Field(min_length=1, max_length=200)
    limit: int = Field(default=20, ge=1, le=100000)


ServerRequest = Annotated[
    GenerateRequest | LogprobRequest | StopRequest | EvalRecordsRequest,
    Field(discriminator="op"),
]


class ReadyEvent(_Event):
    """The model is loaded; requests are answered from now on."""

    event: Literal["ready"] = "ready"
    model: str
    adapter: str | None = None
    device: str
    chat_template: bool
    pid: int


class TokenEvent(_Event):
    """One generated token, sent as soon as it exists: its text, decoded (empty for a special
    token, or for half a multi-byte character, whose text comes with the next event)."""

    event: Literal["token"] = "token"
    id: str
    text: str


class DoneEvent(_Event):
    """A generation ended: `reason` is "eos", "length" or "stopped"; `text` is the whole answer."""

    event: Literal["done"] = "done"
    id: str
    reason: Literal["eos", "length", "stopped"]
    tokens: int
    text: str
    seconds: float = 0.0


class StopAckEvent(_Event):
    """The stop request was taken: no token of this request follows."""

    event: Literal["stop_ack"] = "stop_ack"
    id: str


class LogprobEvent(_Event):
    """Sum of the answer tokens' log-probabilities (nats) and how many tokens it spans."""

    event: Literal["logprob"] = "logprob"
    id: str
    logprob: float
    tokens: int


class EvalRecord(_Event):
    """One eval record split into the prompt turns and the reference answer."""

    messages: list[ChatMessage]
    answer: str


class EvalRecordsEvent(_Event):
    """The records an `eval_records` request asked for (fewer when the split is smaller)."""

    event: Literal["eval_records"] = "eval_records"
    id: str
    records: list[EvalRecord]
    total: int


class ErrorEvent(_Event):
    """A request failed (`id` set; the server stays up), or the server cannot start (no id)."""

    event: Literal["error"] = "error"
    id: str | None = None
    message: str


ServerEvent = Annotated[
    ReadyEvent
    | TokenEvent
    | DoneEvent
    | StopAckEvent
    | LogprobEvent
    | EvalRecordsEvent
    | ErrorEvent,
    Field(discriminator="event"),
]

_REQUESTS: TypeAdapter[ServerRequest] = TypeAdapter(ServerRequest)
_EVENTS: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)


def parse_request(line: str | bytes) -> ServerRequest:
    """One request line.

    Raises:
        ValueError: not JSON or not a valid request (pydantic's message names the field).
    """
    return _REQUESTS.validate_json(line)


def parse_event(line: str | bytes) -> ServerEvent:
    """One event line.

    Raises:
        ValueError: not JSON or not a known event.
    """
    return _EVENTS.validate_json(line)


def encode(message: BaseModel) -> bytes:
    """A request or event as one JSON line (UTF-8, newline-terminated)."""
    return (json.dumps(message.model_dump(mode="json"), ensure_ascii=False) + "\n").encode()
