"""Batch compare: the same prompts through the base model and each job's adapter.

Qt-free and blocking. `read_prompts` reads a prompts file (JSONL, one `{"prompt": ...}` or
`{"messages": [...]}` per line) and names the line of every problem; `compare_jobs` runs the
prompts through one model server per job, one job after the other (one copy of the weights in
memory at a time): the first job's server answers for the base (its adapter switched off) and
every server for its job's adapter; the same server measures the mean token loss and
perplexity of base and adapter on its job's eval split, when asked. Results are plain pydantic
rows, which `finetune-desk compare` writes as JSON lines or as a CSV table (`save_compare_results`
writes them the same way for the window). A `CompareCancel` handle stops a run from another
thread: the server it is talking to is closed at once, and `compare_jobs` raises
`CompareCancelled` with no server left behind.
"""

from __future__ import annotations

import csv
import json
import math
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, ConfigDict, ValidationError

from desktop.core.errors import ConfigError, FtdeskError
from desktop.core.model_server import ModelServer, ModelServerError
from desktop.core.runtime import TrainerRuntime
from trainer.serve_protocol import ChatMessage, DoneEvent, GenerationSettings

__all__ = [
    "BASE",
    "CompareCancel",
    "CompareCancelled",
    "CompareRow",
    "EvalLoss",
    "PromptRecord",
    "compare_jobs",
    "read_prompts",
    "save_compare_results",
    "write_csv",
    "write_jsonl",
]

# The answer key of the base model (the first job's base, adapter switched off).
BASE = "base"


class PromptRecord(BaseModel):
    """One prompt: the conversation to answer, and a reference answer when it has one."""

    model_config = ConfigDict(frozen=True)

    messages: list[ChatMessage]
    reference: str | None = None

    @property
    def prompt(self) -> str:
        """The last user turn (what a person reads as "the prompt")."""
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")


class CompareRow(BaseModel):
    """One prompt with every model's answer: `answers[BASE]` and `answers[job id]`."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    messages: list[ChatMessage]
    reference: str | None = None
    answers: dict[str, str]


class EvalLoss(BaseModel):
    """Mean token loss (nats) and perplexity of base and adapter on a job's eval split."""

    model_config = ConfigDict(frozen=True)

    job: str
    records: int
    tokens: int
    base_loss: float
    base_perplexity: float
    adapter_loss: float
    adapter_perplexity: float


class CompareCancelled(FtdeskError):
    """A compare run was cancelled (its model server is closed)."""


class CompareCancel:
    """Stops a running `compare_jobs` from another thread.

    `cancel()` marks the run cancelled and closes the model server it is talking to (its
    waiting request wakes at once); `compare_jobs` then raises `CompareCancelled`. A server
    started after the cancel is never used: the run checks before each step.
    """

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._server: ModelServer | None = None

    @property
    def cancelled(self) -> bool:
        """Whether `cancel` was called."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Cancel the run and close its current model server (blocking, seconds at most)."""
        self._cancelled.set()
        with self._lock:
            server = self._server
        if server is not None:
            server.close()

    def check(self) -> None:
        """Raise `CompareCancelled` when the run was cancelled."""
        if self.cancelled:
            raise CompareCancelled("compare: cancelled; no model server is left running")

    def _serving(self, server: ModelServer | None) -> None:
        with self._lock:
            self._server = server
        if server is not None and self.cancelled:
            server.close()  # a cancel that came before this server was known


class _PromptLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    messages: list[ChatMessage] | None = None


