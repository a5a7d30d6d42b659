"""Background operations for the window, and the one message bus for user-facing errors.

As in Anki's `aqt/operations`: a view asks `Operations.run(...)` to do something (launch a job,
check a dataset, read the keychain); the work runs as a tracked asyncio task (blocking calls in
a worker thread), and when it ends either the success callback updates the UI or the error is
shown. Expected errors (`FtdeskError`: a bad field, an unusable dataset, an unreachable
provider) become one sentence on the `MessageBus`, which the status bar shows. Anything else is
a bug: it is written to the log file with its traceback and shown in a dialog with that
traceback; the app keeps running.

The blocking helpers at the bottom (`run_trainer_json`, `read_record`) are Qt-free; they run
the trainer runtime as a subprocess (never asyncio's subprocess API, which is unreliable under
qasync on Windows) and are meant to be called through `Operations.run_in_thread`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import traceback
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from desktop.core.errors import FtdeskError, RuntimeNotReadyError
from desktop.core.tasks import TaskRunner

__all__ = [
    "MessageBus",
    "Operations",
    "format_exception",
    "read_record",
    "run_trainer_json",
    "show_traceback_dialog",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class MessageBus(QObject):
    """The one channel for messages meant for the person at the window.

    Signals:
        info_posted(str): a short status message ("job 2024… launched").
        error_posted(str): an expected error, one sentence with what to do next.
        bug_reported(str, str): an unexpected error: a summary and its traceback.
    """

    info_posted = Signal(str)
    error_posted = Signal(str)
    bug_reported = Signal(str, str)

    def info(self, message: str) -> None:
        """Post a status message."""
        log.info("%s", message)
        self.info_posted.emit(message)

    def error(self, message: str) -> None:
        """Post an expected error (the status bar shows it)."""
        log.warning("%s", message)
        self.error_posted.emit(message)

    def bug(self, summary: str, exc: BaseException) -> None:
        """Report an unexpected exception: logged with its traceback, then shown in a dialog."""
        text = format_exception(exc)
        log.error("%s\n%s", summary, text)
        self.bug_reported.emit(summary, text)


def format_exception(exc: BaseException) -> str:
    """The exception's traceback as text (redacted by the log filter when logged)."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def show_traceback_dialog(parent: QWidget | None, summary: str, text: str) -> None:
    """A modal dialog with the summary and the full traceback under "Show Details".

    The log file holds the same traceback; the app keeps running after the dialog closes.
    """
    box = QMessageBox(parent)
    box.setObjectName("traceback_dialog")
    box.setIcon(QMessageBox.Icon.Critical)
    box.setWindowTitle("Finetune Desk: unexpected error")
    box.setText(f"Something went wrong: {summary}")
    box.setInformativeText(
        "This is a bug in Finetune Desk. The app keeps running; the traceback below was also "
        "written to the log file. Please include it when you report the problem."
    )
    box.setDetailedText(text)
    box.setStandardButtons(QMessageBox.StandardButton.Close)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.exec()


