"""History at scale: the window over 1,000 finished jobs against the same window on an empty store.

One run fills a job store with `--jobs` finished jobs (default 1,000) of `--steps` steps
(default 2,000), each with three series (loss, learning_rate, grad_norm): 6M metric rows, about
300 MB. The jobs go in through `JobStore.add_job` (so the schema and the snapshots are the real
ones); the points go in with one `executemany` in one transaction on the same file, in key order
(millions of `MetricPoint` objects would only time pydantic). The filled store lives in a temp
folder for this run only.

Each window runs as a fresh process of the real entry point (`desktop.views.app.main([])` with
`FTDESK_STARTUP_PROBE=1`, as bench/gui_startup.py does), runs interleaved, figures are medians:

- ready: `Popen` to the "ready" line (the editor, the job table, the chart and the log view are
  built, the jobs are loaded and Start is enabled), the definition bench/gui_startup.py uses.
- peak memory: the child's own RSS high-water mark (`getrusage(RUSAGE_SELF).ru_maxrss`),
  printed by the child as it exits.
- select-to-drawn (filled store only): once ready, the child selects the newest job's row in the
  job table (the person's click) and times until the chart has drawn that job's loss curve
  (the chart's `redrawn` signal with points handed to pyqtgraph); the GUI thread's CPU time
  over the same span is printed too, since wall time on a busy machine is mostly waiting.

Both data folders hold the same demo (written once by `trainer make-demo`), so Start is enabled
in both. Run: `python bench/history_scale.py [--runs N] [--jobs N] [--steps N]`; the last line
is the summary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERIES = ("loss", "learning_rate", "grad_norm")

CHILD = """
import atexit, resource, sys, time
atexit.register(
    lambda: print(f"maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", flush=True)
)
import desktop.views.app as app

SELECT = sys.argv[1] == "select"


def probe(window):
    def started():
        if not window.start_button.isEnabled():
            print("ready-but-start-disabled", flush=True)
            window.close()
            return
        print("ready", flush=True)
        if not SELECT:
            window.close()
            return
        from PySide6.QtCore import QItemSelectionModel, QTimer

        job = window.state.job_at(window.state.job_count() - 1)
        view = window.jobs_view.table
        proxy = view.model()
        index = proxy.mapFromSource(proxy.sourceModel().index(window.state.row_of(job.id), 0))
        t0, c0 = time.perf_counter(), time.thread_time()
        deadline = t0 + 60

        def drawn():
            points = window.chart.drawn(job.id, "loss")
            if points is not None and len(points[0]) > 0:
                wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
                print(f"drawn {wall * 1000:.1f} {cpu * 1000:.1f}", flush=True)
                window.chart.redrawn.disconnect(drawn)
                window.close()
            elif time.perf_counter() > deadline:
                print("never-drawn", flush=True)
                window.close()

        def timeout():
            if window.isVisible():
                print("never-drawn", flush=True)
                window.close()

        window.chart.redrawn.connect(drawn)
        QTimer.singleShot(60_000, timeout)
        view.selectionModel().select(
            index,
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows,
        )

    window.started.connect(started)


