"""Idle cost: five jobs being watched, no new data, for 30 s → the GUI's CPU use.

Builds AppState with five running jobs (each with 20,000 points of history), the job table,
the chart showing all five and the log view, shows them (offscreen) and lets the event loop
run. Nothing new arrives, so nothing should redraw: the chart's timer only runs after new
data; the table ticks the elapsed column of running jobs once a second. Target: < 3% of one
core (process CPU time / wall time, from psutil).

    .venv/bin/python bench/idle.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import psutil


def main(argv: list[str] | None = None) -> int:
    """Measure; the last line is the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication, QSplitter

    from desktop.models.job import Job, JobState
    from desktop.state import AppState
    from desktop.views.chart import LossChart
    from desktop.views.job_table import JobTableView
    from desktop.views.log_view import LogView
    from trainer.config import TrainingConfig

    app = QApplication.instance() or QApplication([])
    config = TrainingConfig.model_validate(
        {"model": {"name_or_path": "org/model"}, "dataset": {"path": "data.jsonl"}}
    )
    state = AppState()
    now = time.time()
    steps = np.arange(20_000, dtype=np.float64)
    for i in range(5):
        job_id = f"job{i}"
        state.job_added(
            Job(
                id=job_id,
                name=f"run {i}",
                config=config,
                job_dir=Path("/tmp") / job_id,
                state=JobState.TRAINING,
                started_at=now - 600,
                step=20_000,
                total_steps=50_000,
            )
        )
        state.add_metric_arrays(job_id, "loss", steps, 2 / (1 + steps / 1000), now - 600 + steps)
        state.log_added(job_id, [f"step {s}" for s in range(0, 2000)])
    splitter = QSplitter()
    table = JobTableView(state, splitter)
    chart = LossChart(state, splitter)
    log = LogView(state, splitter)
    splitter.resize(1400, 700)
    splitter.show()
    state.set_selected_job_ids([f"job{i}" for i in range(5)])
    log.set_job("job0")
    loop = QEventLoop()
    QTimer.singleShot(1000, loop.quit)  # settle: first redraw, layout
    loop.exec()
    assert len(chart.plotted("job0", "loss")[0]) == 20_000  # type: ignore[index]
    assert table.proxy.rowCount() == 5

    process = psutil.Process()
    redraws = 0

    def count() -> None:
        nonlocal redraws
        redraws += 1

    chart.redrawn.connect(count)
    cpu0 = process.cpu_times()
    wall0 = time.perf_counter()
    QTimer.singleShot(int(args.seconds * 1000), loop.quit)
    loop.exec()
    wall = time.perf_counter() - wall0
    cpu1 = process.cpu_times()
    used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    share = 100.0 * used / wall
    print(f"chart redraws while idle: {redraws}")
    print(
        f"idle CPU: {share:.2f}% of one core over {wall:.1f} s "
        f"({used * 1000:.0f} ms CPU; target < 3%)"
    )
    del app
    return 0 if share < 3.0 else 1


if __name__ == "__main__":
    sys.exit(main())