class Operations(QObject):
    """Runs async work in the background and routes its outcome.

    Every task is started on a `TaskRunner` under a name (a second "launch" while one is
    running is refused with a message rather than started twice).

    Args:
        bus: where errors and messages go.
        runner: the task runner (default: a new one).
        parent: the QObject parent.

    Signals:
        busy_changed(bool): True while any operation runs.
    """

    busy_changed = Signal(bool)

    def __init__(
        self,
        bus: MessageBus,
        runner: TaskRunner | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.bus = bus
        self.runner = runner or TaskRunner()
        self._running: set[str] = set()

    def run(
        self,
        name: str,
        coro: Coroutine[Any, Any, T],
        on_done: Callable[[T], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        *,
        quiet: bool = False,
    ) -> asyncio.Task[Any] | None:
        """Run `coro` as the task `name`; then `on_done(result)` or show the error.

        `on_error`, when given, is called for expected errors (FtdeskError) after they are
        posted, so a view can also show it in place (e.g. on a panel). With `quiet`, expected
        errors go only to `on_error` (a badge that explains itself). Unexpected errors always go
        to the traceback dialog.

        Returns:
            The task, or None when an operation of that name is already running.
        """
        if name in self._running:
            coro.close()
            self.bus.info(f"{name} is already running")
            return None
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the app is shutting down: nothing can run any more
            coro.close()
            log.debug("%s not started: no running event loop", name)
            return None
        self._running.add(name)
        if len(self._running) == 1:
            self.busy_changed.emit(True)
        return self.runner.start(name, self._wrap(name, coro, on_done, on_error, quiet))

    def run_in_thread(
        self,
        name: str,
        func: Callable[..., T],
        *args: Any,
        on_done: Callable[[T], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        quiet: bool = False,
    ) -> asyncio.Task[Any] | None:
        """Run the blocking `func(*args)` in a worker thread, then as `run`."""
        return self.run(name, asyncio.to_thread(func, *args), on_done, on_error, quiet=quiet)

    def is_running(self, name: str) -> bool:
        """Whether the operation `name` is in progress."""
        return name in self._running

    async def _wrap(
        self,
        name: str,
        coro: Coroutine[Any, Any, T],
        on_done: Callable[[T], None] | None,
        on_error: Callable[[BaseException], None] | None,
        quiet: bool = False,
    ) -> None:
        try:
            try:
                result = await coro
            except asyncio.CancelledError:
                raise
            except FtdeskError as exc:
                if quiet:
                    log.debug("%s: %s", name, exc)
                else:
                    self.bus.error(str(exc))
                if on_error is not None:
                    on_error(exc)
                return
            except Exception as exc:
                self.bus.bug(f"{name} failed: {exc}", exc)
                if on_error is not None:
                    on_error(exc)
                return
            if on_done is not None:
                try:
                    on_done(result)
                except Exception as exc:
                    self.bus.bug(f"{name}: updating the window failed: {exc}", exc)
        finally:
            self._running.discard(name)
            if not self._running:
                self.busy_changed.emit(False)

    async def close(self) -> None:
        """Cancel every operation still running."""
        await self.runner.cancel_all()


# ---------------------------------------------------------------------------------------------
# Blocking helpers (Qt-free), for `Operations.run_in_thread`.


def run_trainer_json(
    python: str,
    args: Sequence[str],
    *,
    timeout_s: float = 600.0,
    env: Mapping[str, str] | None = None,
    accept_codes: tuple[int, ...] = (0,),
) -> dict[str, Any]:
    """Run `python -m trainer ARGS` (with `--json` among ARGS) and return its JSON report.

    A report is returned for every exit code in `accept_codes` (`check-data` exits 2 with a
    full report when the data is unusable; `doctor` exits 1 when the runtime has problems).

    Raises:
        RuntimeNotReadyError: the runtime cannot start, timed out or printed no JSON report.
    """
    cmd = [python, "-m", "trainer", *args]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout_s,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeNotReadyError(
            f"`trainer {args[0]}` did not finish within {timeout_s:.0f} s"
        ) from exc
    except OSError as exc:
        raise RuntimeNotReadyError(
            f"cannot start the trainer runtime {python}: {exc.strerror or exc}; choose a Python "
            "with the train extra in Settings"
        ) from exc
    try:
        data = json.loads(proc.stdout)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except ValueError:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeNotReadyError(
            f"the trainer runtime {python} failed on `trainer {args[0]}` (exit "
            f"{proc.returncode}): {tail or 'no output'}; check it in Settings (doctor)"
        ) from None
    if proc.returncode not in accept_codes:
        data.setdefault("exit_code", proc.returncode)
    return data


def read_record(path: str | Path, line: int, location: str = "line", limit: int = 20_000) -> str:
    """The text of record `line` (1-based) of a data file, pretty-printed when it is JSON.

    For `location == "line"` (JSON lines, CSV) it reads that physical line, streaming, so a
    1 GB file costs no memory; for other locations (records of a JSON array) it says where to
    look instead of loading the whole file.
    """
    p = Path(path).expanduser()
    if location != "line":
        return f"{location} {line} of {p.name}: open the file to see this {location}."
    opener: Any = open
    if p.name.endswith(".gz"):
        import gzip

        opener = gzip.open
    try:
        with opener(p, "rt", encoding="utf-8", errors="replace") as fh:
            for number, text in enumerate(fh, start=1):
                if number == line:
                    text = text.rstrip("\r\n")
                    try:
                        pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
                    except ValueError:
                        pretty = str(text)
                    return pretty[:limit]
    except OSError as exc:
        return f"cannot read {p}: {exc.strerror or exc}"
    return f"{p.name} has fewer than {line} lines"
