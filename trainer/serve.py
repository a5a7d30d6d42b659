"""`python -m trainer serve`: a warm model that answers the app's chat and compare requests.

    python -m trainer serve --job-dir DIR [--checkpoint N] [--device auto|cpu|cuda]
    python -m trainer serve --model PATH

The base model loads once; with `--job-dir` the job's adapter (`output/`, or
`checkpoints/checkpoint-N/` with `--checkpoint N`) is attached with PEFT, and a request with
`"adapter": false` runs inside PEFT's `disable_adapter()`: the base and the fine-tuned answers
come from one copy of the weights. A full fine-tune's `output/` is a whole model; the base is
then loaded beside it, on the first request that needs it.

The protocol is `trainer.serve_protocol` (JSON lines on stdin and stdout; its docstring says why
pipes). Only events go to stdout: the process's own stdout file descriptor is moved to stderr
before anything is imported, so a library's print never corrupts the stream. A reader thread
takes requests, answers `stop` at once, and queues the rest; the main thread generates, one
request at a time, streaming each token as `generate` produces it. When stdin closes (the app
closed, crashed or was killed) the running generation stops at its next token and the process
exits. SIGINT is ignored: a Ctrl+C in the terminal of `finetune-desk chat` is the CLI's (it
stops the answer with a `stop` request), not the server's.

Prompts use the model's own chat template. A tokenizer without one gets a plain fallback: each
turn as "System: ...", "User: ..." or "Assistant: ..." on its own line, then "Assistant:".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from trainer.serve_protocol import (
    ChatMessage,
    DoneEvent,
    ErrorEvent,
    EvalRecord,
    EvalRecordsEvent,
    EvalRecordsRequest,
    GenerateRequest,
    LogprobEvent,
    LogprobRequest,
    ReadyEvent,
    StopAckEvent,
    StopRequest,
    TokenEvent,
    encode,
    parse_request,
)

__all__ = ["ModelHost", "fallback_prompt", "main"]


class ServeInputError(Exception):
    """The server cannot start with these arguments; the message says what to do."""


def fallback_prompt(messages: list[ChatMessage]) -> str:
    """The prompt for a tokenizer without a chat template (documented in the module)."""
    lines = [f"{m.role.capitalize()}: {m.content}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


class _Channel:
    """The event stream: one lock, so a token and a stop acknowledgement never interleave."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.lock = threading.Lock()

    def send(self, event: Any) -> None:
        with self.lock:
            self.send_locked(event)

    def send_locked(self, event: Any) -> None:
        """Write while the caller already holds `lock`."""
        with contextlib.suppress(BrokenPipeError, ValueError):  # the client is gone
            self._stream.write(encode(event))
            self._stream.flush()


class _Streamer:
    """A transformers streamer that sends each new token's text as it is generated.

    `generate` calls `put` with the prompt first, then with each new token. Under the channel's
    lock the stop flag is checked before a token is sent, and the reader thread sets the flag
    before it sends the acknowledgement under the same lock: no token follows a `stop_ack`.
    """

    def __init__(self, channel: _Channel, request_id: str, tokenizer: Any, stop: threading.Event):
        self.channel = channel
        self.request_id = request_id
        self.tokenizer = tokenizer
        self.stop = stop
        self.ids: list[int] = []
        self.text = ""
        self.first_put = True

    def put(self, value: Any) -> None:
        if self.first_put:  # the prompt
            self.first_put = False
            return
        with self.channel.lock:
            if self.stop.is_set():
                return
            self.ids.extend(int(t) for t in value.reshape(-1).tolist())
            text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            delta = ""
            # Half a multi-byte character waits for the rest, but the event goes out anyway:
            # one event per token, as soon as it is generated (the client times on it).
            if not text.endswith("\ufffd"):
                delta, self.text = text[len(self.text) :], text
            self.channel.send_locked(TokenEvent(id=self.request_id, text=delta))

    def end(self) -> None:
        """Called by `generate` when it finishes."""


