"""Cyclic garbage holding Qt objects is collected on the Qt thread, never by a worker thread's
allocations (desktop/views/gui_gc.py)."""

from __future__ import annotations

import gc
import threading
from typing import Any

from PySide6.QtCore import QObject, Qt

from desktop.views.gui_gc import GuiGarbageCollector


def _qt_object_in_a_cycle(record: list[bool]) -> None:
    obj = QObject()
    obj.destroyed.connect(
        lambda *_: record.append(threading.current_thread() is threading.main_thread()),
        Qt.ConnectionType.DirectConnection,
    )
    obj.itself = obj  # type: ignore[attr-defined]  # a cycle: only the collector frees it


def _allocate_in_a_worker() -> None:
    def churn() -> None:
        for _ in range(50):
            [[] for _ in range(10_000)]  # thousands of container allocations: collections due

    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()


def test_qt_garbage_is_collected_on_the_qt_thread_only(qtbot: Any) -> None:
    collector = GuiGarbageCollector(interval_ms=10)
    collector.start()
    try:
        assert not gc.isenabled()
        record: list[bool] = []
        _qt_object_in_a_cycle(record)
        _allocate_in_a_worker()
        assert record == []  # the worker's allocations collected nothing
        kept = [[] for _ in range(2_000)]  # the Qt thread allocates: a collection is due
        qtbot.waitUntil(lambda: bool(record), timeout=10_000)
        del kept
        assert record == [True]  # collected by the timer, on the Qt thread
    finally:
        collector.stop()
    assert gc.isenabled()


def test_without_it_a_worker_thread_may_destroy_a_qt_object() -> None:
    """What the collector prevents: the same garbage, automatic collection on, is destroyed by
    the worker thread that allocates."""
    assert gc.isenabled()
    gc.collect()
    record: list[bool] = []
    _qt_object_in_a_cycle(record)
    _allocate_in_a_worker()
    assert record == [False]
