"""Frozen app start-up: process start → main window painted, the PyInstaller bundle against the
source app, in the same run.

Both run the `finetune-desk` entry (`desktop.__main__`) with `FTDESK_STARTUP_PROBE=1`, which
prints "shown" from the main window's first `paintEvent` (bench/gui_startup.py's probe), on one
empty data folder, offscreen unless QT_QPA_PLATFORM says otherwise. Runs are fresh processes,
interleaved, after one warm-up each; figures are medians. Times are from `Popen` to the line
arriving on the pipe.

Build the bundle first (`make dist`, or pass `--bundle`). Run:
`python bench/frozen_startup.py [--runs N] [--bundle dist/finetune-desk/finetune-desk]`;
the last line is `ratio vs source: X` (frozen / source; target <= 1.2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(argv: list[str], home: str, *, source: bool) -> float:
    """Seconds from process start to the "shown" line of the window's first paint."""
    env = {**os.environ, "FTDESK_HOME": home, "FTDESK_STARTUP_PROBE": "1"}
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    env.pop("PYTHONPATH", None)
    if source:
        env["PYTHONPATH"] = str(ROOT)
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=home,
    )
    assert proc.stdout is not None
    seen: dict[str, float] = {}
    for line in proc.stdout:
        seen.setdefault(line.strip(), time.perf_counter() - start)
    _, err = proc.communicate(timeout=120)
    if "shown" not in seen or proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed (exit {proc.returncode}): {seen} {err[-2000:]}")
    return seen["shown"]


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description="frozen app start-up against the source app")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--bundle",
        type=Path,
        default=ROOT / "dist" / "finetune-desk" / "finetune-desk",
        help="the bundle's executable (make dist)",
    )
    args = parser.parse_args()
    if not args.bundle.is_file():
        print(f"no bundle at {args.bundle}: build it with `make dist` or pass --bundle")
        return 2
    home = tempfile.mkdtemp(prefix="ftdesk-frozen-bench-")
    frozen_argv = [str(args.bundle.resolve())]
    source_argv = [sys.executable, "-m", "desktop"]
    measure(frozen_argv, home, source=False)  # warm the disk cache and make the store once
    measure(source_argv, home, source=True)
    frozen: list[float] = []
    source: list[float] = []
    for _ in range(args.runs):
        frozen.append(measure(frozen_argv, home, source=False))
        source.append(measure(source_argv, home, source=True))
    f, s = statistics.median(frozen), statistics.median(source)
    print(f"CPUs: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    print(f"frozen bundle, first paint: median {f * 1000:.0f} ms ({args.runs} runs)")
    print(f"source app, first paint: median {s * 1000:.0f} ms ({args.runs} runs)")
    print(f"ratio vs source: {f / s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
