"""Metric points for the store: built from trainer events without validating twice, and
inserted in blocks.

This is the ingest hot path (bench/ingest.py): about six points per metric event, built from
already-validated values the way `model_construct` builds them (only faster), then written with
multi-row INSERT statements.
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, islice, repeat
from operator import attrgetter
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from desktop.models import MetricPoint
from trainer.protocol import Event, MetricEvent, StatusEvent

__all__ = [
    "delete_points_after",
    "insert_points",
    "make_points",
    "points_across_resumes",
    "points_from_events",
]


def _probe_series() -> tuple[str, ...] | None:
    """The series MetricEvent.values() reports, in its order: probed, so it stays the one
    source. None when the probe does not work (points then come from values() per event)."""
    optional = {
        name: 1
        for name, field in MetricEvent.model_fields.items()
        if name not in {"seq", "time", "kind", "step"} and not field.is_required()
    }
    try:
        probe = MetricEvent.model_validate({"seq": 0, "time": 0.0, "step": 0, **optional})
    except ValidationError:
        return None
    return tuple(probe.values())


_SERIES = _probe_series()
_point_row = attrgetter("job_id", "step", "name", "value", "time")
_consume = deque[object](maxlen=0).extend


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch of points is built.

    Every new point is a tracked object, so building thousands of them sets off collections
    that find nothing (points hold no cycles) yet cost ~40% of the building. Pausing for one
    batch (milliseconds) only postpones collection; whatever was enabled is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _construct_points(fields: list[dict[str, Any]]) -> list[MetricPoint]:
    """MetricPoints from field dicts that are already checked, the way `model_construct` does.

    The regular path: one `model_construct` per point.
    """
    construct = MetricPoint.model_construct
    return [construct(**f) for f in fields]


def _assemble_points(fields: list[dict[str, Any]]) -> list[MetricPoint]:
    """The same as `_construct_points`, ~3x faster: the four slots `model_construct` fills are
    filled here in C-level loops (map over builtins), not one Python call per point.

    Validating five plain fields would cost more than anything else on the ingest path (reading,
    storing), and the values come from validated events or our own database.
    """
    with _gc_paused():
        points: list[MetricPoint] = list(map(_new, repeat(MetricPoint, len(fields))))
        _consume(map(_setattr, points, repeat("__dict__"), fields))
        _consume(map(_set_fields_set, points, repeat(_ALL_FIELDS)))
        _consume(map(_set_extra, points, repeat(None)))
        _consume(map(_set_private, points, repeat(None)))
    return points


def _pick_points_factory() -> Callable[[list[dict[str, Any]]], list[MetricPoint]]:
    """`_assemble_points` while it makes exactly what `model_construct` makes, else the latter.

    It relies on MetricPoint being five plain fields in pydantic's four instance slots; a
    change to either (a new field with a default, a private attribute, another pydantic)
    falls back to the regular path instead of making broken points.
    """
    sample = [{"job_id": "j", "step": 1, "name": "loss", "value": 0.5, "time": 2.0}]
    try:
        fast = _assemble_points(sample)[0]
    except (AttributeError, TypeError):
        return _construct_points
    regular = MetricPoint(**sample[0])
    plain = (
        not MetricPoint.__pydantic_post_init__
        and not MetricPoint.__private_attributes__
        and fast == regular
        and fast.model_dump() == regular.model_dump()
        and fast.model_fields_set == regular.model_fields_set
        and fast.model_dump_json() == regular.model_dump_json()
    )
    return _assemble_points if plain else _construct_points


def _slot_setter(name: str) -> Callable[[Any, Any], None]:
    descriptor = BaseModel.__dict__.get(name)
    setter = getattr(descriptor, "__set__", None)
    if setter is None:  # not a slot in this pydantic: the generic (slower) way

        def set_attr(obj: Any, value: Any) -> None:
            object.__setattr__(obj, name, value)

        return set_attr
    return cast(Callable[[Any, Any], None], setter)


_new = object.__new__
_setattr = object.__setattr__
_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")
# Shared by every point made here: all fields are always set (pydantic copies it on copy).
_ALL_FIELDS = set(MetricPoint.model_fields)
# How points are made from checked field dicts: the fast way when it is proven equal.
make_points = _pick_points_factory()


def points_from_events(job_id: str, events: Iterable[Event]) -> list[MetricPoint]:
    """The metric points in `events`: one per series of each metric event (others ignored).

    This is the ingest hot path (about six points per event): the values come from validated
    events, so the points are assembled without validating them again.
    """
    fields: list[dict[str, Any]] = []
    append = fields.append
    series = _SERIES
    for event in events:
        if not isinstance(event, MetricEvent):
            continue
        if series is None:
            fields += (
                {"job_id": job_id, "step": event.step, "name": n, "value": v, "time": event.time}
                for n, v in event.values().items()
            )
            continue
        values = event.__dict__
        step = values["step"]
        t = values["time"]
        for name in series:
            value = values[name]
            if value is not None:
                append(
                    {"job_id": job_id, "step": step, "name": name, "value": float(value), "time": t}
                )
    return make_points(fields)


def points_across_resumes(
    job_id: str, events: Sequence[Event]
) -> tuple[list[MetricPoint], int | None]:
    """The points of `events` that still stand, and the step stored points are cut after.

    A resumed attempt (its status event carries `resumed_from_step`) starts again at its
    checkpoint's step: every point logged before its start past that step belongs to a history
    that no longer happened, even when the new attempt dies before logging those steps again.
    This drops such points among `events`; the caller deletes the stored ones past the returned
    step (the lowest any resume among `events` started at; None when none resumed) in the same
    transaction (`JobStore.record_progress(resumed_from_step=...)`).
    """
    starts = [
        (i, event.resumed_from_step)
        for i, event in enumerate(events)
        if isinstance(event, StatusEvent) and event.resumed_from_step is not None
    ]
    if not starts:
        return points_from_events(job_id, events), None
    points: list[MetricPoint] = []
    begin = 0
    for i, step in starts:
        points += points_from_events(job_id, events[begin:i])
        points = [p for p in points if p.step <= step]
        begin = i
    points += points_from_events(job_id, events[begin:])
    return points, min(step for _, step in starts)


_INSERT_POINT = (
    "INSERT OR REPLACE INTO metrics (job_id, step, name, value, time) VALUES (?, ?, ?, ?, ?)"
)
# Points go in blocks of this many rows per statement: binding and stepping one statement
# per row costs more than the B-tree insert itself (a block makes the ingest ~40% faster).
_BLOCK_ROWS = 200
_INSERT_BLOCK = (
    "INSERT OR REPLACE INTO metrics (job_id, step, name, value, time) VALUES "
    + ", ".join(["(?, ?, ?, ?, ?)"] * _BLOCK_ROWS)
)


def insert_points(
    conn: sqlite3.Connection,
    points: Sequence[MetricPoint],
    *,
    job_id: str = "",
    resumed_from_step: int | None = None,
) -> None:
    """Insert (or replace) points in order, so a later duplicate keeps the newest value.

    With `resumed_from_step` (a resumed attempt of `job_id` started at that checkpoint step),
    the job's stored points past that step are deleted first (`delete_points_after`).
    """
    if resumed_from_step is not None:
        delete_points_after(conn, job_id, resumed_from_step)
    n = len(points)
    full = n - n % _BLOCK_ROWS
    if full:
        # One flat stream of values, cut into tuples of a block's parameters each.
        values = chain.from_iterable(map(_point_row, islice(points, full)))
        conn.executemany(_INSERT_BLOCK, zip(*[values] * (5 * _BLOCK_ROWS), strict=False))
    if n > full:
        conn.executemany(_INSERT_POINT, map(_point_row, islice(points, full, None)))


def delete_points_after(conn: sqlite3.Connection, job_id: str, step: int) -> None:
    """Delete the job's points past `step`: a resumed attempt starts again at its checkpoint's
    step, so the points an earlier attempt logged after it belong to a history that no longer
    happened (the resumed attempt may die before logging those steps again)."""
    conn.execute("DELETE FROM metrics WHERE job_id = ? AND step > ?", (job_id, step))