class ModelHost:
    """The loaded model (with its adapter, if any) and what it answers."""

    def __init__(
        self,
        *,
        job_dir: Path | None = None,
        checkpoint: int | None = None,
        model: str | None = None,
        device: str = "auto",
    ) -> None:
        self.job_dir = job_dir
        self.config: Any = None  # the job's TrainingConfig
        self.adapter_dir: Path | None = None
        self.full_dir: Path | None = None
        # The job's files are checked before torch loads: a wrong folder is said at once.
        if job_dir is not None:
            self.config = config = self._resolve_job(job_dir, checkpoint)
            base = config.model.name_or_path
        elif model is not None:
            base = model
        else:
            raise ServeInputError("give --job-dir DIR or --model PATH")
        import torch

        self.device = (
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ServeInputError("--device cuda: no CUDA GPU is visible; use --device cpu")
        self.base_name = base
        self._base_only: Any = None
        self._load(base)

    def _resolve_job(self, job_dir: Path, checkpoint: int | None) -> Any:
        """The job's config; sets the adapter (or full model) folder to serve."""
        from trainer.config import load_config
        from trainer.protocol import CHECKPOINTS_DIR

        if not (job_dir / "config.json").is_file():
            raise ServeInputError(f"{job_dir}: no config.json; give a job folder")
        config = load_config(job_dir / "config.json")
        if checkpoint is not None:
            weights = job_dir / CHECKPOINTS_DIR / f"checkpoint-{checkpoint}"
            if not weights.is_dir():
                raise ServeInputError(
                    f"--checkpoint {checkpoint}: {weights} does not exist; the job's "
                    "checkpoints are in its checkpoints/ folder"
                )
        else:
            weights = job_dir / "output"
            if not weights.is_dir():
                raise ServeInputError(
                    f"{job_dir}: no output/ yet (the job has not finished); choose a "
                    "checkpoint with --checkpoint N"
                )
        if (weights / "adapter_config.json").is_file():
            self.adapter_dir = weights
        elif (weights / "config.json").is_file():
            self.full_dir = weights
        else:
            raise ServeInputError(f"{weights}: holds neither an adapter nor a model")
        return config

    def _load_kwargs(self) -> dict[str, Any]:
        import torch

        kwargs: dict[str, Any] = {}
        if self.config is not None:
            kwargs["revision"] = self.config.model.revision
            kwargs["trust_remote_code"] = self.config.model.trust_remote_code
            wanted = self.config.model.dtype
        else:
            wanted = "auto"
        if self.device == "cpu":
            kwargs["dtype"] = torch.bfloat16 if wanted == "bf16" else torch.float32
        elif wanted == "fp32":
            kwargs["dtype"] = torch.float32
        else:
            kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return kwargs

    def _load(self, base: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = self.full_dir or base
        kwargs = self._load_kwargs()
        token_source = self.adapter_dir if _has_tokenizer(self.adapter_dir) else source
        self.tokenizer = AutoTokenizer.from_pretrained(str(token_source))
        model: Any = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
        if self.adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(self.adapter_dir))
        self.model = model.to(self.device).eval()
        self.chat_template = bool(getattr(self.tokenizer, "chat_template", None))

    def ready_event(self) -> ReadyEvent:
        """What the server announces once loaded."""
        return ReadyEvent(
            model=self.base_name,
            adapter=str(self.adapter_dir or self.full_dir or "") or None,
            device=self.device,
            chat_template=self.chat_template,
            pid=os.getpid(),
        )

    def _model_for(self, adapter: bool) -> tuple[Any, Any]:
        """(model, context) for a request: the adapter on, or the base."""
        if adapter or (self.adapter_dir is None and self.full_dir is None):
            return self.model, contextlib.nullcontext()
        if self.adapter_dir is not None:
            return self.model, self.model.disable_adapter()
        if self._base_only is None:  # a full fine-tune: the base is a second model
            from transformers import AutoModelForCausalLM

            loaded: Any = AutoModelForCausalLM.from_pretrained(
                self.base_name, **self._load_kwargs()
            )
            self._base_only = loaded.to(self.device).eval()
        return self._base_only, contextlib.nullcontext()

    def prompt_ids(self, messages: list[ChatMessage]) -> list[int]:
        """Token ids of the conversation followed by the assistant's turn opening."""
        if self.chat_template:
            turns = [m.model_dump() for m in messages]
            text = self.tokenizer.apply_chat_template(
                turns, add_generation_prompt=True, tokenize=False
            )
        else:
            text = fallback_prompt(messages)
        ids: list[int] = self.tokenizer(text, add_special_tokens=not self.chat_template)[
            "input_ids"
        ]
        return ids

    def generate(self, request: GenerateRequest, channel: _Channel, stop: threading.Event) -> None:
        """Stream the answer to `request`, then send its `done`."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _StopFlag(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

        started = time.monotonic()
        ids = torch.tensor([self.prompt_ids(request.conversation())], device=self.device)
        settings = request.settings
        streamer = _Streamer(channel, request.id, self.tokenizer, stop)
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_StopFlag()]),
            "attention_mask": torch.ones_like(ids),
            "pad_token_id": self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id,
        }
        if settings.temperature > 0:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        model, context = self._model_for(request.adapter)
        if not stop.is_set():
            with torch.inference_mode(), context:
                model.generate(ids, **kwargs)
        eos = self.tokenizer.eos_token_id
        if stop.is_set():
            reason = "stopped"
        elif streamer.ids and eos is not None and streamer.ids[-1] == eos:
            reason = "eos"
        else:
            reason = "length"
        with channel.lock:  # after every token of this request
            channel.send_locked(
                DoneEvent(
                    id=request.id,
                    reason=reason,
                    tokens=len(streamer.ids),
                    text=streamer.text,
                    seconds=round(time.monotonic() - started, 4),
                )
            )

    def logprob(self, request: LogprobRequest) -> LogprobEvent:
        """Sum of log-probabilities of the answer's tokens after the prompt (teacher forcing)."""
        import torch

        prompt = self.prompt_ids(request.conversation())
        answer = self.tokenizer(request.answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + answer], device=self.device)
        model, context = self._model_for(request.adapter)
        with torch.inference_mode(), context:
            logits = model(input_ids=ids).logits[0].float()
        # The logits at position i predict token i+1: the answer's tokens are predicted from
        # the last prompt position on.
        predicting = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
        target = torch.tensor(answer, device=self.device)
        total = predicting.gather(1, target.unsqueeze(1)).sum()
        return LogprobEvent(id=request.id, logprob=float(total), tokens=len(answer))

    def eval_records(self, request: EvalRecordsRequest) -> EvalRecordsEvent:
        """The first records of the job's eval split as prompts and reference answers."""
        if self.config is None:
            raise ServeInputError("a server started with --model has no job and no eval split")
        ds = self.config.dataset
        if ds.eval_split is None and ds.eval_path is None:
            raise ServeInputError(
                "this job has no eval split: set dataset.eval_split or dataset.eval_path, or "
                "give prompts of your own"
            )
        from trainer.data import load_training_data

        data = load_training_data(ds, seed=self.config.training.seed)
        records = [_as_eval_record(r) for r in data.eval or []]
        usable = [r for r in records if r is not None]
        if records and not usable:
            raise ServeInputError(
                "the eval split holds plain text records, which have no prompt and answer"
            )
        return EvalRecordsEvent(id=request.id, records=usable[: request.limit], total=len(usable))


