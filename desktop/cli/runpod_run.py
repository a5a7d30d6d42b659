"""What `finetune-desk run --provider runpod` says before it creates anything.

`runpod_preflight` applies the run's RunPod flags (`runpod_flags.runpod_settings`) and prints,
before the job is created: the GPU candidates in the order they are tried, the cloud, the
budget and the maximum runtime this run uses, each marked `(default)` when no flag gave it
(the saved settings' value, or the built-in one).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from desktop.cli.runpod_flags import runpod_settings
from desktop.models import Settings

__all__ = ["format_duration", "launch_plan", "runpod_preflight"]


def format_duration(seconds: int) -> str:
    """`4h`, `1h30m`, `90s`, `2d` for a number of seconds (the `--max-runtime` forms)."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return "".join(parts) or "0s"


def launch_plan(ns: argparse.Namespace, settings: Settings) -> list[str]:
    """The lines `run --provider runpod` prints before it creates anything (see the module
    docstring); `settings` already carries this run's flags."""
    options = settings.runpod

    def said(flag_value: object) -> str:
        return "" if flag_value is not None else " (default)"

    candidates = ", ".join(options.gpu_ids)
    return [
        f"RunPod: GPU candidates, tried in this order: {candidates} "
        f"({options.cloud} cloud{said(ns.cloud)})",
        f"RunPod: budget ${options.budget_usd:.2f}{said(ns.budget)}; maximum runtime "
        f"{format_duration(options.max_runtime_s)}{said(ns.max_runtime)}; the pod is deleted "
        "at whichever comes first",
    ]


def runpod_preflight(
    ns: argparse.Namespace, settings: Settings, out: TextIO | None = None
) -> Settings:
    """This run's settings with its RunPod flags; for `--provider runpod`, the launch plan
    printed to `out` (stdout, or stderr under `--json`) before anything is created.

    Raises:
        ConfigError: a bad RunPod flag (see `runpod_settings`).
    """
    settings = runpod_settings(ns, settings)
    if ns.provider != "runpod" or getattr(ns, "resume", None):
        return settings
    stream = out or (sys.stderr if getattr(ns, "json", False) else sys.stdout)
    for line in launch_plan(ns, settings):
        print(line, file=stream, flush=True)
    return settings
