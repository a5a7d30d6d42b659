"""`finetune-desk chat JOB [--base]` and `finetune-desk compare JOB [JOB...] --prompts FILE`.

`chat` talks to a job's model in the terminal: the answer streams as it is generated, Ctrl+C
stops the answer (the model server is asked to stop; the conversation keeps what was said), a
second Ctrl+C (or one at the prompt, or end of input) exits. `--base` talks to the base model
(the adapter switched off). `compare` runs a prompts file (or `--eval N` records of the eval
split) through the base and every job's adapter and prints one JSON line per prompt with every
answer (CSV when `--out` ends in .csv); `--eval-loss` adds each job's eval loss and perplexity
for base and adapter. JOB is a job id (or unique prefix) or a job folder. Both start the model
server (`python -m trainer serve`) through the trainer runtime and end it on every way out.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from desktop.cli.output import EXIT_INTERRUPTED
from desktop.core.compare import compare_jobs, read_prompts, save_compare_results, write_jsonl
from desktop.core.errors import ConfigError
from desktop.core.model_server import ModelServer, ModelServerError
from trainer.serve_protocol import ChatMessage, DoneEvent, GenerationSettings, TokenEvent

if TYPE_CHECKING:
    from desktop.cli.commands import Context

__all__ = ["add_chat_parsers", "cmd_chat", "cmd_compare"]


def _settings_flags(p: argparse.ArgumentParser, temperature: float) -> None:
    p.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (0 < p <= 1)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="answer length limit")
    p.add_argument("--seed", type=int, help="sampling seed (the same seed repeats an answer)")


def add_chat_parsers(add: object) -> None:
    """Add `chat` and `compare` through the CLI's `add(name, func, help)`."""
    assert callable(add)
    p = add("chat", cmd_chat, "talk to a job's model in the terminal (streaming)")
    p.add_argument("job", metavar="JOB", help="job id (or a unique prefix) or job folder")
    p.add_argument("--base", action="store_true", help="talk to the base model, no adapter")
    p.add_argument("--checkpoint", type=int, help="use this checkpoint's adapter")
    p.add_argument("--system", help="a system prompt")
    _settings_flags(p, temperature=0.7)

    p = add("compare", cmd_compare, "answers of the base and each job's adapter, per prompt")
    p.add_argument("jobs", nargs="+", metavar="JOB", help="job ids (or prefixes) or folders")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--prompts", type=Path, help='JSONL: {"prompt": ...} or {"messages": ...}')
    source.add_argument("--eval", type=int, metavar="N", help="N records of the eval split")
    p.add_argument("--out", type=Path, help="write here (.csv: CSV, else JSON lines)")
    p.add_argument(
        "--eval-loss", action="store_true", help="eval loss and perplexity, base vs adapter"
    )
    _settings_flags(p, temperature=0.0)


def _settings(ns: argparse.Namespace) -> GenerationSettings:
    try:
        return GenerationSettings(
            temperature=ns.temperature,
            top_p=ns.top_p,
            max_new_tokens=ns.max_new_tokens,
            seed=ns.seed,
        )
    except ValueError as exc:
        problem = exc.errors()[0] if hasattr(exc, "errors") else {"loc": ("?",), "msg": str(exc)}
        flag = "--" + str(problem["loc"][0]).replace("_", "-")
        raise ConfigError(f"{flag}: {problem['msg']}") from exc


def _job_folder(ctx: Context, job: str) -> tuple[str, Path]:
    """(job id, folder) of a job id, a unique prefix, or a job folder's path."""
    folder = Path(job).expanduser()
    if (folder / "config.json").is_file():
        return folder.resolve().name, folder.resolve()

    async def find() -> tuple[str, Path]:
        service = ctx.service()
        try:
            found = service.get(job)
            return found.id, Path(found.job_dir)
        finally:
            await service.close()

    return asyncio.run(find())