app._install_startup_probe = probe
sys.exit(app.main([]))
"""


def fill_store(home: Path, jobs: int, steps: int) -> tuple[int, float]:
    """Write `jobs` completed jobs of `steps` steps x 3 series; returns (bytes, seconds)."""
    sys.path.insert(0, str(ROOT))
    from desktop.core.config_io import load_preset
    from desktop.core.store import DB_FILENAME, JobStore
    from desktop.models import Job, JobState

    start = time.perf_counter()
    config = load_preset("demo-cpu", home / "demo")
    path = home / DB_FILENAME
    now = time.time() - jobs * 3600
    store = JobStore(path)
    ids = []
    try:
        for i in range(jobs):
            job_id = f"20260101-{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-{i:04x}"
            created = now + i * 3600
            store.add_job(
                Job(
                    id=job_id,
                    name=f"run {i}",
                    state=JobState.COMPLETED,
                    state_reason="finished",
                    config=config,
                    job_dir=home / "jobs" / job_id,
                    created_at=created,
                    started_at=created + 5,
                    finished_at=created + 5 + steps,
                    step=steps,
                    total_steps=steps,
                    last_loss=0.5,
                    exit_code=0,
                ),
                "imported for the benchmark",
            )
            ids.append((job_id, created + 5))
    finally:
        store.close()

    def rows():  # key order: job_id, step, name
        for job_id, t0 in ids:
            for step in range(1, steps + 1):
                t = t0 + step
                yield job_id, step, "grad_norm", 1.0 + (step % 7) / 10, t
                yield job_id, step, "learning_rate", 1e-4 * (1 - step / steps), t
                yield job_id, step, "loss", 2.0 / (1 + step / 100) + (step % 13) / 100, t

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO metrics (job_id, step, name, value, time) VALUES (?, ?, ?, ?, ?)", rows()
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    size = sum(p.stat().st_size for p in home.glob(DB_FILENAME + "*"))
    return size, time.perf_counter() - start


def measure(home: Path, mode: str) -> dict[str, float]:
    """One window process; seconds to "ready", MB of peak RSS, ms select-to-drawn."""
    env = {**os.environ, "FTDESK_HOME": str(home), "FTDESK_STARTUP_PROBE": "1"}
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    assert proc.stdout is not None
    out: dict[str, float] = {}
    lines: list[str] = []
    for line in proc.stdout:
        line = line.strip()
        lines.append(line)
        word, _, rest = line.partition(" ")
        if word == "ready":
            out["ready"] = time.perf_counter() - start
        elif word == "drawn":
            wall, cpu = rest.split()
            out["drawn_ms"], out["drawn_cpu_ms"] = float(wall), float(cpu)
        elif word == "maxrss":
            out["peak_mb"] = int(rest) / 1024  # KiB on Linux
    _, err = proc.communicate(timeout=300)
    wanted = {"ready", "peak_mb"} | ({"drawn_ms"} if mode == "select" else set())
    if proc.returncode != 0 or not wanted <= out.keys():
        raise RuntimeError(f"the window failed (exit {proc.returncode}): {lines} {err[-3000:]}")
    return out


def main() -> int:
    """Fill a store, time both windows, print the figures; the last line is the summary."""
    parser = argparse.ArgumentParser(description="the window over 1,000 finished jobs")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ftdesk-history-"))
    try:
        empty, full = base / "empty", base / "full"
        empty.mkdir()
        subprocess.run(
            [sys.executable, "-m", "trainer", "make-demo", str(empty / "demo")],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            cwd=str(ROOT),
        )
        shutil.copytree(empty / "demo", full / "demo")
        size, took = fill_store(full, args.jobs, args.steps)
        points = args.jobs * args.steps * len(SERIES)
        print(
            f"store: {args.jobs} jobs, {points:,} points, {size / 1e6:.0f} MB, "
            f"filled in {took:.1f} s"
        )
        measure(empty, "ready")  # warm the disk cache, create the empty store
        measure(full, "ready")
        ready_empty: list[float] = []
        ready_full: list[float] = []
        peak_empty: list[float] = []
        peak_full: list[float] = []
        drawn: list[float] = []
        drawn_cpu: list[float] = []
        for _ in range(args.runs):
            e = measure(empty, "ready")
            f = measure(full, "select")
            ready_empty.append(e["ready"])
            peak_empty.append(e["peak_mb"])
            ready_full.append(f["ready"])
            peak_full.append(f["peak_mb"])
            drawn.append(f["drawn_ms"])
            drawn_cpu.append(f["drawn_cpu_ms"])
        re_, rf = statistics.median(ready_empty), statistics.median(ready_full)
        pe, pf = statistics.median(peak_empty), max(peak_full)
        z = statistics.median(drawn)
        print(f"CPUs: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, {args.runs} runs")
        print(f"empty store: ready median {re_ * 1000:.0f} ms, peak RSS median {pe:.0f} MB")
        print(
            f"{args.jobs} finished jobs: ready median {rf * 1000:.0f} ms, peak RSS max "
            f"{pf:.0f} MB, select-to-drawn {', '.join(f'{d:.0f}' for d in drawn)} ms wall, "
            f"{', '.join(f'{d:.0f}' for d in drawn_cpu)} ms of the GUI thread's CPU"
        )
        print(
            f"ready ratio vs empty store: {rf / re_:.2f}; peak memory: {pf:.0f} MB; "
            f"select-to-drawn: {z:.0f} ms"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
