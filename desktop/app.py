"""The window application: `finetune-desk` without a command (and `--demo`, `--offline`).

`main(argv)` makes the QApplication, one asyncio loop on the Qt thread through qasync, the job
service and the main window, then runs until the window closes. Jobs keep running after the
window closes; the next start reattaches to them.

Unexpected exceptions anywhere on the Qt thread (a slot, a callback) reach the same traceback
dialog as failed operations and are written to `data_home()/logs/finetune-desk.log`; the app
keeps running.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["build_window", "log_file", "main", "setup_logging"]

log = logging.getLogger(__name__)

_T0 = time.perf_counter()


def log_file() -> Path:
    """The app's log file: `data_home()/logs/finetune-desk.log`."""
    from desktop.models import data_home

    return data_home() / "logs" / "finetune-desk.log"


def setup_logging(verbose: bool = False) -> Path:
    """Log to the rotating log file (and stderr for warnings), secrets redacted."""
    from desktop.redaction import install_redaction

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


def build_window(
    *,
    offline: bool | None = None,
    settings: Any = None,
    check_runtime: bool = True,
    secret_store: Any = None,
) -> Any:
    """The main window over a new `JobService` (call `await window.start()` on the loop).

    Settings are read from the settings file when not given; an unreadable file is reported
    on the status bar and the defaults are used.
    """
    from desktop.jobs import JobService
    from desktop.models import Settings, load_settings
    from desktop.operations import MessageBus
    from desktop.views.main_window import MainWindow

    setup_logging()
    bus = MessageBus()
    problem = None
    if settings is None:
        try:
            settings = load_settings()
        except ValueError as exc:
            settings, problem = Settings(), str(exc)
    service = JobService(settings=settings, offline=offline or None, on_error=bus.error)
    if offline:
        service.offline = True
    window = MainWindow(
        service,
        settings=settings,
        bus=bus,
        secret_store=secret_store,
        check_runtime=check_runtime,
    )
    bus.setParent(window)
    if problem:
        bus.error(f"{problem}; using the default settings")
    return window


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


def main(argv: Sequence[str] | None = None) -> int:
    """Open the window; returns the exit code when it closes."""
    ns = _parse(sys.argv[1:] if argv is None else argv)
    path = setup_logging(ns.verbose)
    import qasync
    from PySide6.QtCore import QCoreApplication, Qt
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
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)

    window = build_window(offline=ns.offline or None)
    _install_excepthook(window)
    log.info("Finetune Desk starting (log file %s)", path)

    async def run() -> None:
        closed = asyncio.Event()
        window.closed.connect(closed.set)
        window.show()
        log.info("window shown %.3f s after import", time.perf_counter() - _T0)
        await window.start()
        if ns.demo:
            window.load_preset(DEMO_PRESET)
        await closed.wait()
        await window.ops.close()
        await window.service.close()

    try:
        loop.run_until_complete(run())
    finally:
        window.deleteLater()
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
