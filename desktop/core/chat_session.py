"""A job's chat, base and fine-tuned side by side: its model server and its saved conversation.

Qt-free and blocking (the window runs each call in a worker thread through `Operations`).
One `ModelServer` answers both sides from one copy of the weights: the base with the adapter
switched off, the fine-tuned with it on. Each side keeps its own history (the user's turns are
shared, each model's answers are its own), so the two conversations never mix. The
conversation is saved with the job, in `chat.json` in its folder, written whole and atomically
after every turn; a file that cannot be read is kept aside (never overwritten) and the chat
starts afresh, saying so.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from desktop.core.model_server import ModelServer, ModelServerError
from desktop.core.runtime import TrainerRuntime
from trainer.serve_protocol import (
    ChatMessage,
    DoneEvent,
    EvalRecord,
    GenerationSettings,
    ReadyEvent,
    TokenEvent,
)

__all__ = [
    "CHAT_FILE",
    "ChatSession",
    "ChatTurn",
    "Conversation",
    "EvalRecord",
    "GenerationSettings",
    "ModelServerError",
    "load_conversation",
    "save_conversation",
]

CHAT_FILE = "chat.json"

# The two sides of a turn.
BASE, TUNED = "base", "tuned"


class ChatTurn(BaseModel):
    """One prompt and both answers (with why each ended: eos, length, stopped)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str
    base: str = ""
    tuned: str = ""
    base_end: str = ""
    tuned_end: str = ""
    at: float = Field(default_factory=time.time)


class Conversation(BaseModel):
    """What `chat.json` holds: the system prompt, the settings and the turns."""

    model_config = ConfigDict(extra="ignore")

    system: str = ""
    settings: GenerationSettings = GenerationSettings()
    turns: list[ChatTurn] = []

    def messages(self, side: str, prompt: str) -> list[ChatMessage]:
        """One side's conversation so far, then `prompt` as the next user turn."""
        turns: list[ChatMessage] = []
        if self.system.strip():
            turns.append(ChatMessage(role="system", content=self.system))
        for turn in self.turns:
            turns.append(ChatMessage(role="user", content=turn.prompt))
            turns.append(ChatMessage(role="assistant", content=getattr(turn, side)))
        turns.append(ChatMessage(role="user", content=prompt))
        return turns


def load_conversation(job_dir: Path) -> tuple[Conversation, str | None]:
    """The job's saved conversation (empty when none), and a sentence when the file was bad.

    A file that cannot be read is renamed `chat.json.unreadable-<time>` (kept, never
    overwritten) and an empty conversation starts.
    """
    path = job_dir / CHAT_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Conversation(), None
    except OSError as exc:
        return Conversation(), f"{path}: cannot read the saved chat ({exc.strerror or exc})"
    try:
        return Conversation.model_validate_json(raw), None
    except ValidationError as exc:
        aside = path.with_name(f"{CHAT_FILE}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        problem = str(exc).splitlines()[0]
        return Conversation(), f"{path}: the saved chat is unreadable ({problem}); kept as {aside}"


def save_conversation(job_dir: Path, conversation: Conversation) -> Path:
    """Write `chat.json` atomically (temporary file, then rename); returns its path."""
    path = job_dir / CHAT_FILE
    data = json.dumps(conversation.model_dump(mode="json"), ensure_ascii=False, indent=1)
    fd, temp = tempfile.mkstemp(dir=job_dir, prefix=".chat.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data + "\n")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


class ChatSession:
    """A job's model server, and the turns asked of it.

    Args:
        runtime: the trainer runtime that starts the server.
        job_dir: the job's folder (its adapter is served; its `chat.json` is the conversation).
    """

    def __init__(self, runtime: TrainerRuntime, job_dir: Path) -> None:
        self.job_dir = job_dir
        self.server = ModelServer(runtime, job_dir=job_dir)
        self._current: list[str] = []
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The model server's process id (None before `start`)."""
        return self.server.pid

    def start(self) -> ReadyEvent:
        """Start the server and load the model (blocking; seconds to minutes)."""
        return self.server.start()

    def eval_prompts(self, limit: int = 50) -> list[EvalRecord]:
        """Up to `limit` records of the job's eval split; empty when the job has none."""
        try:
            return list(self.server.eval_records(limit).records)
        except ModelServerError as exc:
            if "no eval split" in str(exc) and self.server.alive:
                return []
            raise

    def ask(
        self,
        conversation: Conversation,
        prompt: str,
        on_token: Callable[[str, str], None],
    ) -> ChatTurn:
        """Both answers to `prompt`, base first; `on_token(side, text)` as each token arrives.

        The turn is not added to `conversation`; the caller adds it (and saves).

        Raises:
            ModelServerError: the server died or could not answer (one sentence).
        """
        settings = conversation.settings
        replies = {
            side: self.server.generate(
                conversation.messages(side, prompt), adapter=side == TUNED, settings=settings
            )
            for side in (BASE, TUNED)
        }
        with self._lock:
            self._current = [reply.id for reply in replies.values()]
        turn = ChatTurn(prompt=prompt)
        try:
            for side, reply in replies.items():
                for event in reply:
                    if isinstance(event, TokenEvent) and event.text:
                        on_token(side, event.text)
                    elif isinstance(event, DoneEvent):
                        setattr(turn, side, event.text)
                        setattr(turn, f"{side}_end", event.reason)
        finally:
            with self._lock:
                self._current = []
        return turn

    def stop(self) -> None:
        """Stop the answers being generated (both sides; a queued one never starts)."""
        with self._lock:
            current = list(self._current)
        for request_id in current:
            try:
                self.server.stop(request_id)
            except ModelServerError:
                return  # the server is gone: `ask` says so

    def close(self) -> None:
        """End the server (blocking, a few seconds at most)."""
        self.server.close()