def _has_tokenizer(folder: Path | None) -> bool:
    return folder is not None and (folder / "tokenizer_config.json").is_file()


def _as_eval_record(record: dict[str, Any]) -> EvalRecord | None:
    """A normalised record as prompt turns and the reference answer; None for plain text."""
    if "messages" in record:
        turns = [ChatMessage(role=m["role"], content=str(m["content"])) for m in record["messages"]]
        if len(turns) < 2 or turns[-1].role != "assistant":
            return None
        return EvalRecord(messages=turns[:-1], answer=turns[-1].content)
    if "prompt" in record and "completion" in record:
        user = ChatMessage(role="user", content=str(record["prompt"]))
        return EvalRecord(messages=[user], answer=str(record["completion"]))
    return None


class _Server:
    """The request loop: a reader thread for stdin, generation on the main thread."""

    def __init__(self, host: ModelHost, channel: _Channel, requests: IO[bytes]) -> None:
        self.host = host
        self.channel = channel
        self.requests = requests
        self.pending: queue.Queue[Any] = queue.Queue()
        self.stops: dict[str, threading.Event] = {}
        self.stops_lock = threading.Lock()
        self.closed = threading.Event()

    def _stop_flag(self, request_id: str) -> threading.Event:
        with self.stops_lock:
            return self.stops.setdefault(request_id, threading.Event())

    def read(self) -> None:
        """Reader thread: answer stops at once, queue the rest; stdin closing ends everything."""
        for raw in iter(self.requests.readline, b""):
            if not raw.strip():
                continue
            try:
                request = parse_request(raw)
            except ValueError as exc:
                self.channel.send(ErrorEvent(message=f"bad request line: {_problems(exc)}"))
                continue
            if isinstance(request, StopRequest):
                flag = self._stop_flag(request.id)
                with self.channel.lock:
                    flag.set()
                    self.channel.send_locked(StopAckEvent(id=request.id))
            else:
                self.pending.put(request)
        self.closed.set()
        with self.stops_lock:
            for flag in self.stops.values():
                flag.set()
        self.pending.put(None)

    def serve(self) -> None:
        """Main thread: answer queued requests in order until stdin closes."""
        while True:
            request = self.pending.get()
            if request is None or self.closed.is_set():
                return
            try:
                if isinstance(request, GenerateRequest):
                    flag = self._stop_flag(request.id)
                    if self.closed.is_set():
                        flag.set()
                    self.host.generate(request, self.channel, flag)
                elif isinstance(request, LogprobRequest):
                    self.channel.send(self.host.logprob(request))
                else:
                    self.channel.send(self.host.eval_records(request))
            except Exception as exc:  # the request fails; the model stays loaded and warm
                self.channel.send(ErrorEvent(id=request.id, message=_sentence(exc)))
            finally:
                with self.stops_lock:
                    self.stops.pop(request.id, None)


