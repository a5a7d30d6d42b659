"""`finetune-desk`: the app's services without a window.

Everything the window can launch or inspect, a script can too: run, jobs, show, logs, cancel,
metrics, validate, check-data, keys, doctor, runtime, repair, pods, spend, clusters, models,
export, chat, compare. `--json` prints machine-readable output.
Expected errors print one sentence naming the field, line or value and exit with the error's
code (2 for bad input); `finetune-desk` alone opens the window. Output into a pipe that closed early
(`metrics JOB | head`) ends quietly with exit 141, as a shell tool killed by SIGPIPE would. Of
two commands that change one job at once (`run --resume`, `cancel`), the second exits 2 with
"already resuming" or waits for the first (a cancel).

This module holds the parser and `main`; `commands` holds one function per command and
`output` what they print. The trainer runtime's checks (`doctor`, `check-data`) go through
`desktop.core.runtime.TrainerRuntime`, like the window's.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from desktop.cli.chat import add_chat_parsers
from desktop.cli.clusters import add_clusters_parser, cmd_clusters
from desktop.cli.commands import (
    Context,
    cmd_cancel,
    cmd_check_data,
    cmd_doctor,
    cmd_jobs,
    cmd_keys,
    cmd_logs,
    cmd_metrics,
    cmd_repair,
    cmd_show,
    cmd_validate,
)
from desktop.cli.dry_run import run_or_dry_run
from desktop.cli.export import cmd_export
from desktop.cli.models import cmd_models
from desktop.cli.output import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED
from desktop.cli.pods import cmd_pods
from desktop.cli.runpod_flags import add_runpod_flags
from desktop.cli.runtime import add_runtime_parser, cmd_runtime
from desktop.cli.slurm_flags import add_slurm_flags
from desktop.cli.spend import cmd_spend
from desktop.core.errors import ConfigError, FtdeskError

__all__ = ["build_parser", "main"]

log = logging.getLogger("desktop.cli")


# ---------------------------------------------------------------------------------------------
# The parser


def build_parser() -> argparse.ArgumentParser:
    """The `finetune-desk` argument parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--offline",
        action="store_true",
        default=argparse.SUPPRESS,
        help="refuse every network path (also a setting)",
    )
    parser = argparse.ArgumentParser(
        prog="finetune-desk",
        description="Fine-tune language models locally or on RunPod. Without a command, opens "
        "the window.",
    )
    parser.add_argument("--offline", action="store_true", help="refuse every network path")
    parser.add_argument("--demo", action="store_true", help="open the built-in demo")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable[[Context], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("run", run_or_dry_run, "launch a training job from a config file (or resume one)")
    p.add_argument("config", nargs="?", help="a config file (.json or .yaml)")
    p.add_argument("--resume", metavar="JOB", help="continue a cancelled or failed job")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --resume: continue even though the data, model or trainer changed",
    )
    p.add_argument("--provider", default="local", help="where to run it (default: local)")
    p.add_argument("--name", help="a name for the job list (default: the config's name)")
    p.add_argument("--follow", "-f", action="store_true", help="print progress until it ends")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.add_argument(
        "--dry-run", action="store_true", help="check and print the estimate; create nothing"
    )
    add_runpod_flags(p)
    add_slurm_flags(p)

    p = add("jobs", cmd_jobs, "list jobs")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("show", cmd_show, "show one job: state, progress, final loss, output")
    p.add_argument("job", metavar="JOB", help="job id (or a unique prefix)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("logs", cmd_logs, "print a job's console output")
    p.add_argument("job", metavar="JOB", help="job id (or a unique prefix)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")

    p = add("cancel", cmd_cancel, "cancel a job (it checkpoints first)")
    p.add_argument("job", metavar="JOB", help="job id (or a unique prefix)")
    p.add_argument("--no-wait", action="store_true", help="return without waiting for the end")

    p = add("metrics", cmd_metrics, "print every logged step of a job")
    p.add_argument("job", metavar="JOB", help="job id (or a unique prefix)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="CSV on stdout")
    fmt.add_argument("--json", action="store_true", help="JSON on stdout")

    p = add("validate", cmd_validate, "check a config and its data without launching")
    p.add_argument("config", help="a config file (.json or .yaml)")

    p = add("check-data", cmd_check_data, "check a dataset with the trainer runtime")
    p.add_argument("file", help="a data file (.jsonl, .json, .csv, .parquet) or folder")
    p.add_argument("--format", default="auto", help="the data format (default: detect it)")
    p.add_argument("--split", help="split of a saved or Hub dataset (default: train)")
    p.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="column override, e.g. --field prompt=question (repeatable)",
    )
    p.add_argument("--model", help="a model folder whose tokenizer counts the tokens")
    p.add_argument("--max-length", type=int, help="training max length (share cut)")
    p.add_argument("--sample", type=int, help="records to count tokens on (0 = all)")
    p.add_argument(
        "--all-tokens", action="store_true", help="mark every token as trained (no masking)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = add("keys", cmd_keys, "keychain secrets: set, status, delete")
    p.add_argument("action", choices=("set", "status", "delete"))
    p.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="runpod_api_key, hf_token, wandb_api_key or ssh_passphrase",
    )

    add("repair", cmd_repair, "rebuild a damaged job database from the job folders")

    p = add("pods", cmd_pods, "RunPod pods named ftdesk- that no live job owns, with their $/h")
    p.add_argument("--json", action="store_true", help="print JSON")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--delete-orphans", action="store_true", help="delete those pods")
    g.add_argument(
        "--adopt",
        metavar="POD_ID",
        help="re-link the unknown job a running pod is named for to that pod",
    )

    p = add(
        "models", cmd_models, "the local model cache: pull a Hub model ahead of a run, list, remove"
    )
    p.add_argument("action", choices=("pull", "list", "remove"))
    p.add_argument("repo", nargs="?", metavar="ORG/NAME", help="the model (pull, remove)")
    p.add_argument("--revision", help="pull: branch, tag or commit (default: main)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("export", cmd_export, "merge a finished job's adapter into its base, or push it")
    p.add_argument("job", metavar="JOB", help="job id (or a unique prefix)")
    p.add_argument(
        "--checkpoint", type=int, metavar="N", help="export checkpoint N, not the output"
    )
    p.add_argument("--merge", action="store_true", help="merge the adapter into the base model")
    p.add_argument("--dtype", default="fp32", help="merged weights: fp32 (default), bf16, fp16")
    p.add_argument("--out", metavar="DIR", help="merged model folder (default: output/merged)")
    p.add_argument("--push", metavar="ORG/NAME", help="upload to this Hugging Face Hub repo")
    vis = p.add_mutually_exclusive_group()
    vis.add_argument(
        "--private", dest="private", action="store_true", default=True, help="(the default)"
    )
    vis.add_argument("--public", dest="private", action="store_false", help="a public repo")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add("spend", cmd_spend, "what this month's RunPod pods cost, against the monthly cap")
    p.add_argument("--month", metavar="YYYY-MM", help="another month (default: this one)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("clusters", cmd_clusters, "Slurm clusters: add, list, remove, test")
    add_clusters_parser(p)

    p = add("doctor", cmd_doctor, "describe this installation and the trainer runtime")
    p.add_argument("--json", action="store_true", help="the trainer's report as JSON")

    p = add("runtime", cmd_runtime, "the trainer runtime: setup, status, remove")
    add_runtime_parser(p)

    add_chat_parsers(add)
    return parser


def _open_window(argv: Sequence[str]) -> int:
    # The window (Qt) loads only when asked for, never with the CLI's commands.
    from desktop.views.app import main as window_main

    return int(window_main(list(argv)))


def _setup_logging(verbose: bool) -> None:
    from desktop.core.redaction import install_redaction

    install_redaction()
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _check_job_ids(ns: argparse.Namespace) -> None:
    """An empty JOB would match every id as a prefix (the oldest job): refuse it."""
    for option, value in (
        ("JOB", getattr(ns, "job", None)),
        ("--resume", getattr(ns, "resume", None)),
    ):
        if value is not None and not value.strip():
            raise ConfigError(
                f"{ns.command}: {option} is empty; give a job id (finetune-desk jobs lists them)"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Run `finetune-desk` with `argv` (default: the process's arguments); returns the exit
    code."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        ns = parser.parse_args(args)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    _setup_logging(ns.verbose)
    ns.following = None
    if ns.command is None:
        return _open_window(args)
    try:
        _check_job_ids(ns)
        ctx = Context(ns)
        code: int = ns.func(ctx)
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return code
    except BrokenPipeError:
        # `finetune-desk metrics JOB | head`: the reader has all it wants. End quietly, and
        # point stdout at /dev/null so the interpreter's last flush does not complain either.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except FtdeskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        job_id = getattr(ns, "following", None)
        if job_id:
            print(
                f"\nstopped following {job_id}; it keeps running. Cancel it with: "
                f"finetune-desk cancel {job_id}",
                file=sys.stderr,
            )
        else:
            print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
