"""Idle cost: five jobs being watched, no new data, for 30 s → the GUI's CPU use.

Mode `window` (default): the whole app window (`desktop.views.app.build_window`, the real
`JobService` polling every `poll_interval_s` through the local provider) over five local jobs in
state `training`, each with a live but idle trainer process (a child that sleeps, registered as
the job's handle by pid and start time), a job folder with 2,000 metric events and a log. The
jobs are all selected (the chart overlays them, the log view follows one). After the first polls
have ingested the history, the GUI process's CPU time (all its threads: the event loop, the
pollers' worker threads) is measured over 30 s.

Mode `widgets`: builds AppState with five running jobs (each with 20,000 points of history),
the job table, the chart showing all five and the log view, shows them (offscreen) and lets the
event loop run. Nothing new arrives, so nothing should redraw: the chart's timer only runs after new
data; the table ticks the elapsed column of running jobs once a second. Target: < 3% of one
core (process CPU time / wall time, from psutil).

    .venv/bin/python bench/idle.py [--seconds 30] [--mode window|widgets]
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


def _write_job_dir(job_dir: Path, steps: int) -> None:
    """A job folder as a trainer leaves it mid-run: events (status, metrics) and a log."""
    from trainer.protocol import EventWriter

    job_dir.mkdir(parents=True)
    writer = EventWriter(job_dir / "events.jsonl")
    writer.emit("status", state="training", message="training")
    for step in range(1, steps + 1):
        writer.emit(
            "metric",
            step=step,
            total_steps=50_000,
            loss=2.0 / (1 + step / 300),
            learning_rate=2e-4,
            tokens_seen=step * 4096,
        )
    writer.close()
    with open(job_dir / "train.log", "w", encoding="utf-8") as fh:
        fh.writelines(f"step {s} loss {2.0 / (1 + s / 300):.4f}\n" for s in range(1, steps + 1))


def window_mode(seconds: float) -> int:
    """The whole window over five watched jobs whose trainers are alive and idle."""
    import asyncio
    import subprocess
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="ftdesk-idle-"))
    os.environ["FTDESK_HOME"] = str(home)
    import qasync
    from PySide6.QtWidgets import QApplication

    from desktop.core.store import JobStore
    from desktop.models import Job, JobState, ProviderHandle, Settings
    from desktop.views.app import build_window
    from trainer.config import TrainingConfig

    app = QApplication.instance() or QApplication([])
    assert isinstance(app, QApplication)
    app.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    config = TrainingConfig.model_validate(
        {"model": {"name_or_path": "org/model"}, "dataset": {"path": "data.jsonl"}}
    )
    sleepers = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]) for _ in range(5)
    ]
    settings = Settings()
    try:
        store = JobStore()
        now = time.time()
        for i, proc in enumerate(sleepers):
            job_id = f"idle{i}"
            _write_job_dir(home / "jobs" / job_id, 2_000)
            handle = ProviderHandle(
                provider="local",
                pid=proc.pid,
                pid_start_time=psutil.Process(proc.pid).create_time(),
            )
            store.add_job(
                Job(
                    id=job_id,
                    name=f"run {i}",
                    config=config,
                    job_dir=home / "jobs" / job_id,
                    state=JobState.TRAINING,
                    started_at=now - 600,
                    handle=handle,
                )
            )
        store.close()

        window = build_window(settings=settings, check_runtime=False)
        errors: list[str] = []
        window.bus.error_posted.connect(errors.append)
        window.resize(1500, 900)
        window.show()

        ids = [f"idle{i}" for i in range(5)]
        redraws = 0

        def count() -> None:
            nonlocal redraws
            redraws += 1

        async def body() -> tuple[float, float, float]:
            # One loop run throughout: the watchers' thread hops need a running loop.
            await window.start()
            for _ in range(300):
                if all(
                    (j := window.state.job(i)) is not None and j.step == 2_000 for i in ids
                ) and all(window.state.log_tail(i) for i in ids):
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the five jobs' history was not ingested in 30 s")
            window.jobs_view.select_job_ids(ids)
            await asyncio.sleep(3.0)  # settle: redraws after the selection, first idle polls
            window.chart.redrawn.connect(count)
            process = psutil.Process()
            cpu0, wall0 = process.cpu_times(), time.perf_counter()
            await asyncio.sleep(seconds)
            wall = time.perf_counter() - wall0
            cpu1 = process.cpu_times()
            used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            if not all(window.service.is_watching(i) for i in ids):
                jobs = [window.state.job(i) for i in ids]
                raise RuntimeError(
                    "a job is not being watched: "
                    + "; ".join(f"{j.id} {j.state.value} {j.state_reason}" for j in jobs if j)
                    + f" (errors: {errors})"
                )
            window.close()
            await window.ops.close()
            await window.service.close()
            return 100.0 * used / wall, used, wall

        share, used, wall = loop.run_until_complete(body())
        loop.close()
        states = {j.state.value for i in ids if (j := window.state.job(i)) is not None}
        every = settings.poll_interval_s
        print(f"jobs watched: 5 ({', '.join(sorted(states))}), each polled every {every} s")
        print(f"chart redraws while idle: {redraws}")
        print(
            f"idle CPU: {share:.2f}% of one core over {wall:.1f} s "
            f"({used * 1000:.0f} ms CPU; target < 3%)"
        )
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
    return 0 if share < 3.0 else 1


def main(argv: list[str] | None = None) -> int:
    """Measure; the last line is the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--mode", choices=("window", "widgets"), default="window")
    args = parser.parse_args(argv)
    if args.mode == "window":
        return window_mode(args.seconds)

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication, QSplitter

    from desktop.models.job import Job, JobState
    from desktop.views.chart.widget import LossChart
    from desktop.views.job_table import JobTableView
    from desktop.views.log_view import LogView
    from desktop.views.state import AppState
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
