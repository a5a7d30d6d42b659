"""`run`'s Slurm flags: `--cluster NAME [--partition P] [--nodes N] [--tasks-per-node T]
[--gpus-per-node G] [--time 4:00:00]`, turned into this run's `Settings.slurm` (the cluster's
saved defaults, replaced only where a flag is given)."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from desktop.core.errors import ConfigError
from desktop.models import Settings
from desktop.models.slurm_options import parse_time_limit

__all__ = ["add_slurm_flags", "slurm_settings"]

# flag -> (namespace attribute, SlurmOptions field)
_FLAGS = {
    "--cluster": ("cluster", "cluster"),
    "--partition": ("partition", "partition"),
    "--nodes": ("nodes", "nodes"),
    "--tasks-per-node": ("tasks_per_node", "tasks_per_node"),
    "--gpus-per-node": ("gpus_per_node", "gpus_per_node"),
    "--time": ("time", "time_limit"),
}
_COUNTS = {"--nodes": 1, "--tasks-per-node": 1, "--gpus-per-node": 0}  # the smallest allowed


def add_slurm_flags(parser: argparse.ArgumentParser) -> None:
    """Add the Slurm flags to `run`."""
    group = parser.add_argument_group("Slurm (with --provider slurm)")
    group.add_argument("--cluster", metavar="NAME", help="a cluster from `finetune-desk clusters`")
    group.add_argument("--partition", metavar="P", help="the partition (default: the cluster's)")
    group.add_argument("--nodes", metavar="N", help="nodes (default 1)")
    group.add_argument("--tasks-per-node", metavar="T", help="training processes per node")
    group.add_argument(
        "--gpus-per-node", metavar="G", help="GPUs per node (default: the cluster's)"
    )
    group.add_argument("--time", metavar="TIME", help="time limit, e.g. 4:00:00, 90, 1-12:00")


def slurm_settings(ns: argparse.Namespace, settings: Settings) -> Settings:
    """`settings` with the Slurm flags of this run applied.

    Raises:
        ConfigError: a Slurm flag without `--provider slurm`, an unknown cluster, or a value
            Slurm options refuse (naming the flag and what to give).
    """
    given = {flag: getattr(ns, attr, None) for flag, (attr, _) in _FLAGS.items()}
    used = [flag for flag, value in given.items() if value is not None]
    if ns.provider != "slurm":
        if used:
            raise ConfigError(f"run: {', '.join(used)} only apply with --provider slurm")
        return settings
    changes: dict[str, object] = {}
    for flag, value in given.items():
        if value is None:
            continue
        field = _FLAGS[flag][1]
        if flag in _COUNTS:
            text = str(value).strip()
            if not text.isdigit() or int(text) < _COUNTS[flag]:
                raise ConfigError(
                    f"{flag} {value!r}: give a whole number of at least {_COUNTS[flag]}"
                )
            changes[field] = int(text)
        elif flag == "--time":
            try:
                parse_time_limit(value)
            except ValueError as exc:
                raise ConfigError(f"--time: {exc}") from None
            changes[field] = value.strip()
        elif not str(value).strip():
            raise ConfigError(f"{flag} is empty: give a name")
        else:
            changes[field] = str(value).strip()
    try:
        options = settings.slurm.model_validate({**settings.slurm.model_dump(), **changes})
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = str(problem["loc"][0]) if problem["loc"] else "slurm"
        flag = next((f for f, (_, name) in _FLAGS.items() if name == field), field)
        raise ConfigError(f"run {flag}: {problem['msg']}") from None
    try:
        name, _ = options.profile(options.cluster)
    except KeyError as exc:
        raise ConfigError(f"run --cluster: {exc.args[0]}") from None
    return settings.model_copy(update={"slurm": options.model_copy(update={"cluster": name})})
