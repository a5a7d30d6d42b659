"""`finetune-desk runtime setup|status|remove`: the trainer runtime, from the command line.

- `setup --python PATH`: use a Python the person has (validated with `trainer doctor`).
- `setup [--wheelhouse DIR] [--base-python VERSION]`: make a venv in the data folder with uv
  (see `desktop.core.runtime_setup`); the disk space needed is printed first, Ctrl-C cancels
  (what was installed is kept) and running it again resumes.
- `status`: which Python, doctor's verdict, torch and the device; exit 1 when it cannot train.
- `remove [--yes]`: delete the venv the app set up (never a person's own Python).

The chosen runtime is stored in the settings (`trainer_python`), where the window finds it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from desktop.cli.output import print_json
from desktop.core.errors import ConfigError, RuntimeNotReadyError
from desktop.models import data_home, save_settings

if TYPE_CHECKING:
    import argparse

    from desktop.cli.commands import Context

__all__ = ["add_runtime_parser", "cmd_runtime"]


def add_runtime_parser(p: argparse.ArgumentParser) -> None:
    """The `runtime` command's arguments."""
    p.add_argument("action", choices=("setup", "status", "remove"))
    p.add_argument("--python", metavar="PATH", help="setup: use this Python (or venv folder)")
    p.add_argument(
        "--wheelhouse",
        metavar="DIR",
        help="setup: install from this folder of wheels with the package index switched off",
    )
    p.add_argument(
        "--base-python",
        metavar="VERSION",
        help="setup: the Python the venv is made with (a version or a path; default: found)",
    )
    p.add_argument("--yes", "-y", action="store_true", help="remove: do not ask")
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_runtime(ctx: Context) -> int:
    """`runtime setup|status|remove`; returns the exit code."""
    action = ctx.ns.action
    if action == "status":
        return _status(ctx)
    if action == "remove":
        return _remove(ctx)
    if ctx.ns.python:
        return _use_existing(ctx)
    return _setup(ctx)


def _say(ctx: Context, line: str) -> None:
    # With --json stdout holds the JSON alone: the running commentary goes to stderr.
    print(line, file=sys.stderr if ctx.ns.json else sys.stdout, flush=True)


def _store(ctx: Context, python: str) -> None:
    save_settings(ctx.settings.model_copy(update={"trainer_python": python}))


def _use_existing(ctx: Context) -> int:
    from desktop.core.runtime_setup import use_existing

    if ctx.ns.wheelhouse:
        raise ConfigError("runtime setup: --python and --wheelhouse do not go together")
    python, report = use_existing(ctx.ns.python, offline=ctx.offline)
    _store(ctx, python)
    if ctx.ns.json:
        print_json({"python": python, "kind": "own", "doctor": report.to_json_dict()})
    else:
        print(f"trainer runtime: {python} (doctor: OK, torch {report.torch})")
    return 0


def _setup(ctx: Context) -> int:
    from desktop.core.runtime_setup import SetupRun, plan_setup

    wheelhouse = Path(ctx.ns.wheelhouse).expanduser().absolute() if ctx.ns.wheelhouse else None
    if wheelhouse is None and ctx.offline:
        raise RuntimeNotReadyError(
            "offline mode: setting the runtime up needs the package index; give a wheelhouse "
            "(finetune-desk runtime setup --wheelhouse DIR, see docs/runtime.md) or turn "
            "offline mode off"
        )
    plan = plan_setup(data_home(), wheelhouse=wheelhouse, base_python=ctx.ns.base_python)
    run = SetupRun(
        plan,
        on_line=lambda line: _say(ctx, line),
        on_progress=lambda done, total, title: _say(ctx, f"[{done}/{total}] {title}"),
        offline=ctx.offline,
    )
    try:
        report = run.run()
    except KeyboardInterrupt:
        # The uv child sits in its own session: Ctrl-C reached only this process. Stop it.
        raise run.cancel_now() from None
    _store(ctx, str(plan.python))
    if ctx.ns.json:
        print_json(
            {
                "python": str(plan.python),
                "kind": "managed",
                "torch_build": plan.torch.name,
                "doctor": report.to_json_dict(),
            }
        )
    return 0


def _status(ctx: Context) -> int:
    from desktop.core.runtime_setup import runtime_status

    status = runtime_status(data_home(), ctx.runtime)
    if ctx.ns.json:
        print_json(status.to_json_dict())
        return 0 if status.ok else 1
    kinds = {
        "managed": "set up by this app",
        "own": "your own Python",
        "app": "the app's own Python",
        "none": "not set up",
    }
    print(f"trainer runtime: {status.python or '-'} ({kinds[status.kind]})")
    if status.setup_state.get("state"):
        done = ", ".join(status.setup_state.get("steps_done", [])) or "no step"
        print(f"last setup:      {status.setup_state['state']} (done: {done})")
    if status.report is not None:
        print(f"python:          {status.report.python}")
        print(f"torch:           {status.report.torch or 'missing'}")
        from desktop.core.runtime_setup import device_of

        print(f"device:          {device_of(status.report) or '-'}")
    print(f"doctor:          {'OK' if status.ok else 'NOT READY'}")
    if status.problem:
        raise RuntimeNotReadyError(status.problem)
    return 0


def _remove(ctx: Context) -> int:
    from desktop.core.runtime_setup import folder_bytes, is_managed, managed_venv, remove_managed

    home = data_home()
    current = ctx.settings.trainer_python
    venv = managed_venv(home)
    if not ctx.ns.yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"runtime remove: deleting {venv} needs a yes; add --yes to confirm")
        size = folder_bytes(venv) / 1024**3
        answer = input(f"delete the trainer runtime {venv} ({size:.1f} GB)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    removed = remove_managed(home, current)
    if current and is_managed(home, current):
        save_settings(ctx.settings.model_copy(update={"trainer_python": None}))
    if ctx.ns.json:
        print_json({"removed": str(removed)})
    else:
        print(f"removed {removed}; set a runtime up again with: finetune-desk runtime setup")
    return 0
