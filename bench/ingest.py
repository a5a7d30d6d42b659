"""How fast the app ingests a trainer's events: read `events.jsonl` + store the metrics.

Writes a realistic `events.jsonl` with the trainer's own `EventWriter` (N metric events of
about six series each), then times what a job poller does with it: `EventReader.read_new` in
chunks, the events turned into `MetricPoint`s, and `JobStore.record_progress` (points + job
snapshot with the new offset, one transaction per chunk). In the same run it times a baseline
that does the least anyone could: `json.loads` per line and `executemany` into a bare SQLite
table with the same key and the same WAL settings. The ratio says what the app's validation,
offsets and snapshots cost on top.

    python bench/ingest.py [--events 200000] [--chunk-kib 128] [--repeat 2]

The last line is `events/s: X (target >= 50000); ratio vs bare sqlite+json: Y`.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from desktop.core.store import JobStore, points_from_events
from desktop.models import Job, JobState
from trainer.config import TrainingConfig
from trainer.protocol import EventReader, EventWriter

TARGET_EVENTS_PER_S = 50_000


def write_events(path: Path, n: int) -> int:
    """Write n metric events the way the trainer logs them; returns the number of points."""
    writer = EventWriter(path)
    points = 0
    total = n
    for step in range(1, n + 1):
        fields: dict[str, float | int] = {
            "epoch": step / 1000,
            "loss": 2.5 * 0.9999**step + 0.01 * (step % 7),
            "learning_rate": 2e-4 * (1 - step / total),
            "grad_norm": 0.8 + 0.1 * (step % 5),
            "tokens_seen": step * 4096,
            "samples_per_second": 11.5 + (step % 3) * 0.25,
        }
        if step % 50 == 0:
            fields["eval_loss"] = 2.4 * 0.9999**step
        writer.emit("metric", step=step, total_steps=total, **fields)
        points += len(fields)
    writer.close()
    return points


def make_job(job_dir: Path) -> Job:
    """A job record like the ones the JobService stores."""
    config = TrainingConfig.model_validate(
        {"model": {"name_or_path": "org/tiny"}, "dataset": {"path": str(job_dir / "d.jsonl")}}
    )
    return Job(
        id="bench0001", name="bench", config=config, job_dir=job_dir, state=JobState.TRAINING
    )


def run_app(events_path: Path, db_path: Path, chunk: int) -> tuple[float, float, int, int]:
    """The app's path. Returns (wall seconds, CPU seconds, events, points stored)."""
    store = JobStore(db_path)
    job = make_job(events_path.parent)
    store.add_job(job)
    reader = EventReader(events_path)
    n_events = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while True:
        events = reader.read_new(max_bytes=chunk)
        if not events:
            break
        points = points_from_events(job.id, events)
        last = events[-1]
        job = job.model_copy(
            update={
                "events_offset": reader.offset,
                "events_last_seq": reader.last_seq,
                "step": getattr(last, "step", job.step),
            }
        )
        job = store.record_progress(job, points)
        n_events += len(events)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    stored = store.metric_count(job.id)
    assert store.get_job(job.id).events_offset == events_path.stat().st_size
    store.close()
    return elapsed, cpu, n_events, stored


def run_baseline(events_path: Path, db_path: Path, chunk: int) -> tuple[float, float, int, int]:
    """The least anyone could do: json.loads per line, executemany into a bare table."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE metrics (job_id TEXT, step INTEGER, name TEXT, value REAL, time REAL,"
        " PRIMARY KEY (job_id, step, name)) WITHOUT ROWID"
    )
    skip = {"seq", "time", "kind", "step", "total_steps"}
    n_events = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    with open(events_path, "rb") as fh:
        rest = b""
        while True:
            data = fh.read(chunk)
            if not data:
                break
            data = rest + data
            end = data.rfind(b"\n") + 1
            rest = data[end:]
            rows: list[tuple[str, int, str, float, float]] = []
            for line in data[:end].splitlines():
                record = json.loads(line)
                n_events += 1
                step, t = record["step"], record["time"]
                rows.extend(
                    ("bench0001", step, k, float(v), t) for k, v in record.items() if k not in skip
                )
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    stored = conn.execute("SELECT count(*) FROM metrics").fetchone()[0]
    conn.close()
    return elapsed, cpu, n_events, stored


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints one line per run and the summary line last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="metric events to write")
    parser.add_argument(
        "--chunk-kib", type=int, default=128, help="bytes read per poll (~500 events, ~3k points)"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the best counts")
    args = parser.parse_args(argv)
    chunk = args.chunk_kib * 1024

    with tempfile.TemporaryDirectory(prefix="ftdesk-bench-") as tmp:
        root = Path(tmp)
        events_path = root / "events.jsonl"
        t0 = time.perf_counter()
        points = write_events(events_path, args.events)
        size_mb = events_path.stat().st_size / 1e6
        print(
            f"wrote {args.events} metric events ({points} points, {size_mb:.1f} MB) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        best: dict[str, list[float]] = {"baseline": [0.0, 0.0], "app": [0.0, 0.0]}
        for i in range(args.repeat):
            # Alternate, so that both see the same machine load (it is shared).
            for label, fn in (("baseline", run_baseline), ("app", run_app)):
                secs, cpu, n, stored = fn(events_path, root / f"{label}{i}.sqlite3", chunk)
                assert (n, stored) == (args.events, points), (label, n, stored)
                best[label][0] = max(best[label][0], n / secs)
                best[label][1] = max(best[label][1], n / cpu)
                print(
                    f"{label:<9} run {i + 1}: {n / secs:>9,.0f} events/s wall "
                    f"({secs:.2f} s), {n / cpu:>9,.0f} events/s of CPU time"
                )
    app, base = best["app"], best["baseline"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at the end (wall-clock "
        "rates fall when other work shares the CPUs; the CPU-time rates much less)"
    )
    print(
        f"best of {args.repeat}: app {app[0]:,.0f}/s wall, {app[1]:,.0f}/s CPU; "
        f"baseline {base[0]:,.0f}/s wall, {base[1]:,.0f}/s CPU"
    )
    print(
        f"events/s: {app[0]:.0f} (target >= {TARGET_EVENTS_PER_S}); "
        f"ratio vs bare sqlite+json: {app[0] / base[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
