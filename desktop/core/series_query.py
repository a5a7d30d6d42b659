"""One job's stored series as columns, downsampled in SQL for the screen when long.

`JobStore.series_columns` (desktop/core/store.py) runs `read_series_columns` under its lock:
the window reads a job's history when the job is selected, not at start (bench/history_scale.py).
Qt-free.
"""

from __future__ import annotations

import sqlite3

from desktop.models import SeriesColumns

__all__ = ["read_series_columns"]

# SQLite gives a bare column (step) the row of the single min() / max() aggregate.
_BUCKET = (
    "SELECT step, {agg}(value) FROM metrics WHERE job_id = ?1 AND name = ?2"
    " GROUP BY CAST((step - ?3) / ?4 AS INTEGER)"
)
_DOWNSAMPLED = (
    "SELECT step, value, time FROM metrics WHERE job_id = ?1 AND name = ?2 AND (step IN ("
    f"SELECT step FROM ({_BUCKET.format(agg='min')}) UNION "
    f"SELECT step FROM ({_BUCKET.format(agg='max')})) OR step = ?3 OR step = ?5) ORDER BY step"
)


def read_series_columns(
    conn: sqlite3.Connection, job_id: str, max_points: int | None = None
) -> dict[str, SeriesColumns]:
    """Every series of one job as columns in step order.

    A series longer than `max_points` comes out downsampled without a Python object per stored
    point: its step range is cut into `max_points // 2 - 1` buckets and each bucket gives the
    points of its smallest and largest value; the first and last points are always kept, so a
    spike and the run's ends survive. Every query is a range of the primary key (job_id, step,
    name). A NaN (stored as NULL) comes back as NaN.

    Raises:
        ValueError: `max_points` is below 4.
    """
    if max_points is not None and max_points < 4:
        raise ValueError(f"max_points must be at least 4, got {max_points}")
    nan = float("nan")
    out: dict[str, SeriesColumns] = {}
    extents = conn.execute(
        "SELECT name, count(*), min(step), max(step) FROM metrics WHERE job_id = ?"
        " GROUP BY name ORDER BY name",
        (job_id,),
    ).fetchall()
    for name, count, first, last in extents:
        if max_points is None or count <= max_points:
            rows = conn.execute(
                "SELECT step, value, time FROM metrics WHERE job_id = ? AND name = ? ORDER BY step",
                (job_id, name),
            ).fetchall()
        else:
            width = (last - first + 1) / (max_points // 2 - 1)
            rows = conn.execute(_DOWNSAMPLED, (job_id, name, first, width, last)).fetchall()
        steps, values, times = zip(*rows, strict=True) if rows else ((), (), ())
        out[name] = SeriesColumns(
            tuple(steps), tuple(nan if v is None else v for v in values), tuple(times)
        )
    return out