def cmd_chat(ctx: Context) -> int:
    """`chat JOB [--base]`: an interactive, streaming conversation with the job's model."""
    ns = ctx.ns
    settings = _settings(ns)
    job_id, folder = _job_folder(ctx, ns.job)
    history: list[ChatMessage] = []
    if ns.system:
        history.append(ChatMessage(role="system", content=ns.system))
    which = "base model" if ns.base else "fine-tuned model"
    print(f"{job_id}: loading the {which} ...", file=sys.stderr, flush=True)
    with ModelServer(ctx.runtime, job_dir=folder, checkpoint=ns.checkpoint) as server:
        ready = server.start()
        print(
            f"ready (model server pid {ready.pid}, {ready.device}); Ctrl+C stops an answer, "
            "a second Ctrl+C or end of input exits",
            file=sys.stderr,
            flush=True,
        )
        while True:
            try:
                print("you> ", end="", flush=True)
                line = sys.stdin.readline()
            except KeyboardInterrupt:
                print(file=sys.stderr)
                return EXIT_INTERRUPTED
            if not line:
                print()
                return 0
            if not line.strip():
                continue
            history.append(ChatMessage(role="user", content=line.rstrip("\n")))
            text, interrupted = _stream_answer(server, history, adapter=not ns.base, s=settings)
            history.append(ChatMessage(role="assistant", content=text))
            if interrupted:
                return EXIT_INTERRUPTED


def _stream_answer(
    server: ModelServer, history: list[ChatMessage], *, adapter: bool, s: GenerationSettings
) -> tuple[str, bool]:
    """Print the answer as it streams; (its text, whether a second Ctrl+C asked to exit)."""
    reply = server.generate(list(history), adapter=adapter, settings=s)
    print("assistant> ", end="", flush=True)
    stopping = False
    text = ""
    while True:
        try:
            for event in reply:
                if isinstance(event, TokenEvent):
                    print(event.text, end="", flush=True)
                elif isinstance(event, DoneEvent):
                    text = event.text
            break
        except KeyboardInterrupt:
            if stopping:
                print("\n[exiting]", flush=True)
                return text, True
            stopping = True
            reply.stop()  # the rest of the reply (ack, done) is read on the next turn
    print("\n[stopped]" if stopping else "", flush=True)
    return text, False


def cmd_compare(ctx: Context) -> int:
    """`compare JOB [JOB...] --prompts FILE | --eval N [--out FILE] [--eval-loss]`."""
    ns = ctx.ns
    if ns.prompts is None and ns.eval is None and not ns.eval_loss:
        raise ConfigError("compare: give --prompts FILE, --eval N or --eval-loss")
    if ns.eval is not None and ns.eval < 1:
        raise ConfigError(f"--eval {ns.eval}: give a number of records of 1 or more")
    if ns.out is not None and ns.out.suffix.lower() == ".csv" and ns.eval_loss:
        raise ConfigError("--eval-loss writes JSON lines: use an --out name not ending in .csv")
    settings = _settings(ns)
    prompts = read_prompts(ns.prompts) if ns.prompts is not None else None
    jobs = [_job_folder(ctx, job) for job in ns.jobs]

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    rows, losses = compare_jobs(
        ctx.runtime,
        jobs,
        prompts,
        eval_records=ns.eval or 0,
        with_eval_loss=ns.eval_loss,
        settings=settings,
        progress=progress,
    )
    measured = [loss for loss in losses if not isinstance(loss, str)]
    if ns.out is None:
        write_jsonl([*rows, *measured], sys.stdout)
    else:  # the window's Save JSONL… / Save CSV… write through the same function
        save_compare_results(ns.out, rows, losses)
        progress(f"wrote {len(rows)} prompt(s) and {len(measured)} eval loss line(s) to {ns.out}")
    problems = [loss for loss in losses if isinstance(loss, str)]
    if problems:  # the answers and the other losses are written: say what is missing
        raise ModelServerError("; ".join(problems))
    return 0
