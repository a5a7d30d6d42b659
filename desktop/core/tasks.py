"""Tracked background tasks: every asyncio task the app starts has a name, can be cancelled,
and reports its failure to someone (STYLE.md rule 7: no fire-and-forget `create_task`).

Qt-free: the GUI passes a callback that shows the error, the CLI one that prints it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["BugHandler", "TaskFailureHandler", "TaskRunner", "print_bug"]

log = logging.getLogger(__name__)

TaskFailureHandler = Callable[[str, BaseException], None]

# Where a bug goes (an exception no code expected, e.g. from a job listener): a summary and the
# exception. The window shows its traceback dialog; the CLI prints the traceback.
BugHandler = Callable[[str, BaseException], None]


def print_bug(summary: str, exc: BaseException) -> None:
    """The CLI's bug path: the summary and the traceback on stderr."""
    print(f"bug: {summary}", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)


class TaskRunner:
    """Owns named background tasks on the running event loop.

    A task that raises is logged with its traceback and handed to `on_failure(name, exc)`; a
    task that is cancelled is not a failure. Names are unique among running tasks, so a second
    watcher of the same job cannot be started by mistake.

    Args:
        on_failure: called on the loop's thread with the task's name and its exception.
    """

    def __init__(self, on_failure: TaskFailureHandler | None = None) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._on_failure = on_failure

    def set_failure_handler(self, on_failure: TaskFailureHandler | None) -> None:
        """Route later failures to `on_failure`."""
        self._on_failure = on_failure

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` as the task `name`.

        Raises:
            ValueError: a task with this name is still running (the coroutine is closed).
        """
        existing = self._tasks.get(name)
        if existing is not None and not existing.done():
            coro.close()
            raise ValueError(f"a task named {name!r} is already running")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._on_done)
        return task

    def is_running(self, name: str) -> bool:
        """Whether the task `name` exists and has not finished."""
        task = self._tasks.get(name)
        return task is not None and not task.done()

    def names(self) -> list[str]:
        """Names of the tasks still running."""
        return [name for name, task in self._tasks.items() if not task.done()]

    def cancel(self, name: str) -> bool:
        """Ask the task `name` to stop; False when there is no such running task."""
        task = self._tasks.get(name)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def wait(self, name: str) -> None:
        """Wait until the task `name` has finished (its failure, if any, went to the handler)."""
        task = self._tasks.get(name)
        if task is not None:
            await asyncio.wait({task})

    async def cancel_all(self, timeout: float = 5.0) -> None:
        """Cancel every running task and wait (at most `timeout` seconds) until they stop."""
        pending = [task for task in self._tasks.values() if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout)
            for task in still:
                log.warning("task %s did not stop within %.1f s", task.get_name(), timeout)

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        name = task.get_name()
        if self._tasks.get(name) is task:
            del self._tasks[name]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("background task %s failed", name, exc_info=exc)
        if self._on_failure is not None:
            try:
                self._on_failure(name, exc)
            except Exception:
                log.exception("the failure handler of task %s failed", name)
