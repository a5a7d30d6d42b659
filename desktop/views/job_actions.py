"""The window's job actions: start, cancel, resume, duplicate, delete, open the output, and the
log of a selected job.

`JobActions` is a helper the main window owns once its heavy parts exist. Every action is a
use-case of the job service run through `Operations` (off the UI thread, errors on the bus);
no action touches the store or a provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer

from desktop.views import operations

if TYPE_CHECKING:
    from desktop.models import Job
    from desktop.views.export_dialog import ExportDialog
    from desktop.views.main_window import MainWindow

__all__ = ["JobActions"]


class JobActions(QObject):
    """Job actions of one `MainWindow` (its service, state, bus, operations and job table).

    Args:
        window: the window whose job table and log view the actions serve.
    """

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self._logs_loaded: set[str] = set()

    def connect_table(self) -> None:
        """Wire the job table's requests and the selection to these actions."""
        view = self.window.jobs_view
        view.cancel_requested.connect(self.cancel_job)
        view.resume_requested.connect(self.resume_job)
        view.duplicate_requested.connect(self.duplicate_job)
        view.open_output_requested.connect(self.open_output)
        view.show_log_requested.connect(self.show_log)
        view.delete_requested.connect(self.delete_job)
        view.export_requested.connect(self.open_export)
        self.window.state.selection_changed.connect(self._on_state_selection_changed)

    def start_job(self) -> None:
        """Launch the editor's config on the chosen target (checks run first, off the UI)."""
        w = self.window
        if not w.config_actions.require_valid("start"):
            return
        config = w.editor.config()
        target = w.editor.launch_target()
        w.config_actions.save_last_config()
        w.start_button.setEnabled(False)
        w.statusBar().showMessage(f"checking {config.name} and starting it …")

        def done(job: Job) -> None:
            w.update_start_enabled()
            w.bus.info(f"job {job.id} ({job.name}) is {job.state.value} on {job.provider}")
            w.jobs_view.select_job_ids([job.id])

        w.ops.run(
            "start the job",
            w.service.launch(config, provider=target),
            done,
            lambda _exc: w.update_start_enabled(),
        )

    def cancel_job(self, job_id: str) -> None:
        """Cancel a job (it checkpoints first)."""
        w = self.window
        w.ops.run(
            f"cancel job {job_id}",
            w.service.cancel(job_id),
            lambda job: w.bus.info(f"cancelling job {job.id} …"),
        )

    def resume_job(self, job_id: str, force: bool = False) -> None:
        """Resume a cancelled or failed job from its last checkpoint. When what it trained on
        changed (data, model, trainer packages), the status bar names the change and the
        person may resume anyway (`force`)."""
        w = self.window

        def ask(exc: operations.ProvenanceChangedError) -> None:
            if self.confirm_resume_anyway(exc):
                self.resume_job(job_id, force=True)

        def refused(exc: BaseException) -> None:
            if isinstance(exc, operations.ProvenanceChangedError):
                # Asked from the Qt loop, not inside the refused task: a modal dialog's nested
                # loop must not step other asyncio tasks from within this one (qasync).
                QTimer.singleShot(0, lambda: ask(exc))

        # The resume's notes (no provenance recorded, the changes a force went over) go into
        # its done message: one posted on its own would be replaced by that in the same tick.
        notes: list[str] = []

        def resumed(job: Job) -> None:
            said = "".join(f"; {note}" for note in notes)
            w.bus.info(f"job {job.id} resumed ({job.state.value}){said}")

        w.ops.run(
            f"resume job {job_id}" + (" anyway" if force else ""),
            w.service.resume(job_id, force=force, on_note=notes.append),
            resumed,
            None if force else refused,
        )

    def confirm_resume_anyway(self, refusal: operations.ProvenanceChangedError) -> bool:
        """Ask whether to resume a job whose data, model or trainer changed; True: resume."""
        from PySide6.QtWidgets import QMessageBox

        box = QMessageBox(self.window)
        box.setObjectName("confirm_resume_anyway")
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Resume job")
        box.setText(f"Job {refusal.job_id} would not resume on what it started with.")
        box.setInformativeText(
            "\n".join(f"• {change}." for change in refusal.changes)
            + "\n\nResume anyway (the job's history records the change), or start a new job?"
        )
        anyway = box.addButton("Resume anyway", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        clicked = box.clickedButton()
        box.deleteLater()
        return clicked is anyway

    def duplicate_job(self, job_id: str) -> None:
        """Copy a job's config into the editor."""
        job = self.window.state.job(job_id)
        if job is None:
            return
        self.window.editor.set_config(job.config)
        self.window.bus.info(f"the config of job {job.id} is in the editor")

    def open_output(self, job_id: str) -> None:
        """Show the job's output folder (else its job folder) in the file manager."""
        job = self.window.state.job(job_id)
        if job is None:
            return
        folder = job.output_dir if job.output_dir and job.output_dir.exists() else job.job_dir
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices

        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self.window.bus.error(f"cannot open {folder} in a file manager; open it yourself")

    def open_export(self, job_id: str) -> ExportDialog | None:
        """Open the Export dialog of a job (merge, push); returns it."""
        job = self.window.state.job(job_id)
        service = self.window.service
        if job is None or service is None:
            return None
        from desktop.views.export_dialog import ExportDialog

        dialog = ExportDialog(job, self.window.ops, service.runtime, service.offline, self.window)
        dialog.open()
        return dialog

    def show_log(self, job_id: str) -> None:
        """Select the job so the log view (and the chart) follow it."""
        self.window.jobs_view.select_job_ids([job_id])

    def confirm_delete(self, job: Job) -> str | None:
        """Ask how to delete: "record", "files" (record and job folder) or None (keep)."""
        from PySide6.QtWidgets import QMessageBox

        box = QMessageBox(self.window)
        box.setObjectName("confirm_delete")
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Delete job")
        box.setText(f"Delete job {job.name} ({job.id})?")
        box.setInformativeText(
            f"Its folder {job.job_dir} holds the checkpoints and the trained output. Delete only "
            "the record (the folder stays), or the record and the folder?"
        )
        record = box.addButton("Delete record", QMessageBox.ButtonRole.AcceptRole)
        files = box.addButton("Delete record and files", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        clicked = box.clickedButton()
        box.deleteLater()
        if clicked is files:
            return "files"
        if clicked is record:
            return "record"
        return None

    def delete_job(self, job_id: str) -> None:
        """Delete a finished job's record, and its files when the person says so."""
        w = self.window
        job = w.state.job(job_id)
        if job is None:
            return
        choice = self.confirm_delete(job)
        if choice is None:
            return
        w.ops.run(
            f"delete job {job_id}",
            w.service.delete(job_id, delete_files=choice == "files"),
            lambda _r: w.bus.info(f"job {job_id} deleted"),
        )

    def _on_state_selection_changed(self, job_ids: list[str]) -> None:
        """The log view follows the (last) selected job; a finished job's stored log is read
        once when it is first selected (its watcher, which streams logs, has ended)."""
        w = self.window
        if job_ids:
            w.log_view.set_job(job_ids[-1])
        for job_id in job_ids[-1:]:
            job = w.state.job(job_id)
            if job is None or not job.is_final or job_id in self._logs_loaded:
                continue
            if w.state.log_tail(job_id):
                continue
            self._logs_loaded.add(job_id)

            def show(lines: list[str], job_id: str = job_id) -> None:
                w.state.log_added(job_id, lines)

            w.ops.run(f"read the log of {job_id}", operations.read_job_log(w.service, job), show)
