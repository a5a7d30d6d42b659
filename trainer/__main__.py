"""`python -m trainer <command>`: run, check-data, doctor, make-demo, export, serve.

Each command lives in its own module and is imported only when asked for, so `check-data`
and `doctor` start without loading the training stack they do not need.
"""

from __future__ import annotations

import sys

_COMMANDS = {
    "run": ("trainer.run", "Train: python -m trainer run --job-dir DIR [--resume]"),
    "check-data": ("trainer.data", "Check a dataset: python -m trainer check-data FILE [--json]"),
    "doctor": ("trainer.doctor", "Describe this runtime: python -m trainer doctor [--json]"),
    "make-demo": ("trainer.demo", "Write the demo: python -m trainer make-demo DIR [--json]"),
    "export": ("trainer.export", "Merge and/or push: python -m trainer export --job-dir DIR ..."),
    "serve": (
        "trainer.serve",
        "Chat with a job's model: python -m trainer serve --job-dir DIR | --model PATH",
    ),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the command's own `main(argv)`; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in _COMMANDS:
        out = sys.stdout if args and args[0] in ("-h", "--help") else sys.stderr
        if args and args[0] not in ("-h", "--help"):
            print(f"unknown command {args[0]!r}", file=out)
        print("usage: python -m trainer <command> [options]\n", file=out)
        for name, (_, help_text) in _COMMANDS.items():
            print(f"  {name:<11} {help_text}", file=out)
        return 0 if out is sys.stdout else 2
    import importlib

    module = importlib.import_module(_COMMANDS[args[0]][0])
    return int(module.main(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