def _problems(exc: ValueError) -> str:
    """A request's validation problems as `field: what is wrong`, joined by "; "."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc).splitlines()[0] if str(exc) else "not JSON"
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
    return "; ".join(parts)


def _sentence(exc: BaseException) -> str:
    """One line for the client: input problems as they are, anything else with its type."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else "no details"
    names = {cls.__name__ for cls in type(exc).__mro__}
    if (
        isinstance(exc, ServeInputError)
        or {"TrainerInputError", "ConfigFileError", "DataError"} & names
    ):
        return text
    return f"{type(exc).__name__}: {text}"


def _take_stdout() -> IO[bytes]:
    """The protocol's stream: the real stdout, with fd 1 (and sys.stdout) moved to stderr."""
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer serve`; returns the exit code (0 when stdin closed, 2 bad arguments)."""
    parser = argparse.ArgumentParser(
        prog="python -m trainer serve",
        description="Serve a job's model (base + adapter) over JSON lines on stdin/stdout.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--job-dir", type=Path, help="a job folder (its adapter is attached)")
    source.add_argument("--model", help="a model folder or Hub id, served without an adapter")
    parser.add_argument("--checkpoint", type=int, help="serve this checkpoint's adapter")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args(argv)
    if args.checkpoint is not None and args.job_dir is None:
        parser.error("--checkpoint needs --job-dir")
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = _Channel(_take_stdout())
    try:
        host = ModelHost(
            job_dir=args.job_dir, checkpoint=args.checkpoint, model=args.model, device=args.device
        )
    except Exception as exc:
        message = _sentence(exc)
        print(f"serve: {message}", file=sys.stderr, flush=True)
        channel.send(ErrorEvent(message=message))
        return 2
    server = _Server(host, channel, sys.stdin.buffer)
    channel.send(host.ready_event())
    threading.Thread(target=server.read, name="serve-stdin", daemon=True).start()
    server.serve()
    return 0
