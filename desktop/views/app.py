"""The window application: `finetune-desk` without a command (and `--demo`, `--offline`).

`main(argv)` makes the QApplication, one asyncio loop on the Qt thread through qasync, the job
service and the main window, then runs until the window closes. Jobs keep running after the
window closes; the next start reattaches to them.

Before the window loads its jobs, the job database is opened once in a worker thread; when
it fails its check, a dialog names the problem and offers Repair (rebuild it from the job
folders, in a worker thread, then open as usual) or Quit (nothing changed, exit code 1).

Unexpected exceptions anywhere on the Qt thread (a slot, a callback) reach the same traceback
dialog as failed operations and are written to `data_home()/logs/finetune-desk.log`; the app
keeps running.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["build_window", "log_file", "main", "setup_logging"]

log = logging.getLogger(__name__)

_T0 = time.perf_counter()


def log_file() -> Path:
    """The app's log file: `data_home()/logs/finetune-desk.log`."""
    from desktop.core.paths import data_home  # not desktop.models: pydantic is slow

    return data_home() / "logs" / "finetune-desk.log"


def setup_logging(verbose: bool = False) -> Path:
    """Log to the rotating log file (and stderr for warnings), secrets redacted."""
    import logging.handlers

    from desktop.core.redaction import install_redaction

    path = log_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_ftdesk", None) not in (None, str(path))]:
        root.removeHandler(old)  # FTDESK_HOME changed (tests, portable installs)
        old.close()
    if not any(getattr(h, "_ftdesk", None) == str(path) for h in root.handlers):
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=5_000_000, backupCount=3, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._ftdesk = str(path)  # type: ignore[attr-defined]
        root.addHandler(handler)
    if verbose or root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
    install_redaction()
    return path


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="finetune-desk", add_help=True)
    parser.add_argument("--offline", action="store_true", help="refuse every network path")
    parser.add_argument("--demo", action="store_true", help="open with the built-in demo")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    ns, _unknown = parser.parse_known_args(list(argv))
    return ns


def _open_store_early() -> Callable[[], Any]:
    """Open the job store on a worker thread now; returns a call that waits for it (None if
    opening failed: the job service then opens it again and reports the error as always,
    unless the store is damaged, which `_store_usable` offers to repair first).

    The check at open covers the jobs' own tables; the whole file's (about a second per 400 MB
    of history) runs after the window is ready (`_check_history_later`).
    """
    opened: list[Any] = []

    def open_store() -> None:
        try:
            from desktop.core.paths import data_home
            from desktop.core.store import DB_FILENAME, JobStore

            # A small file is checked whole at once (well under a second), so damage anywhere
            # is offered a repair before the window loads; a big one gets the whole-file check
            # after ready (`_check_history_later`).
            db = data_home() / DB_FILENAME
            whole = not db.exists() or db.stat().st_size < _CHECK_WHOLE_BELOW
            opened.append(JobStore(db, check_history=whole))
        except Exception as exc:  # the service's own open reports it, as always
            log.debug("opening the job store early failed", exc_info=True)
            _EARLY_ERRORS.append(exc)

    thread = threading.Thread(target=open_store, name="open job store", daemon=True)
    thread.start()

    def wait() -> Any:
        thread.join()
        return opened[0] if opened else None

    return wait


#: A job database smaller than this is checked whole when the window opens it.
_CHECK_WHOLE_BELOW = 64 * 1024 * 1024

#: Why the early open of the job store failed (read by `_store_usable`).
_EARLY_ERRORS: list[BaseException] = []


def _check_history_later(store: Any, bus: Any, loop: Any) -> None:
    """The store's whole-file check on a low-priority thread of its own; damage reaches the
    status bar as the sentence that says how to repair it."""

    def check() -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        try:
            store.check_history()
        except Exception as exc:  # StoreError; anything else is logged the same way
            log.warning("%s", exc)
            with contextlib.suppress(RuntimeError):  # the window closed meanwhile
                loop.call_soon_threadsafe(bus.error, str(exc))

    threading.Thread(target=check, name="check job database", daemon=True).start()