def read_prompts(path: Path) -> list[PromptRecord]:
    """The prompts of a JSONL file; blank lines are skipped.

    Raises:
        ConfigError: the file cannot be read, or a line is not a valid prompt; the message
            names the file, the line and what is wrong, and nothing is run.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--prompts {path}: cannot read it ({exc})") from exc
    records: list[PromptRecord] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"{where}: not JSON ({exc.args[0]}); one object per line") from exc
        if not isinstance(data, dict):
            raise ConfigError(f'{where}: expected an object like {{"prompt": "..."}}')
        try:
            line = _PromptLine.model_validate(data)
        except ValidationError as exc:
            problem = exc.errors()[0]
            field = ".".join(str(p) for p in problem["loc"]) or "the line"
            raise ConfigError(
                f'{where}: {field}: {problem["msg"]}; give {{"prompt": "..."}} or '
                f'{{"messages": [{{"role": "user", "content": "..."}}]}}'
            ) from exc
        if (line.prompt is None) == (line.messages is None):
            raise ConfigError(f'{where}: give either "prompt" or "messages", not both or neither')
        if line.prompt is not None:
            if not line.prompt.strip():
                raise ConfigError(f'{where}: "prompt" is empty')
            records.append(PromptRecord(messages=[ChatMessage(role="user", content=line.prompt)]))
            continue
        turns = line.messages or []
        if not turns or turns[-1].role != "user":
            raise ConfigError(f'{where}: "messages" must end with a user turn (the one to answer)')
        records.append(PromptRecord(messages=turns))
    if not records:
        raise ConfigError(f"--prompts {path}: holds no prompts")
    return records


def _answer(server: ModelServer, record: PromptRecord, adapter: bool, s: GenerationSettings) -> str:
    events = list(server.generate(record.messages, adapter=adapter, settings=s))
    done = events[-1]
    assert isinstance(done, DoneEvent), done
    return done.text


def compare_jobs(
    runtime: TrainerRuntime,
    jobs: list[tuple[str, Path]],
    prompts: list[PromptRecord] | None,
    *,
    eval_records: int = 0,
    with_eval_loss: bool = False,
    settings: GenerationSettings | None = None,
    progress: Callable[[str], None] = lambda _: None,
    start_timeout_s: float = 600.0,
    cancel: CompareCancel | None = None,
) -> tuple[list[CompareRow], list[EvalLoss | str]]:
    """Every prompt's answer from the base (first job's) and from each job's adapter, and each
    job's eval loss with `with_eval_loss`; one server per job, one job after the other.

    Args:
        runtime: starts the model servers.
        jobs: (job id, job folder) pairs, in the order their answers are shown.
        prompts: the prompts; None to take the first `eval_records` records of the first
            job's eval split instead (their reference answers come along); with neither
            (`eval_records` 0), only eval losses are measured.
        eval_records: how many eval records when `prompts` is None.
        with_eval_loss: also measure each job's eval loss (`EvalLoss`), or say in a sentence
            (a `str` in its place) why it cannot be measured; the answers are kept either way.
        settings: generation settings (default: greedy, 256 new tokens).
        progress: called with a line per step, for a person watching.
        cancel: a handle another thread may use to stop the run.

    Raises:
        ModelServerError: a server could not start or died (one sentence).
        CompareCancelled: `cancel` was used; every server this run started is closed.
    """
    cancel = cancel or CompareCancel()
    try:
        return _compare(
            runtime,
            jobs,
            prompts,
            eval_records,
            with_eval_loss,
            settings,
            progress,
            start_timeout_s,
            cancel,
        )
    except ModelServerError:
        cancel.check()  # the server was closed by the cancel: say that, not "it died"
        raise
    finally:
        cancel._serving(None)


def _compare(
    runtime: TrainerRuntime,
    jobs: list[tuple[str, Path]],
    prompts: list[PromptRecord] | None,
    eval_records: int,
    with_eval_loss: bool,
    settings: GenerationSettings | None,
    progress: Callable[[str], None],
    start_timeout_s: float,
    cancel: CompareCancel,
) -> tuple[list[CompareRow], list[EvalLoss | str]]:
    settings = settings or GenerationSettings(temperature=0.0, max_new_tokens=256)
    answers: list[dict[str, str]] = []
    records: list[PromptRecord] = list(prompts or [])
    losses: list[EvalLoss | str] = []
    for index, (job_id, job_dir) in enumerate(jobs):
        cancel.check()
        progress(f"{job_id}: loading the model")
        with ModelServer(runtime, job_dir=job_dir) as server:
            cancel._serving(server)
            server.start(timeout_s=start_timeout_s)
            cancel.check()  # cancelled while it loaded (before its process was known)
            if index == 0:
                if prompts is None and eval_records > 0:
                    held = server.eval_records(eval_records).records
                    records = [PromptRecord(messages=r.messages, reference=r.answer) for r in held]
                answers = [{} for _ in records]
            for number, record in enumerate(records, start=1):
                cancel.check()
                progress(f"{job_id}: prompt {number}/{len(records)}")
                if index == 0:
                    answers[number - 1][BASE] = _answer(server, record, False, settings)
                answers[number - 1][job_id] = _answer(server, record, True, settings)
            if with_eval_loss:
                cancel.check()
                progress(f"{job_id}: eval loss of base and adapter")
                try:
                    losses.append(_eval_loss(server, job_id))
                except ModelServerError as exc:
                    if not server.alive:
                        raise
                    losses.append(f"{job_id}: {exc}")
    cancel.check()
    rows = [
        CompareRow(prompt=r.prompt, messages=r.messages, reference=r.reference, answers=answers[i])
        for i, r in enumerate(records)
    ]
    return rows, losses


def _eval_loss(server: ModelServer, job_id: str) -> EvalLoss:
    """Mean token loss and perplexity of base and adapter on the served job's eval split."""
    held = server.eval_records(100000).records
    sums = {True: 0.0, False: 0.0}
    tokens = 0
    for record in held:
        for adapter in (False, True):
            scored = server.logprob(record.answer, record.messages, adapter=adapter)
            sums[adapter] -= scored.logprob
        tokens += scored.tokens
    count = max(tokens, 1)
    base, tuned = sums[False] / count, sums[True] / count
    return EvalLoss(
        job=job_id,
        records=len(held),
        tokens=tokens,
        base_loss=round(base, 6),
        base_perplexity=round(math.exp(base), 4),
        adapter_loss=round(tuned, 6),
        adapter_perplexity=round(math.exp(tuned), 4),
    )


def write_jsonl(rows: Iterable[CompareRow | EvalLoss], out: TextIO) -> None:
    """One JSON object per row."""
    for row in rows:
        out.write(json.dumps(row.model_dump(mode="json"), ensure_ascii=False) + "\n")


def write_csv(rows: list[CompareRow], out: TextIO) -> None:
    """A CSV: prompt, reference, then one column per model (base first)."""
    models: list[str] = []
    for row in rows:
        models += [key for key in row.answers if key not in models]
    writer = csv.writer(out)
    writer.writerow(["prompt", "reference", *models])
    for row in rows:
        writer.writerow(
            [row.prompt, row.reference or "", *(row.answers.get(m, "") for m in models)]
        )


def save_compare_results(path: Path, rows: list[CompareRow], losses: list[EvalLoss | str]) -> Path:
    """Write a run's results as `finetune-desk compare --out` does: a `.csv` path gets
    `write_csv` (answers only), any other JSON lines (`write_jsonl`: rows, then eval losses).

    Raises:
        ConfigError: the file cannot be written (names it and why).
    """
    measured = [loss for loss in losses if not isinstance(loss, str)]
    try:
        with open(path, "w", encoding="utf-8", newline="") as out:
            if path.suffix.lower() == ".csv":
                write_csv(rows, out)
            else:
                write_jsonl([*rows, *measured], out)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the results ({exc}); choose another file") from exc
    return path
