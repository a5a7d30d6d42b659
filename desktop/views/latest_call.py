"""Background checks where the newest request is the one that counts.

`Operations` refuses a second operation of a name while one runs ("… is already running"):
right for a launch, wrong for a check of what a person just chose. An interpreter picked while
the check of the last one runs would never be checked, and the last one's answer, for a choice
that is no longer current, would be shown and acted on. A `LatestCall` keeps such a request
waiting and starts it when the running call ends; only the newest request's answer (or error)
reaches its callbacks, older ones are dropped.

One `LatestCall` serves a name on an `Operations` (`latest_call`), whoever asks: a Settings
dialog opened while a closed one's check still runs waits for that check instead of being
refused by it (and the closed one's answer, being older, is dropped).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from desktop.views import operations

if TYPE_CHECKING:
    import asyncio

    from desktop.views.operations import Operations

__all__ = ["LatestCall", "latest_call"]

T = TypeVar("T")

_CALLS: weakref.WeakKeyDictionary[Operations, dict[str, LatestCall]] = weakref.WeakKeyDictionary()


def latest_call(ops: Operations, name: str) -> LatestCall:
    """The one `LatestCall` that runs the operation `name` on `ops`."""
    calls = _CALLS.setdefault(ops, {})
    if name not in calls:
        calls[name] = LatestCall(ops, name)
    return calls[name]


class LatestCall:
    """Runs a blocking call as the operation `name`, one at a time, the newest request last.

    Every operation of this name must go through this object: one started on `ops` directly
    would not start the waiting request when it ends.

    Args:
        ops: runs the calls in worker threads and reports unexpected errors.
        name: the operation's name (what the person reads when it fails).
    """

    def __init__(self, ops: Operations, name: str) -> None:
        self._ops = ops
        self.name = name
        self._asked = 0  # the newest request's number: answers to older ones are dropped
        self._waiting: Callable[[], None] | None = None  # the newest request, not started yet

    def request(
        self,
        func: Callable[..., T],
        *args: Any,
        on_done: Callable[[T], None],
        on_error: Callable[[BaseException], None],
        quiet: bool = False,
    ) -> None:
        """Run `func(*args)` in a worker thread now, or after the call running now (whose
        answer is then dropped); older requests still waiting are dropped unstarted.

        `on_done(result)` or `on_error(exc)` is called only when this is still the newest
        request. An expected error (`FtdeskError`) is also posted on the bus unless `quiet`;
        an unexpected one is always reported as a bug, as `Operations.run` does.
        """
        self._asked += 1
        asked = self._asked

        def done(result: T) -> None:
            if asked == self._asked:
                on_done(result)

        def failed(exc: BaseException) -> None:
            if asked != self._asked:
                return
            # Posted here rather than by `Operations`, so an older request's error is not.
            if not quiet and isinstance(exc, operations.FtdeskError):
                self._ops.bus.error(str(exc))
            on_error(exc)

        def start() -> None:
            task = self._ops.run_in_thread(
                self.name, func, *args, on_done=done, on_error=failed, quiet=True
            )
            if task is not None:  # None: the window is closing, nothing starts any more
                task.add_done_callback(self._on_finished)

        self._waiting = start
        if not self._ops.is_running(self.name):
            self._start_waiting()

    def _on_finished(self, _task: asyncio.Task[Any]) -> None:
        # After the operation has ended (`Operations` forgot its name), on the loop's thread.
        if not self._ops.is_running(self.name):
            self._start_waiting()

    def _start_waiting(self) -> None:
        start, self._waiting = self._waiting, None
        if start is not None:
            start()