def _make_service(
    offline: bool | None, settings: Any, bus: Any, store: Callable[[], Any] | None = None
) -> tuple[Any, Any]:
    """The job service over the user's settings (an unreadable settings file is reported on
    the bus and the defaults are used), on the store `store()` opened if given."""
    from desktop.core.service import JobService
    from desktop.models import Settings, load_settings

    problem = None
    if settings is None:
        try:
            settings = load_settings()
        except ValueError as exc:
            settings, problem = Settings(), str(exc)
    service = JobService(
        store=store() if store is not None else None,
        settings=settings,
        offline=offline or None,
        on_error=bus.error,
        on_bug=bus.bug,
    )
    if problem:
        bus.error(f"{problem}; using the default settings")
    return service, settings


def build_window(
    *,
    offline: bool | None = None,
    settings: Any = None,
    check_runtime: bool = True,
    secret_store: Any = None,
    deferred: bool = False,
    store: Callable[[], Any] | None = None,
) -> Any:
    """The main window over a new `JobService` (call `await window.start()` on the loop).

    Settings are read from the settings file when not given; an unreadable file is reported
    on the status bar and the defaults are used. With `deferred`, only the window's skeleton
    is made now (fast: Qt and light modules); the job service, editor, table, chart and log
    view are made by `await window.build()` / `window.start()`, which emits `window.ready`.
    `store` (from `_open_store_early`) gives the job store; by default the service opens it.
    """
    from desktop.views.main_window import MainWindow

    if not deferred:
        setup_logging()
    window = MainWindow(
        settings=settings,
        secret_store=secret_store,
        check_runtime=check_runtime,
        service_factory=lambda b: _make_service(offline, settings, b, store),
        deferred=deferred,
    )
    return window


async def _store_usable(window: Any, opened: Callable[[], Any] | None) -> tuple[bool, str]:
    """Check the job database before the window loads it; offer the repair when it is damaged.

    `opened` waits for the early open (`_open_store_early`), whose failure is the check; without
    it the database is opened here once.

    Returns:
        (usable, report): usable is True when the store can be opened (sound, or rebuilt now)
        and False when the person chose Quit or closed the window (nothing was changed); the
        report says what a repair did ("" without one), for the status bar.
    """
    import asyncio

    from desktop.core.paths import data_home
    from desktop.core.repair import rebuild_store, store_problem
    from desktop.core.store_schema import StoreDamagedError
    from desktop.views.repair_dialog import RepairDialog

    home = data_home()
    if opened is not None:
        problem = None
        if await asyncio.to_thread(opened) is None and _EARLY_ERRORS:
            error = _EARLY_ERRORS[-1]
            problem = str(error) if isinstance(error, StoreDamagedError) else None
    else:
        problem = await asyncio.to_thread(store_problem, home)
    if problem is None:
        return True, ""
    log.warning("the job database failed its check: %s", problem)
    dialog = RepairDialog(problem, window)
    window.closed.connect(dialog.reject)
    if not await dialog.ask():
        return False, ""
    try:
        aside, count, skipped = await asyncio.to_thread(rebuild_store, home)
    finally:
        dialog.finish()
    for line in skipped:
        log.info("repair skipped %s", line)
    report = (
        f"Rebuilt {count} job(s) from {home / 'jobs'}"
        + (f" ({len(skipped)} folder(s) could not be read; see the log)" if skipped else "")
        + f"; the damaged database is kept as {aside}"
    )
    return True, report


