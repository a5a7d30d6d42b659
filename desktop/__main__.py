"""The `finetune-desk` console script: the window without arguments, the CLI with a command,
and `--self-test` (desktop.self_test: can this install, a frozen bundle above all, run?).

Kept tiny on purpose: opening the window must not pay for the CLI's imports (pydantic models,
the job service), and a command must not pay for Qt.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

_HELP = ("-h", "--help")


def wants_window(args: Sequence[str]) -> bool:
    """True when `args` name no command (only options such as --offline, --demo, -v)."""
    return not any(arg in _HELP or not arg.startswith("-") for arg in args)


def main(argv: Sequence[str] | None = None) -> int:
    """Open the window or run a CLI command; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--scheduler"]:
        # Hidden: how a frozen bundle (no `python -m`) starts the local queue's scheduler.
        from desktop.providers.local.scheduler import main as scheduler_main

        return scheduler_main(args[1:])
    if args[:1] == ["--self-test"]:
        from desktop.self_test import run_self_test

        return run_self_test()
    if wants_window(args):
        from desktop.views.app import main as window_main

        return int(window_main(args))
    from desktop.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
