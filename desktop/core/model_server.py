"""The app's side of the model server (`python -m trainer serve`): start it, talk to it, end it.

Qt-free and blocking, like `TrainerRuntime`: the CLI calls it directly, the window from worker
threads. One reader thread routes the server's events (`trainer.serve_protocol`) to the request
they answer; another keeps the last lines of its stderr for the sentence that explains a death.
When the server dies, killed or crashed, every waiting request is woken with one
`ModelServerError` sentence: nothing waits on a dead process. Closing the client closes the
server's stdin (its signal to exit), then kills it if it has not gone within a few seconds.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from desktop.core.errors import FtdeskError
from desktop.core.runtime import TrainerRuntime
from trainer.serve_protocol import (
    ChatMessage,
    DoneEvent,
    ErrorEvent,
    EvalRecordsEvent,
    EvalRecordsRequest,
    GenerateRequest,
    GenerationSettings,
    LogprobEvent,
    LogprobRequest,
    ReadyEvent,
    ServerEvent,
    StopAckEvent,
    StopRequest,
    TokenEvent,
    encode,
    parse_event,
)

__all__ = ["ModelServer", "ModelServerError", "Reply"]

log = logging.getLogger(__name__)

# How long a closing server may take to leave on its own before it is killed.
_CLOSE_GRACE_S = 5.0


class ModelServerError(FtdeskError):
    """The model server cannot start, died, or could not answer a request (one sentence)."""


class _Gone:
    """Put into every waiting reply when the server's stdout ends."""


class Reply:
    """The events answering one request, in order, as they arrive.

    Iterating a generation yields `TokenEvent`s (and a `StopAckEvent` when it was stopped) and
    ends with its `DoneEvent`. A failed request, or a server that died meanwhile, raises
    `ModelServerError` from the iteration.
    """

    def __init__(self, server: ModelServer, request_id: str) -> None:
        self.server = server
        self.id = request_id
        self.events: queue.Queue[ServerEvent | _Gone] = queue.Queue()

    def next_event(self) -> ServerEvent:
        """The next event (blocks until one arrives or the server dies)."""
        item = self.events.get()
        if isinstance(item, _Gone):
            raise ModelServerError(self.server.death_sentence())
        if isinstance(item, ErrorEvent):
            raise ModelServerError(f"the model server could not answer: {item.message}")
        return item

    def __iter__(self) -> Iterator[ServerEvent]:
        while True:
            event = self.next_event()
            yield event
            if isinstance(event, DoneEvent):
                return

    def stop(self) -> None:
        """Ask the server to stop this generation (no token follows its acknowledgement)."""
        self.server.stop(self.id)


