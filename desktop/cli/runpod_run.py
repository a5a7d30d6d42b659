"""What `finetune-desk run --provider runpod` says before it creates anything.

`runpod_preflight` applies the run's RunPod flags (`runpod_flags.runpod_settings`) and prints,
before the job is created: the GPU candidates in the order they are tried, the cloud, the
budget and the maximum runtime this run uses, each marked `(default)` when no flag gave it
(the saved settings' value, or the built-in one). Then, when the orphan sweep
(`desktop.providers.runpod.sweep`) finds pods named `ftdesk-` that no job of this store owns,
one line with their count and their $/h in all, pointing at `finetune-desk pods`. A sweep that
cannot run (no key, RunPod unreachable) says nothing here: the launch itself reports that.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from decimal import Decimal
from typing import TextIO

from desktop.cli.runpod_flags import runpod_settings
from desktop.core.errors import FtdeskError
from desktop.models import Settings

__all__ = ["format_duration", "launch_plan", "orphans_line", "runpod_preflight"]

log = logging.getLogger(__name__)


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


def orphans_line(settings: Settings) -> str | None:
    """One line about the pods no job owns (see the module docstring), or None when there
    are none or the sweep cannot run."""
    import httpx

    from desktop.cli.pods import _api_key, _jobs
    from desktop.providers.runpod.api import RunpodApi
    from desktop.providers.runpod.sweep import find_orphans

    async def sweep() -> list[Decimal]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0)) as http:
            api = RunpodApi(http, _api_key(), base_url=settings.runpod.api_url)
            return [o.cost_per_hour for o in await find_orphans(api, _jobs())]

    try:
        costs = asyncio.run(sweep())
    except FtdeskError as exc:
        log.debug("no orphan sweep before the launch: %s", exc)
        return None
    if not costs:
        return None
    return (
        f"RunPod: {len(costs)} pod(s) named ftdesk- that no job owns cost "
        f"${sum(costs, Decimal(0)):.2f}/h in all; see them with: finetune-desk pods"
    )


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
    offline = bool(getattr(ns, "offline", False)) or settings.offline
    found = None if offline else orphans_line(settings)
    if found is not None:
        print(found, file=stream, flush=True)
    return settings
