"""Live chart benchmark: a million points arriving in batches of 1,000.

Each batch goes into AppState (loss every step; learning rate, tokens seen and eval loss
every 100 steps, as a trainer logs them); then the chart's redraw runs and the plot is painted
into an image, which is what a frame costs. Reported: p95 (and median) redraw-plus-paint time
per batch, the target being < 16 ms (one frame at 60 Hz), and the process's peak RSS.

Baseline, in the same run: a bare pyqtgraph PlotWidget fed the same growing data with
`setData` on every batch (no downsampling, no clip-to-view, no incremental smoothing), as a
naive live plot would do; the ratio is bare p95 / ours. The baseline stops after a time cap
(its frames get slow); its p95 is over the frames it drew, all at the largest sizes reached.

    .venv/bin/python bench/chart.py [--points 1000000] [--batch 1000] [--baseline-seconds 60]

Runs offscreen (QT_QPA_PLATFORM=offscreen unless set).
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


def _synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    steps = np.arange(n, dtype=np.float64)
    loss = 0.6 + 2.0 * np.exp(-steps / (n / 6)) + rng.normal(0.0, 0.08, n)
    times = 1_700_000_000.0 + steps * 0.35
    return steps, loss, times


def _percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples) * 1000.0
    return float(np.percentile(arr, 95)), float(np.median(arr))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the figures, the last line being the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--baseline-seconds", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=500)
    args = parser.parse_args(argv)

    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtWidgets import QApplication

    from desktop.models.job import Job
    from desktop.state import AppState
    from desktop.views.chart import LossChart
    from trainer.config import TrainingConfig

    app = QApplication.instance() or QApplication([])
    process = psutil.Process()
    rss_start = process.memory_info().rss
    peak_rss = rss_start

    steps, loss, times = _synthetic(args.points)
    config = TrainingConfig.model_validate(
        {"model": {"name_or_path": "org/model"}, "dataset": {"path": "data.jsonl"}}
    )
    state = AppState()
    state.job_added(Job(id="bench", name="bench", config=config, job_dir=Path("/tmp/bench")))
    chart = LossChart(state)
    chart.resize(args.width, args.height)
    chart.show()
    app.processEvents()
    state.set_selected_job_ids(["bench"])
    image = QImage(chart.plot.size(), QImage.Format.Format_ARGB32_Premultiplied)

    def paint(widget: object) -> None:
        painter = QPainter(image)
        widget.render(painter)  # type: ignore[attr-defined]
        painter.end()

    ours: list[float] = []
    batches = range(0, args.points, args.batch)
    wall = time.perf_counter()
    for start in batches:
        end = min(start + args.batch, args.points)
        sl = slice(start, end)
        state.add_metric_arrays("bench", "loss", steps[sl], loss[sl], times[sl])
        every = slice(start, end, 100)
        state.add_metric_arrays(
            "bench",
            "learning_rate",
            steps[every],
            2e-4 * (1 - steps[every] / args.points),
            times[every],
        )
        state.add_metric_arrays(
            "bench", "tokens_seen", steps[every], steps[every] * 4096.0, times[every]
        )
        state.add_metric_arrays(
            "bench", "eval_loss", steps[every], loss[every] + 0.05, times[every]
        )
        t0 = time.perf_counter()
        chart.redraw()
        paint(chart.plot)
        ours.append(time.perf_counter() - t0)
        if len(ours) % 50 == 0:
            peak_rss = max(peak_rss, process.memory_info().rss)
    ours_total = time.perf_counter() - wall
    peak_rss = max(peak_rss, process.memory_info().rss)
    plotted = chart.plotted("bench", "loss")
    assert plotted is not None and len(plotted[0]) == args.points, "chart did not get every point"
    p95, median = _percentiles(ours)
    print(
        f"ours: {len(ours)} redraws of up to {args.points:,} points (+ smoothed and raw "
        f"curves, eval loss, lr): p95 {p95:.2f} ms, median {median:.2f} ms, "
        f"last-100 mean {np.mean(ours[-100:]) * 1000:.2f} ms, total {ours_total:.1f} s"
    )

    # Baseline: a bare PlotWidget, setData of the whole growing arrays every batch.
    import pyqtgraph as pg

    bare = pg.PlotWidget()
    bare.resize(args.width, args.height)
    bare.show()
    app.processEvents()
    curve = bare.plot(pen=pg.mkPen("#1f77b4", width=2))
    base: list[tuple[int, float]] = []
    deadline = time.perf_counter() + args.baseline_seconds
    for start in batches:
        end = min(start + args.batch, args.points)
        t0 = time.perf_counter()
        curve.setData(steps[:end].copy(), loss[:end].copy())  # a naive app keeps lists/copies
        paint(bare)
        base.append((end, time.perf_counter() - t0))
        if time.perf_counter() > deadline:
            break
    reached = base[-1][0]
    # Compare like with like: both at the sizes the baseline reached.
    ours_same = [
        dt for (n, dt) in zip(range(args.batch, reached + 1, args.batch), ours, strict=False)
    ]
    base_p95, base_median = _percentiles([dt for _, dt in base])
    ours_same_p95, _ = _percentiles(ours_same)
    ratio = base_p95 / ours_same_p95 if ours_same_p95 > 0 else float("inf")
    print(
        f"bare pyqtgraph: {len(base)} redraws up to {reached:,} points: p95 {base_p95:.2f} ms, "
        f"median {base_median:.2f} ms; ours over the same sizes: p95 {ours_same_p95:.2f} ms"
    )
    print(f"RSS: start {rss_start / 2**20:.0f} MB, peak {peak_rss / 2**20:.0f} MB")
    print(
        f"p95 redraw: {p95:.2f} ms (target < 16); peak memory: {peak_rss / 2**20:.0f} MB; "
        f"ratio vs bare pyqtgraph: {ratio:.1f}x faster (p95 up to {reached:,} points)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
