"""What closing the window does to billed cloud jobs: asks whether to leave them running.

A pod keeps running under its own watchdog (budget, maximum runtime) and deletes itself when
done, so leaving it is safe; but it costs money, so the person chooses: leave the jobs running,
cancel them (they checkpoint, their pods are deleted) and quit, or not quit. Local jobs are not
asked about: they keep running and the next start reattaches them.

The question is asked from the Qt close event itself, never inside an asyncio task: a modal
dialog's nested loop must not step other asyncio tasks from within one (qasync).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QMessageBox

from desktop.views import operations

if TYPE_CHECKING:
    from desktop.models import Job
    from desktop.views.main_window import MainWindow

__all__ = ["CloseGuard"]

LEAVE = "Leave running"
CANCEL = "Cancel jobs and quit"
STAY = "Don't quit"


class CloseGuard:
    """Decides whether a close event may proceed; cancels billed jobs first when asked to."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        #: Cancelling billed jobs before quitting: the window closes when they are cancelled.
        self.pending = False
        self._cleared = False

    def allows_close(self) -> bool:
        """True when the window may close now; False when the person chose not to quit or the
        billed jobs are being cancelled first (the window closes itself afterwards)."""
        if self._cleared:
            return True
        if self.pending:
            self.window.bus.info("cancelling the cloud jobs before quitting …")
            return False
        w = self.window
        billed = operations.billed_active_jobs(w.service, w.state.jobs())
        if not billed:
            return True
        choice = self._ask(billed)
        if choice == LEAVE:
            return True
        if choice == CANCEL:
            self._cancel_then_close([job.id for job in billed])
        return False

    def _ask(self, billed: list[Job]) -> str:
        box = QMessageBox(self.window)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Cloud jobs are running")
        box.setText(
            f"Leave {len(billed)} cloud job(s) running? Each pod keeps running under its own "
            "watchdog and deletes itself when done; or cancel them now (they checkpoint, their "
            "pods are deleted)."
        )
        box.setInformativeText(
            "\n".join(
                f"{job.id} ({job.name}): {operations.cloud_job_limits(job)}" for job in billed
            )
        )
        buttons = {
            LEAVE: box.addButton(LEAVE, QMessageBox.ButtonRole.AcceptRole),
            CANCEL: box.addButton(CANCEL, QMessageBox.ButtonRole.DestructiveRole),
            STAY: box.addButton(STAY, QMessageBox.ButtonRole.RejectRole),
        }
        box.setDefaultButton(buttons[STAY])
        box.setEscapeButton(buttons[STAY])
        box.exec()
        clicked = box.clickedButton()
        return next((name for name, b in buttons.items() if b is clicked), STAY)

    def _cancel_then_close(self, job_ids: list[str]) -> None:
        w = self.window
        self.pending = True

        def cancelled(done: list[str]) -> None:
            self.pending = False
            self._cleared = True
            w.bus.info(f"cancelled {len(done)} cloud job(s); quitting")
            w.close()

        def failed(exc: BaseException) -> None:
            # The error is on the status bar; the window stays so the person can act on it.
            self.pending = False

        task = w.ops.run(
            "cancel cloud jobs before quitting",
            operations.cancel_jobs(w.service, job_ids),
            cancelled,
            failed,
        )
        if task is None:
            self.pending = False
