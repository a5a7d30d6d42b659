"""`run`'s RunPod flags: `--gpu ID[,ID...] [--gpu-count N] [--cloud secure|community]
--budget USD [--max-runtime 2h]`, turned into this run's `Settings.runpod` (the saved
defaults, replaced only where a flag is given)."""

from __future__ import annotations

import argparse
import re
from decimal import Decimal, InvalidOperation

from pydantic import ValidationError

from desktop.core.errors import ConfigError
from desktop.models import Settings

__all__ = ["add_runpod_flags", "parse_duration", "runpod_settings"]

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?")


def add_runpod_flags(parser: argparse.ArgumentParser) -> None:
    """Add the RunPod flags to `run`."""
    group = parser.add_argument_group("RunPod (with --provider runpod)")
    group.add_argument(
        "--gpu", metavar="ID[,ID...]", help="GPU type ids, tried in this order when one is full"
    )
    group.add_argument(
        "--gpu-count", metavar="N", help="GPUs in the pod (one training process per GPU)"
    )
    group.add_argument("--cloud", choices=("secure", "community"), help="RunPod's cloud")
    group.add_argument("--budget", metavar="USD", help="delete the pod once it cost this much")
    group.add_argument(
        "--max-runtime", metavar="TIME", help="delete the pod after this long (2h, 90m, 3600)"
    )


def parse_duration(text: str) -> int:
    """Seconds in `2h`, `90m`, `1h30m`, `45s` or `3600`.

    Raises:
        ConfigError: naming the value and the forms accepted.
    """
    found = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or found is None or not any(found.groups()):
        raise ConfigError(f"--max-runtime {text!r}: give a time such as 2h, 90m, 1h30m or 3600")
    days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def runpod_settings(ns: argparse.Namespace, settings: Settings) -> Settings:
    """`settings` with the RunPod flags of this run applied.

    Raises:
        ConfigError: a RunPod flag without `--provider runpod`, or a value RunPod options
            refuse (naming the flag and what to give).
    """
    given = {
        "--gpu": ns.gpu,
        "--gpu-count": ns.gpu_count,
        "--cloud": ns.cloud,
        "--budget": ns.budget,
        "--max-runtime": ns.max_runtime,
    }
    used = [flag for flag, value in given.items() if value is not None]
    if ns.provider != "runpod":
        if used:
            raise ConfigError(f"run: {', '.join(used)} only apply with --provider runpod")
        return settings
    changes: dict[str, object] = {}
    if ns.gpu is not None:
        gpus = tuple(g.strip() for g in ns.gpu.split(",") if g.strip())
        if not gpus:
            raise ConfigError("--gpu: give at least one GPU type id, e.g. --gpu 'NVIDIA A40'")
        changes["gpu_ids"] = gpus
    if ns.gpu_count is not None:
        if not ns.gpu_count.strip().isdigit() or int(ns.gpu_count) < 1:
            raise ConfigError(f"--gpu-count {ns.gpu_count!r}: give a whole number of GPUs, e.g. 2")
        changes["gpu_count"] = int(ns.gpu_count)
    if ns.cloud is not None:
        changes["cloud"] = ns.cloud
    if ns.budget is not None:
        try:
            budget = Decimal(ns.budget.strip().lstrip("$"))
        except InvalidOperation:
            raise ConfigError(f"--budget {ns.budget!r}: give dollars, e.g. --budget 5") from None
        if not budget.is_finite() or budget <= 0:
            raise ConfigError(f"--budget {ns.budget!r}: the budget must be above $0")
        changes["budget_usd"] = budget
    if ns.max_runtime is not None:
        changes["max_runtime_s"] = parse_duration(ns.max_runtime)
    try:
        options = settings.runpod.model_validate({**settings.runpod.model_dump(), **changes})
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"])
        raise ConfigError(f"RunPod option {field}: {problem['msg']}") from None
    if not options.gpu_ids:
        raise ConfigError("run --provider runpod: choose GPU types with --gpu ID[,ID...]")
    return settings.model_copy(update={"runpod": options})