def _install_excepthook(window: Any) -> None:
    """Route exceptions that escape Qt slots to the traceback dialog; keep running."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            previous(kind, exc, tb)
            return
        exc.__traceback__ = tb
        try:
            window.bus.bug(f"{kind.__name__}: {exc}", exc)
        except Exception:
            previous(kind, exc, tb)

    sys.excepthook = hook


def _install_startup_probe(window: Any) -> None:
    """`FTDESK_STARTUP_PROBE=1` (bench/gui_startup.py): print "shown" on the window's first
    paint and "ready" once it is usable, then close it. The runtime doctor (a child process)
    is not started in this mode."""

    def shown() -> None:
        print("shown", flush=True)

    def started() -> None:
        usable = window.start_button.isEnabled()
        print("ready" if usable else "ready-but-start-disabled", flush=True)
        window.close()

    window.first_painted.connect(shown)
    window.started.connect(started)


def main(argv: Sequence[str] | None = None) -> int:
    """Open the window; returns the exit code when it closes."""
    ns = _parse(sys.argv[1:] if argv is None else argv)
    from PySide6.QtCore import QCoreApplication, QEventLoop, Qt, QTimer
    from PySide6.QtGui import QGuiApplication, QIcon
    from PySide6.QtWidgets import QApplication

    from desktop.views.main_window import DEMO_PRESET, icon_path

    QCoreApplication.setOrganizationName("FinetuneDesk")
    QCoreApplication.setApplicationName("Finetune Desk")
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
        Qt.HighDpiScaleFactorRoundingPolicy.PassThrough
    )
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "finetune-desk"])
    assert isinstance(app, QApplication)
    app.setWindowIcon(QIcon(str(icon_path())))
    app.setQuitOnLastWindowClosed(False)
    # Cyclic garbage (Qt objects among it) is collected on this thread only: see gui_gc.py.
    from desktop.views.gui_gc import GuiGarbageCollector

    collector = GuiGarbageCollector()
    collector.start()

    # The skeleton (toolbar, status bar, empty panels) is on screen before anything heavy is
    # imported, asyncio and qasync included; the window then builds the rest (`start()`).
    probe = os.environ.get("FTDESK_STARTUP_PROBE") == "1"
    early: list[Callable[[], Any]] = []  # the store, opened once the skeleton is painted
    window = build_window(
        offline=ns.offline or None,
        deferred=True,
        check_runtime=not probe,
        store=lambda: early[0]() if early else None,
    )
    _install_excepthook(window)
    if probe:
        _install_startup_probe(window)
    window.show()
    if "painted" not in window.timings:
        first_paint = QEventLoop()
        window.first_painted.connect(first_paint.quit)
        QTimer.singleShot(2000, first_paint.quit)  # a platform that never paints (minimised)
        first_paint.exec()
    path = setup_logging(ns.verbose)
    early.append(_open_store_early())
    log.info(
        "Finetune Desk starting (log file %s); window painted %.3f s after import",
        path,
        window.timings.get("painted", time.perf_counter()) - _T0,
    )

    import asyncio

    import qasync

    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)

    async def run() -> int:
        closed = asyncio.Event()
        window.closed.connect(closed.set)
        if window.isHidden():  # closed before the loop ran
            closed.set()
        usable, repaired = await _store_usable(window, early[0] if early else None)
        if not usable:
            window.close()
            return 1
        await window.start()
        store = early[0]() if early else None
        if store is not None and window.service is not None and window.service.store is store:
            _check_history_later(store, window.bus, loop)
        if repaired:
            window.bus.info(repaired)
        log.info("window ready %.3f s after import", time.perf_counter() - _T0)
        if ns.demo:
            window.load_preset(DEMO_PRESET)
        await closed.wait()
        if window.is_ready:
            await window.ops.close()
        if window.service is not None:
            await window.service.close()
        return 0

    try:
        code: int = loop.run_until_complete(run())
    finally:
        window.deleteLater()
        loop.close()
        collector.stop()  # automatic collection back, for a caller that goes on (tests)
        store = early[0]() if early else None
        if store is not None:  # the service does not close a store it was given
            store.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
