"""bench/chart.py runs end to end on a small series (its figures are only meaningful at full
size; this proves the benchmark still works and checks what it draws)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_chart_benchmark_runs_and_reports_every_run() -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(
        [
            sys.executable,
            "bench/chart.py",
            "--points",
            "5000",
            "--repeat",
            "2",
            "--baseline-every",
            "2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert sum(line.startswith("ours, run ") for line in lines) == 2
    assert sum(line.startswith("bare pyqtgraph, run ") for line in lines) == 2
    drawn = [
        int(line.split(" raw-loss points drawn")[0].rsplit(" ", 1)[1])
        for line in lines
        if " raw-loss points drawn" in line
    ]
    assert len(drawn) == 2 and all(0 < n < 20_000 for n in drawn)  # a few per pixel column
    assert lines[-1].startswith("p95 redraw: ") and "best of 2 runs" in lines[-1]