class ModelServer:
    """One `trainer serve` child process and its protocol.

    Args:
        runtime: the trainer runtime that starts the process.
        job_dir: serve this job's model with its adapter (`output/`, or a checkpoint's).
        checkpoint: the checkpoint step whose adapter to attach instead of `output/`.
        model: serve this model folder or Hub id alone (no job, no adapter).
        device: "auto" (a GPU when there is one), "cpu" or "cuda".
    """

    def __init__(
        self,
        runtime: TrainerRuntime,
        *,
        job_dir: Path | None = None,
        checkpoint: int | None = None,
        model: str | None = None,
        device: str = "auto",
    ) -> None:
        if (job_dir is None) == (model is None):
            raise ValueError("give job_dir or model, not both")
        self.runtime = runtime
        self.args: list[str] = (
            ["--job-dir", str(job_dir)] if job_dir is not None else ["--model", str(model)]
        )
        if checkpoint is not None:
            self.args += ["--checkpoint", str(checkpoint)]
        self.args += ["--device", device]
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: ReadyEvent | None = None
        self._replies: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._ready_or_gone = threading.Event()
        self._gone = False
        self._fatal: str | None = None
        self._closing = False
        self._stderr: collections.deque[str] = collections.deque(maxlen=30)
        self._threads: list[threading.Thread] = []

    # -- lifetime ---------------------------------------------------------------------------

    def start(self, *, timeout_s: float = 600.0) -> ReadyEvent:
        """Start the server and wait until its model is loaded.

        Raises:
            ModelServerError: it could not start, exited, or was not ready within `timeout_s`.
            RuntimeNotReadyError: the trainer runtime cannot be started at all.
        """
        if self._closing:  # closed before it started (a cancel): start nothing
            raise ModelServerError("the model server was closed before it started")
        self.proc = self.runtime.start_server(*self.args)
        if self._closing:  # closed while the process was being started: end it now
            self.close()
            raise ModelServerError("the model server was closed before it started")
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for name, target, stream in (
            ("model-server-events", self._read_events, self.proc.stdout),
            ("model-server-stderr", self._read_stderr, self.proc.stderr),
        ):
            thread = threading.Thread(target=target, args=(stream,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._ready_or_gone.wait(timeout_s):
            self.close()
            raise ModelServerError(
                f"the model server did not load the model within {timeout_s:g} s; check the "
                "trainer runtime with: finetune-desk doctor"
            )
        if self.ready is None:
            sentence = self.death_sentence()
            self.close()
            raise ModelServerError(sentence)
        return self.ready

    @property
    def pid(self) -> int | None:
        """The server process's id (None before `start`)."""
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        """True while the server runs and answers."""
        return self.proc is not None and not self._gone and self.proc.poll() is None

    def close(self) -> None:
        """End the server: close its stdin (it exits), then kill it if it lingers. Idempotent."""
        self._closing = True
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):  # a broken pipe: it is gone already
                proc.stdin.close()
        try:
            proc.wait(timeout=_CLOSE_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for thread in self._threads:
            thread.join(timeout=_CLOSE_GRACE_S)

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def death_sentence(self) -> str:
        """Why the server is not answering, as one sentence."""
        if self._fatal is not None:
            return f"the model server could not start: {self._fatal}"
        proc = self.proc
        code = None if proc is None else proc.poll()
        if code is None and proc is not None:
            try:
                code = proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                code = None
        if self._closing:
            return "the model server was closed"
        if code is not None and code < 0:
            try:
                how = f"was killed ({signal.Signals(-code).name})"
            except ValueError:
                how = f"was killed (signal {-code})"
            return f"the model server {how}; start the chat again to restart it"
        for thread in self._threads[1:]:  # the stderr reader: let it take the last lines
            thread.join(timeout=2.0)
        # A crash's own last line (a traceback's "Error: ..."), not an indented source line.
        last = next((ln for ln in reversed(self._stderr) if ln.strip() and ln[0] != " "), "")
        tail = f" ({last.strip()[:300]})" if last else ""
        return (
            f"the model server stopped unexpectedly with exit code {code}{tail}; start the "
            "chat again to restart it"
        )

    # -- requests ---------------------------------------------------------------------------

    def generate(
        self,
        messages: list[ChatMessage] | None = None,
        *,
        prompt: str | None = None,
        adapter: bool = True,
        settings: GenerationSettings | None = None,
    ) -> Reply:
        """Start a generation; iterate the reply for its tokens and its `DoneEvent`."""
        request = GenerateRequest(
            id=self._next_id(),
            messages=messages,
            prompt=prompt,
            adapter=adapter,
            settings=settings or GenerationSettings(),
        )
        return self._submit(request.id, request)

    def stop(self, request_id: str) -> None:
        """Ask the server to stop a generation; the `StopAckEvent` comes in its reply."""
        self._send(StopRequest(id=request_id))

    def logprob(
        self,
        answer: str,
        messages: list[ChatMessage] | None = None,
        *,
        prompt: str | None = None,
        adapter: bool = True,
    ) -> LogprobEvent:
        """Sum of the log-probabilities of `answer`'s tokens after the prompt (nats)."""
        request = LogprobRequest(
            id=self._next_id(), messages=messages, prompt=prompt, answer=answer, adapter=adapter
        )
        event = self._submit(request.id, request).next_event()
        assert isinstance(event, LogprobEvent), event
        return event

    def eval_records(self, limit: int) -> EvalRecordsEvent:
        """The first `limit` records of the job's eval split (prompts and reference answers)."""
        request = EvalRecordsRequest(id=self._next_id(), limit=limit)
        event = self._submit(request.id, request).next_event()
        assert isinstance(event, EvalRecordsEvent), event
        return event

    def _next_id(self) -> str:
        return f"r{next(self._ids)}"

    def _submit(self, request_id: str, request: Any) -> Reply:
        reply = Reply(self, request_id)
        with self._lock:
            if self._gone:
                raise ModelServerError(self.death_sentence())
            self._replies[request_id] = reply
        self._send(request)
        return reply

    def _send(self, request: Any) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None:
            raise ModelServerError("the model server is not started")
        try:
            with self._write_lock:
                proc.stdin.write(encode(request))
                proc.stdin.flush()
        except (OSError, ValueError) as exc:  # a broken pipe: the server is gone
            raise ModelServerError(self.death_sentence()) from exc

    # -- reader threads ---------------------------------------------------------------------

    def _read_events(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            try:
                event = parse_event(raw)
            except ValueError:
                log.debug("model server: not an event: %r", raw[:200])
                continue
            if isinstance(event, ReadyEvent):
                self.ready = event
                self._ready_or_gone.set()
                continue
            request_id = getattr(event, "id", None)
            if request_id is None:  # a startup failure, or a request line it could not read
                if self.ready is None:
                    self._fatal = event.message if isinstance(event, ErrorEvent) else None
                else:
                    log.debug("model server: %s", event)
                continue
            with self._lock:
                reply = self._replies.get(request_id)
                if isinstance(event, (DoneEvent, ErrorEvent, LogprobEvent, EvalRecordsEvent)):
                    self._replies.pop(request_id, None)
            if reply is not None:
                reply.events.put(event)
        # stdout ended: the process is gone (or going). Wake everything that waits.
        with self._lock:
            self._gone = True
            waiting = list(self._replies.values())
            self._replies.clear()
        for reply in waiting:
            reply.events.put(_Gone())
        self._ready_or_gone.set()

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr.append(line)
            log.debug("model server: %s", line)


# The events a generation's reply yields, for callers that match on them.
GenerationEvent = TokenEvent | StopAckEvent | DoneEvent
