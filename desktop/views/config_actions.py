"""The window's config-file actions: presets, open, save, export, the last config, the demo,
and the dataset preflight.

`ConfigActions` is a helper the main window owns once its heavy parts exist. It reads and
writes files only through `desktop.views.operations` (in a worker thread, except the small
bundled preset the person just picked and the last config saved as the window closes), and
the trainer's checks (`make-demo`, `check-data`) run through the job service's
`TrainerRuntime`, so they use the same Python and offline mode as a launch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal

from desktop.views import operations
from desktop.views.operations import GPUS, ConfigError, FtdeskError

if TYPE_CHECKING:
    from PySide6.QtWidgets import QMenu

    from desktop.views.config_editor import FieldProblem
    from desktop.views.main_window import MainWindow
    from desktop.views.preflight import PreflightDialog
    from trainer.config import TrainingConfig
    from trainer.reports import DataReport, DoctorReport

__all__ = ["DEMO_PRESET", "ConfigActions"]

DEMO_PRESET = "demo-cpu"
#: The editor's error key for what the launch target lacks (shown above the sections).
RUNTIME_ERROR = "runtime"


class ConfigActions(QObject):
    """Config-file actions of one `MainWindow` (its editor, bus, operations and file dialog).

    Args:
        window: the window whose editor the actions read and fill.

    Signals:
        demo_ready(str): the demo folder exists (its path).
        demo_pending_changed(bool): the demo is being written (Start waits for it) or is done.
        config_file_used(str): a config file was opened or saved (its path; recent configs).
    """

    demo_ready = Signal(str)
    demo_pending_changed = Signal(bool)
    config_file_used = Signal(str)

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.demo_pending = False
        self.preflight: PreflightDialog | None = None
        #: The problem the status line was last about, and that line.
        self._validation_line: tuple[FieldProblem, str] | None = None
        window.editor.problems_changed.connect(self._on_editor_problems_changed)
        #: This runtime's `trainer doctor` report, once the window's runtime check has run.
        self.runtime_report: DoctorReport | None = None
        # Another target has other capabilities (a cloud GPU lifts what this runtime lacks).
        window.editor.launch_target_changed.connect(lambda _t: self.update_runtime_fit())
        from desktop.views.dataset_watch import DatasetFieldWatcher

        #: Checks the dataset paths as they are typed (errors on the fields, notes).
        self.dataset_watch = DatasetFieldWatcher(window.editor, window.ops)
        self.demo_ready.connect(lambda _folder: self.dataset_watch.recheck())  # its data exists now
        from desktop.views.model_pull import ModelPullPanel

        #: The Pull button beside the model field (a Hub model fetched ahead of the run).
        self.model_pull = ModelPullPanel(
            window.editor, window.ops, lambda: bool(getattr(window.service, "offline", False))
        )
        from desktop.views.dataset_watch import AutoPreflight
        from desktop.views.preflight import DataCheckSummary

        #: The quick preflight's verdict under the dataset field (problems, skip button).
        self.data_summary = DataCheckSummary()
        dataset_section: Any = window.editor.section("Dataset")
        dataset_section.form.addRow("", self.data_summary)
        self.auto_preflight = AutoPreflight(
            window.editor,
            window.ops,
            self.dataset_watch,
            self.data_summary,
            self.preflight_request,
            lambda path, **kw: window.service.runtime.check_data(path, **kw),
        )

    # -- presets and the demo -------------------------------------------------------------------

    def fill_presets_menu(self, menu: QMenu) -> None:
        """One action per bundled preset."""
        for preset in operations.list_presets():
            action = menu.addAction(preset.title)
            action.setToolTip(preset.description)
            action.setObjectName(f"preset:{preset.name}")
            action.triggered.connect(lambda _c=False, n=preset.name: self.load_preset(n))

    def load_preset(self, name: str) -> None:
        """Load a preset into the editor; the demo's folder is written first when missing.

        The preset is a small file bundled with the app, read here so the editor holds it when
        this returns (callers and tests rely on that).
        """
        w = self.window
        try:
            config = operations.load_preset(name, demo_dir=operations.demo_folder())
        except ConfigError as exc:
            w.bus.error(str(exc))
            return
        w.editor.set_config(config)
        for preset in operations.list_presets():
            if preset.name == name and preset.gpu in GPUS:
                w.fit_badge.set_gpu(preset.gpu)
        if name == DEMO_PRESET:
            self.ensure_demo()
        w.bus.info(f"preset loaded: {name}")

    def ensure_demo(self) -> None:
        """Write the demo folder in the background if it is missing (Start waits for it)."""
        w = self.window
        demo = operations.demo_folder()
        if (demo / "config.json").exists() and (demo / "model").exists():
            self.demo_ready.emit(str(demo))
            return
        if self.demo_pending:
            return
        self._set_demo_pending(True)
        w.statusBar().showMessage(f"writing the demo model and data to {demo} …")
        runtime = w.service.runtime

        def done(folder: Path) -> None:
            self._set_demo_pending(False)
            w.bus.info(f"the demo is ready in {folder}; press Start to train it on the CPU")
            self.demo_ready.emit(str(folder))

        w.ops.run_in_thread(
            "write the demo",
            runtime.make_demo,
            demo,
            on_done=done,
            on_error=lambda _exc: self._set_demo_pending(False),
        )

    def _set_demo_pending(self, pending: bool) -> None:
        self.demo_pending = pending
        self.demo_pending_changed.emit(pending)

    def set_runtime_report(self, report: DoctorReport | None) -> None:
        """The runtime's `trainer doctor` report (the window's runtime check hands it in):
        what it lacks for the config is then said on the badge and blocks Start."""
        self.runtime_report = report
        self.update_runtime_fit()

    def update_runtime_fit(self) -> None:
        """Say on the badge, and as an editor error that blocks Start, what the launch target
        lacks for the config (CUDA, bf16, bitsandbytes)."""
        w = self.window
        try:
            config = w.editor.config()  # the schema alone: the editor's own errors aside
        except ConfigError:
            blockers: list[str] = []
        else:
            blockers = operations.runtime_blockers(
                config, self.runtime_report, w.editor.launch_target()
            )
        w.fit_badge.set_blockers(blockers)
        w.editor.set_external_error(RUNTIME_ERROR, "\n".join(blockers) or None)

    def update_memory_fit(self, retry: QTimer) -> None:
        """Estimate the editor's config's memory in the background for the fit badge (one
        estimate at a time: while one runs, `retry` is restarted to ask again later)."""
        w = self.window
        self.update_runtime_fit()
        try:
            w.editor.config()
        except ConfigError:
            w.fit_badge.set_estimate(None, "the config is not valid yet")
            return
        if w.ops.is_running("estimate memory"):
            retry.start()
            return
        w.ops.run_in_thread(
            "estimate memory",
            operations.estimate_memory,
            w.editor.config(),
            on_done=lambda est: w.fit_badge.set_estimate(est),
            on_error=lambda exc: w.fit_badge.set_estimate(None, str(exc)),
            quiet=True,
        )

    # -- the last config ------------------------------------------------------------------------

    async def load_last_config(self) -> bool:
        """Put the config remembered at the last close into the editor (read off the UI
        thread); False when there is none or it cannot be used (said on the bus)."""
        import asyncio

        try:
            config = await asyncio.to_thread(operations.read_last_config)
        except FtdeskError as exc:
            self.window.bus.error(f"the last config could not be restored: {exc}")
            return False
        if config is None:
            return False
        self.window.editor.set_config(config)
        return True

    def save_last_config(self) -> None:
        """Remember the editor's config for the next start (only a valid one).

        Blocking on purpose: the window calls it as it closes, when no event loop turn is left
        for a worker to report back; the file is one small JSON.
        """
        w = self.window
        if not w.is_ready or not w.editor.is_valid:
            return
        operations.write_last_config(w.editor.config())

    # -- files ----------------------------------------------------------------------------------

    def open_config(self) -> None:
        """Load a JSON or YAML config into the editor (errors name the field and line)."""
        w = self.window
        path = w.ask_path("open", "Open a training config", "Configs (*.json *.yaml *.yml)")
        if not path:
            return

        def done(config: TrainingConfig) -> None:
            w.editor.set_config(config)
            self.config_file_used.emit(path)  # the recent configs
            w.bus.info(f"opened {path}")

        w.ops.run_in_thread("open the config", operations.import_config, path, on_done=done)

    def save_config(self) -> None:
        """Save the editor's config as JSON or YAML."""
        w = self.window
        if not self.require_valid("save"):
            return
        path = w.ask_path("save", "Save the config", "JSON (*.json);;YAML (*.yaml *.yml)")
        if not path:
            return
        if Path(path).suffix.lower() not in (".json", ".yaml", ".yml"):
            path += ".json"
        w.ops.run_in_thread(
            "save the config",
            operations.export_config,
            w.editor.config(),
            path,
            on_done=self._on_config_saved,
        )

    def _on_config_saved(self, path: Path) -> None:
        self.config_file_used.emit(str(path))  # the recent configs
        self.window.bus.info(f"saved {path}")

    def export_trl(self) -> None:
        """Write the config as a `trl sft --config` YAML."""
        w = self.window
        if not self.require_valid("export"):
            return
        path = w.ask_path("save", "Export a TRL sft config", "YAML (*.yaml *.yml)")
        if not path:
            return
        if Path(path).suffix.lower() not in (".yaml", ".yml"):
            path += ".yaml"

        def done(notes: list[str]) -> None:
            more = f" ({len(notes)} notes at the top of the file)" if notes else ""
            w.bus.info(f"exported {path}; run it with: trl sft --config {Path(path).name}{more}")

        w.ops.run_in_thread(
            "export the TRL config",
            operations.export_trl_sft_yaml,
            w.editor.config(),
            path,
            on_done=done,
        )

    def require_valid(self, what: str) -> bool:
        """True when the editor's config is valid; else say what is wrong on the bus (by the
        field's label; the status line goes once that problem is fixed)."""
        editor = self.window.editor
        if editor.is_valid:
            return True
        problems = editor.problems()
        more = f" (and {len(problems) - 1} more, listed under the toolbar)" if problems[1:] else ""
        message = f"cannot {what} an invalid config: {problems[0].text}{more}"
        self._validation_line = (problems[0], message)
        self.window.bus.error(message)
        return False

    def _on_editor_problems_changed(self) -> None:
        # A status line about a problem must not outlive it.
        if self._validation_line is None:
            return
        problem, message = self._validation_line
        if problem in self.window.editor.problems():
            return
        self._validation_line = None
        bar = self.window.statusBar()
        if message.splitlines()[0] in bar.currentMessage():
            bar.clearMessage()
            bar.setToolTip("")

    # -- preflight ------------------------------------------------------------------------------

    def preflight_dialog(self) -> PreflightDialog:
        """The preflight window (created on first use)."""
        if self.preflight is None:
            from desktop.views.preflight import PreflightDialog

            self.preflight = PreflightDialog(self.window)
            self.preflight.panel.rerun_requested.connect(self.run_preflight)
            self.preflight.panel.record_requested.connect(self._on_preflight_record_requested)
        return self.preflight

    def preflight_request(self) -> dict[str, Any] | None:
        """The `TrainerRuntime.check_data` arguments for the editor's dataset (path first),
        or None without a dataset path."""
        raw = self.window.editor.raw_values()
        data = raw.get("dataset") or {}
        path = data.get("path")
        if not path:
            return None
        model = (raw.get("model") or {}).get("name_or_path")
        field_map = {str(k): str(v) for k, v in (data.get("field_map") or {}).items() if v}
        return {
            "path": str(path),
            "fmt": str(data.get("format") or "auto"),
            "split": str(data["split"]) if data.get("split") else None,
            "field_map": field_map or None,
            "max_length": int(data["max_length"]) if data.get("max_length") else None,
            "all_tokens": data.get("train_on_completions_only") is False,
            # A model is named only when it is a local folder: the check never downloads one.
            "model": str(model) if model and _is_model_folder(str(model)) else None,
        }

    def run_preflight(self) -> None:
        """Open the preflight window and check the dataset in the background."""
        w = self.window
        request = self.preflight_request()
        if request is None:
            label = w.editor.field_label("dataset.path")
            w.bus.error(f"{label}: choose a dataset file first")
            return
        dialog = self.preflight_dialog()
        dialog.show()
        dialog.raise_()
        dialog.panel.set_busy(request["path"])
        runtime = w.service.runtime
        path = request.pop("path")

        def check() -> DataReport:
            report: DataReport = runtime.check_data(path, timeout_s=3600, **request)
            return report

        w.ops.run_in_thread(
            "check the dataset",
            check,
            on_done=dialog.panel.show_report,
            on_error=lambda exc: dialog.panel.show_error(str(exc)),
        )

    def _on_preflight_record_requested(self, line: int) -> None:
        dialog = self.preflight_dialog()
        report = dialog.panel.report
        if report is None:
            return
        path, location = str(report.path), str(report.location or "line")
        self.window.ops.run_in_thread(
            f"read {location} {line}",
            operations.read_record,
            path,
            line,
            location,
            on_done=lambda text: dialog.panel.show_record(line, text),
        )


def _is_model_folder(name_or_path: str) -> bool:
    # A stat on the Qt thread, not a read: the preflight asks for a tokenizer only when the
    # model is a local folder, so a hub name never makes the check download anything.
    return (Path(name_or_path).expanduser() / "config.json").exists()
