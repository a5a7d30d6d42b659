"""The main window: config editor on the left, jobs, chart and log on the right.

The window wires widgets to operations and does no work itself: every launch, cancel, dataset
check, file read or keychain call goes through `Operations` (background task, then UI update or
the error on the message bus). `AppState` is the one state the views read; the `JobService`
feeds it. The work behind the buttons is in helpers the window owns: `ConfigActions` (presets,
files, the last config, the demo, the preflight) and `JobActions` (start, cancel, resume, ...);
the frame is `MainToolBar`, `window_layout` (splitters, their memory) and `status_bar`.

Layout:

    toolbar: [Presets ▾] [Open…] [Save…] [Export TRL YAML…] Target [Local ▾] fit ●
             [Settings…] [Start ▶]
    left:    ConfigEditor (+ [Preflight…] in its Dataset section)
    right:   job table over (chart | log), in splitters
    status:  offline ● · runtime (from `trainer doctor`) · messages

A little over 600 lines: the wiring of every panel (RunPod, Slurm, chat, runs view, menus) meets
here; each panel's own work lives in its module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import (
    QCloseEvent,
    QIcon,
    QPaintEvent,
)
from PySide6.QtWidgets import (
    QMainWindow,
    QPushButton,
    QSplitter,
    QTabWidget,
    QWidget,
)

from desktop.views import operations, window_guides, window_menus
from desktop.views.close_guard import CloseGuard
from desktop.views.config_actions import DEMO_PRESET, ConfigActions
from desktop.views.error_list import ErrorList
from desktop.views.heavy_imports import HEAVY_MODULES, import_heavy_modules
from desktop.views.job_actions import JobActions
from desktop.views.latest_call import latest_call
from desktop.views.operations import window_state_path
from desktop.views.status_bar import WindowStatusBar
from desktop.views.toolbar import MainToolBar
from desktop.views.window_layout import LayoutMemory, Splitters

# Everything below is imported when the window builds its heavy parts, after its first paint
# (asyncio, pydantic models, numpy, pyqtgraph, the job service cost ~0.8 s together): see
# heavy_imports.HEAVY_MODULES.
if TYPE_CHECKING:
    from PySide6.QtWidgets import QSystemTrayIcon

    from desktop.models import Settings
    from desktop.views.chart.widget import LossChart
    from desktop.views.config_editor import ConfigEditor
    from desktop.views.job_table import JobTableView
    from desktop.views.log_view import LogView
    from desktop.views.operations import (
        JobEndNotifier,
        LocalJobsInhibitor,
        MessageBus,
        Operations,
    )
    from desktop.views.preflight import PreflightDialog
    from desktop.views.runs_view import RunsView
    from desktop.views.settings_dialog import SettingsDialog
    from desktop.views.state import AppState
    from desktop.views.theme import ThemeFollower
    from trainer.reports import DoctorReport

__all__ = [
    "DEMO_PRESET",
    "HEAVY_MODULES",
    "MainWindow",
    "icon_path",
    "window_state_path",
]

log = logging.getLogger(__name__)


def icon_path() -> Path:
    """resources/icon.svg (`resource_path`: checkout, wheel and PyInstaller bundle alike)."""
    return operations.resource_path("icon.svg")


SAVE_SETTINGS = "save the settings"


def _save_settings(settings: Settings) -> None:
    operations.save_settings(settings)


class MainWindow(QMainWindow):
    """The app's window over a `JobService`.

    The window is built in two parts so that it appears fast: the constructor makes the
    skeleton (title, toolbar, status bar, splitters with empty panels) from Qt and light
    modules only; `build()` (async, one short step per event-loop turn, heavy imports in a
    worker thread) or `build_now()` (blocking) then makes the job service (when
    `service_factory` is given), the config editor, the job table, the chart and the log view,
    and emits `ready`. `start()` builds first when that has not happened.

    Args:
        service: the job service (its listeners get AppState, the notifier and the sleep
            inhibitor). None with `service_factory`.
        settings: the user's settings (saved when changed in the Settings dialog).
        bus: the message bus (default: a new one); errors on it reach the status bar, bugs a
            traceback dialog.
        ops: the operation runner (default: one on `bus`).
        secret_store: the keychain for the Settings dialog (default: created when opened).
        check_runtime: run `trainer doctor` in the background at start (status bar).
        file_dialog: (mode, caption, filter) -> path or None; mode is "open" or "save"
            (default: QFileDialog; tests replace it).
        service_factory: (bus) -> (service, settings), called during the build when `service`
            is None (the job service's imports are heavy).
        deferred: build the heavy parts later (`build()` / `start()`), not in the constructor.

    Signals:
        closed(): the window was closed (the app then stops watching and exits).
        first_painted(): the window painted itself for the first time.
        ready(): editor, job table, chart and log view exist and are wired.
        started(): `start()` has loaded the jobs and the first config.
        demo_ready(str): the demo folder exists (its path).
        runtime_checked(str): the doctor's summary (or why it failed).
    """

    closed = Signal()
    first_painted = Signal()
    ready = Signal()
    started = Signal()
    demo_ready = Signal(str)
    runtime_checked = Signal(str)

    # Set by the build (declared for the type checker).
    state: AppState
    notifier: JobEndNotifier
    inhibitor: LocalJobsInhibitor
    editor: ConfigEditor
    jobs_view: JobTableView
    chart: LossChart
    runs_view: RunsView
    theme: ThemeFollower
    log_view: LogView

    def __init__(
        self,
        service: Any = None,
        *,
        settings: Settings | None = None,
        bus: MessageBus | None = None,
        ops: Operations | None = None,
        secret_store: Any = None,
        check_runtime: bool = True,
        file_dialog: Callable[[str, str, str], str | None] | None = None,
        service_factory: Callable[[MessageBus], tuple[Any, Settings]] | None = None,
        deferred: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        if service is None and service_factory is None:
            raise ValueError("MainWindow needs a service or a service_factory")
        self.setObjectName("main_window")
        self.setWindowTitle("Finetune Desk")
        self.setWindowIcon(QIcon(str(icon_path())))
        self.service: Any = service
        self.settings: Any = settings or (service.settings if service is not None else None)
        self._service_factory = service_factory
        # The bus and the runner import asyncio: made with the heavy parts unless given.
        self._given_bus, self._given_ops = bus, ops
        self.bus: MessageBus
        self.ops: Operations
        self._secret_store = secret_store
        self._check_runtime = check_runtime
        self._file_dialog = file_dialog or self._qt_file_dialog
        self._doctor: DoctorReport | None = None
        self._closing = False
        self._painted = False
        self.compare_dialog: Any = None  # Batch compare, made when first opened
        #: perf_counter() at "painted" (first paint) and "ready" (heavy parts built).
        self.timings: dict[str, float] = {}
        self._is_ready = False
        self._building = False
        self.layout_memory = LayoutMemory(str(window_state_path()))
        self.qsettings = self.layout_memory.qsettings
        self.tray: QSystemTrayIcon | None = None
        #: The config-file and job actions (made with the heavy parts).
        self.config_actions: ConfigActions
        self.job_actions: JobActions

        # -- skeleton (the first frame): splitters with empty panels, the toolbar --------------
        self.splitters = Splitters()
        self.main_split, self.right_split, self.bottom_split = self.splitters.all()
        self.setCentralWidget(self.splitters.central)
        self.toolbar = MainToolBar(self)
        self.addToolBar(self.toolbar)
        self.presets_menu = self.toolbar.presets_menu
        self.target_combo = self.toolbar.target_combo
        self.fit_badge = self.toolbar.fit_badge
        self.start_button = self.toolbar.start_button
        self.toolbar.open_action.triggered.connect(self.open_config)
        self.toolbar.save_action.triggered.connect(self.save_config)
        self.toolbar.export_action.triggered.connect(self.export_trl)
        self.toolbar.settings_action.triggered.connect(self.open_settings)
        self.fit_badge.gpu_changed.connect(lambda *_: self._update_memory_fit())
        self.start_button.clicked.connect(self.start_job)
        self.status_bar = WindowStatusBar(self)
        self.setStatusBar(self.status_bar)
        self.offline_label = self.status_bar.offline_label
        self.runtime_label = self.status_bar.runtime_label
        self._update_offline_label()
        self._fit_timer = QTimer(self)
        self._fit_timer.setSingleShot(True)
        self._fit_timer.setInterval(250)
        self._fit_timer.timeout.connect(self._update_memory_fit)

        self.resize(1500, 900)
        self.layout_memory.restore(self, self.fit_badge)
        if not deferred:
            self.build_now()

    # -- construction ---------------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        """True once the heavy parts are built (`ready` was emitted)."""
        return self._is_ready

    def paintEvent(self, event: QPaintEvent) -> None:
        """Paint; the first time, say so (`first_painted`: start-up is measured up to here)."""
        super().paintEvent(event)
        if not self._painted:
            self._painted = True
            self.timings["painted"] = time.perf_counter()
            self.first_painted.emit()

    def build_now(self) -> None:
        """Build the heavy parts now (blocking)."""
        if self._is_ready or self._building:
            return
        self._building = True
        for _step in self._build_steps():
            pass

    async def build(self) -> None:
        """Build the heavy parts without freezing the window: heavy imports in a worker
        thread, then one short step per event-loop turn (the window repaints in between)."""
        import asyncio

        if self._is_ready:
            return
        if self._building:  # another caller builds: wait for it
            while not self._is_ready and not self._closing:
                await asyncio.sleep(0.01)
            return
        self._building = True
        await asyncio.get_running_loop().run_in_executor(None, import_heavy_modules)
        for name in self._build_steps():
            if self._closing:
                log.info("window closed while building (%s)", name)
                return
            await asyncio.sleep(0)

    def _build_steps(self) -> Iterator[str]:
        """The heavy parts, one step per `next()`; the last step emits `ready`."""
        from desktop.views.newest_writer import NewestWriter
        from desktop.views.operations import MessageBus, Operations
        from desktop.views.state import AppState

        self.bus = self._given_bus or MessageBus(self)
        self.ops = self._given_ops or Operations(self.bus, parent=self)
        # Applied settings reach settings.json newest last, even while a save still writes.
        self.settings_saver: NewestWriter[Settings] = NewestWriter(
            self.ops, SAVE_SETTINGS, _save_settings
        )
        self.bus.error_posted.connect(self._on_bus_error_posted)
        self.bus.info_posted.connect(self._on_bus_info_posted)
        self.bus.bug_reported.connect(self._on_bus_bug_reported)
        if self.service is None:
            assert self._service_factory is not None
            self.service, settings = self._service_factory(self.bus)
            self.settings = self.settings or settings
            self._update_offline_label()
        self.state = AppState(self)
        self.service.add_listener(self.state)
        operations.serve_history(self.state, self.service, self.ops)  # a job's, when selected
        from PySide6.QtWidgets import QSystemTrayIcon

        if QSystemTrayIcon.isSystemTrayAvailable() and QSystemTrayIcon.supportsMessages():
            self.tray = QSystemTrayIcon(self.windowIcon(), self)
            self.tray.setToolTip("Finetune Desk")
            self.tray.show()
        self.notifier = operations.job_end_notifier(self._tray_message if self.tray else None)
        self.service.add_listener(self.notifier)
        self.inhibitor = operations.local_jobs_inhibitor()
        self.service.add_listener(self.inhibitor)
        yield "service"

        from desktop.views.config_editor import ConfigEditor

        self.editor = ConfigEditor(parent=self)
        self.error_list = ErrorList(self)
        self.error_list.field_requested.connect(self._on_error_list_field_requested)
        self.splitters.add_banner(self.error_list)
        self.preflight_button = QPushButton("Preflight…")
        self.preflight_button.setObjectName("preflight_button")
        self.preflight_button.setToolTip(
            "Check the dataset with the trainer runtime: format, every problem with its line, "
            "token lengths against max length, and one rendered example."
        )
        self.preflight_button.clicked.connect(self.run_preflight)
        self.config_actions = ConfigActions(self)
        self.config_actions.demo_ready.connect(self.demo_ready)
        self.config_actions.demo_pending_changed.connect(self._on_config_actions_demo_pending)
        self.job_actions = JobActions(self)
        self.close_guard = CloseGuard(self)
        dataset_section: Any = self.editor.section("Dataset")
        dataset_section.form.addRow("", self.preflight_button)
        from desktop.views.slurm_panel import SlurmJobDetails, SlurmPanel

        self.slurm_panel = SlurmPanel(self.settings, self.ops, self.editor)
        self.slurm_panel.install(self.editor)  # the "Slurm" target and its options
        self.slurm_panel.options_changed.connect(
            lambda o: self.apply_settings(self.settings.model_copy(update={"slurm": o}))
        )
        self._replace(self.main_split, 0, self.editor)
        from desktop.views.runpod_panel import install_runpod

        self.runpod_panel, self.orphan_banner = install_runpod(self)
        yield "editor"

        from desktop.views.job_table import JobTableView

        self.jobs_view = JobTableView(self.state, self)
        self.slurm_details = SlurmJobDetails.below(self.jobs_view, self.state)
        self._replace(self.right_split, 0, self.jobs_view)
        yield "jobs"

        from desktop.views.chart.widget import LossChart
        from desktop.views.runs_view import RunsView, chart_tabs

        self.chart = LossChart(self.state, self)
        self.runs_view = RunsView(self.state, self)
        self.chart_tabs = chart_tabs(self.state, self.chart, self.runs_view)
        self._replace(self.bottom_split, 0, self.chart_tabs)
        yield "chart"

        from desktop.views.log_view import LogView

        self.log_view = LogView(self.state, self)
        from desktop.views.chat_panel import ChatPanel  # the Chat tab beside the log

        self.chat_panel = ChatPanel(self.state, self.ops, lambda: self.service.runtime, self)
        self.chat_panel.compare_requested.connect(self.open_compare)
        self.log_tabs = QTabWidget(self)
        self.log_tabs.addTab(self.log_view, "Log")
        self.log_tabs.addTab(self.chat_panel, "Chat")
        self._replace(self.bottom_split, 1, self.log_tabs)
        yield "log"

        self._fill_toolbar()
        self.editor.problems_changed.connect(self.update_start_enabled)
        self.editor.config_changed.connect(self._on_editor_config_changed)
        self.editor.launch_target_changed.connect(self._on_editor_launch_target_changed)
        self.job_actions.connect_table()
        self.chart_hint, self.log_hint = window_guides.install_window_guides(self)
        window_menus.install_window_menus(self)  # menus, shortcuts, drops, recent configs
        self._is_ready = True
        self._building = False
        self.timings["ready"] = time.perf_counter()
        self.update_start_enabled()
        self.ready.emit()
        yield "ready"

    def _replace(self, splitter: QSplitter, index: int, widget: QWidget) -> None:
        self.splitters.replace(splitter, index, widget, visible=self.isVisible())

    def _fill_toolbar(self) -> None:
        """Presets and targets, which come from the config schema (part of the build)."""
        self.config_actions.fill_presets_menu(self.presets_menu)
        for i in range(self.editor.target_combo.count()):
            self.target_combo.addItem(
                self.editor.target_combo.itemText(i), self.editor.target_combo.itemData(i)
            )
        self._on_editor_launch_target_changed(self.editor.launch_target())
        self.target_combo.currentIndexChanged.connect(self._on_target_combo_changed)

    def _update_offline_label(self) -> None:
        if self.service is not None:
            self.status_bar.show_offline(self.service.offline)

    # -- start-up -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build (when not yet), then load the jobs (reattaching to running ones) and the first
        config. A job's metrics are read when it is selected (`operations.serve_history`)."""
        await self.build()
        if self._closing:
            return
        self.layout_memory.restore_splitters(self.splitters)
        await self.service.start()
        if not await self.config_actions.load_last_config():
            self.load_preset(DEMO_PRESET)
        if self._check_runtime:
            self.check_runtime()
        self.orphan_banner.check()  # RunPod pods no job owns (quiet without a key)
        self.started.emit()

    def check_runtime(self) -> None:
        """Run `trainer doctor --json` in the background; the status bar shows the result.

        The last verdict is dropped now; a check asked for while one runs (the interpreter
        changed) runs after it, and only its answer is shown and used (`LatestCall`)."""
        self._doctor = None
        self.config_actions.set_runtime_report(None)
        self.runtime_label.setText("runtime: checking …")
        self.runtime_label.setToolTip("")

        def done(report: DoctorReport) -> None:
            self._doctor = report
            self.config_actions.set_runtime_report(report)
            self.runtime_checked.emit(self.status_bar.show_runtime(report))

        def failed(exc: BaseException) -> None:
            self.status_bar.show_runtime_error(str(exc))
            self.runtime_checked.emit(str(exc))

        latest_call(self.ops, "check the trainer runtime").request(
            self.service.runtime.doctor, on_done=done, on_error=failed
        )

    # -- editor ---------------------------------------------------------------------------------

    def update_start_enabled(self, *_args: object) -> None:
        """Enable Start when the config has no problem and the demo is not being written; the
        error list shows every problem (the tooltip adds each one's config key)."""
        if not self._is_ready:
            return
        problems = [(p.paths[0] if p.paths else "", p.text) for p in self.editor.problems()]
        self.error_list.set_problems(problems)
        reasons = [f"{text} [{path}]" if path else text for path, text in problems]
        self.toolbar.show_start_state(reasons, self.config_actions.demo_pending)

    def _on_config_actions_demo_pending(self, pending: bool) -> None:
        self.update_start_enabled()
        if not pending:
            self._update_memory_fit()

    def _on_error_list_field_requested(self, path: str) -> None:
        if path:
            self.editor.focus_field(path)

    def _on_editor_config_changed(self) -> None:
        self._fit_timer.start()

    def _update_memory_fit(self) -> None:
        if self._is_ready:
            self.config_actions.update_memory_fit(self._fit_timer)

    def _on_target_combo_changed(self, _index: int) -> None:
        target = self.target_combo.currentData()
        if target and self.editor.launch_target() != target:
            self.editor.set_launch_target(str(target))

    def _on_editor_launch_target_changed(self, target: str) -> None:
        index = self.target_combo.findData(target)
        if index >= 0 and index != self.target_combo.currentIndex():
            self.target_combo.setCurrentIndex(index)

    # -- files ----------------------------------------------------------------------------------

    def _qt_file_dialog(self, mode: str, caption: str, filters: str) -> str | None:
        from PySide6.QtWidgets import QFileDialog

        if mode == "open":
            path, _ = QFileDialog.getOpenFileName(self, caption, "", filters)
        else:
            path, _ = QFileDialog.getSaveFileName(self, caption, "", filters)
        return path or None

    def ask_path(self, mode: str, caption: str, filters: str) -> str | None:
        """Ask for a file path ("open" or "save"); None when the person cancels."""
        return self._file_dialog(mode, caption, filters)

    # -- actions (the helpers do the work; these names are the window's public API) -------------

    def open_config(self) -> None:
        """Load a JSON or YAML config into the editor (errors name the field and line)."""
        if self._is_ready:
            self.config_actions.open_config()

    def save_config(self) -> None:
        """Save the editor's config as JSON or YAML."""
        if self._is_ready:
            self.config_actions.save_config()

    def export_trl(self) -> None:
        """Write the config as a `trl sft --config` YAML."""
        if self._is_ready:
            self.config_actions.export_trl()

    def load_preset(self, name: str) -> None:
        """Load a preset into the editor; the demo's folder is written first when missing."""
        self.config_actions.load_preset(name)

    def save_last_config(self) -> None:
        """Remember the editor's config for the next start (only a valid one)."""
        if self._is_ready:
            self.config_actions.save_last_config()

    def preflight_dialog(self) -> PreflightDialog:
        """The preflight window (created on first use)."""
        return self.config_actions.preflight_dialog()

    def run_preflight(self) -> None:
        """Open the preflight window and check the dataset in the background."""
        self.config_actions.run_preflight()

    def start_job(self) -> None:
        """Launch the editor's config on the chosen target (checks run first, off the UI)."""
        if self._is_ready:
            if self.editor.launch_target() == "runpod":  # the panel's GPUs, cloud and limits
                self.apply_settings(
                    self.settings.model_copy(update={"runpod": self.runpod_panel.options()})
                )
            self.job_actions.start_job()

    def cancel_job(self, job_id: str) -> None:
        """Cancel a job (it checkpoints first)."""
        self.job_actions.cancel_job(job_id)

    # -- settings -------------------------------------------------------------------------------

    def secret_store(self) -> Any:
        """The keychain (created on first use)."""
        if self._secret_store is None:
            self._secret_store = operations.SecretStore()
        return self._secret_store

    def settings_dialog(self) -> SettingsDialog:
        """A new Settings dialog, its keychain status being read."""
        from desktop.views.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self.ops, self.secret_store(), parent=self)
        if self._doctor is not None:
            dialog.show_doctor(self._doctor)
        dialog.refresh_keys()
        return dialog

    def open_settings(self) -> SettingsDialog:
        """Show the Settings dialog (window-modal); OK applies and saves what was changed.

        `open()`, not `exec()`: a nested event loop would run the asyncio tasks (the keychain
        reads, the doctor) re-entrantly under qasync.
        """
        dialog = self.settings_dialog()
        dialog.accepted.connect(lambda: self.apply_settings(dialog.settings()))
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    def apply_settings(self, settings: Settings) -> None:
        """Apply new settings to the job service (the next launch uses the offline mode, the
        trainer Python, slots and poll interval; running jobs are untouched) and save them.

        The offline mode changes only when the setting did: a window started with `--offline`
        stays offline when the person saves other settings.
        """
        old = self.settings
        self.settings = settings
        self.theme.apply(settings.theme)
        offline = settings.offline if settings.offline != old.offline else self.service.offline
        self.service.apply_settings(settings, offline=offline)
        self.settings_saver.save(settings)
        if settings.offline != old.offline:
            self._update_offline_label()
            self.bus.info(
                "offline mode is on" if settings.offline else "offline mode is off (new jobs)"
            )
        if settings.trainer_python != old.trainer_python:
            self.bus.info("the trainer runtime applies to jobs started from now on")
            if self._check_runtime:
                self.check_runtime()

    def _flush_settings(self) -> None:
        """At close: the newest applied settings reach the disk even when their background
        save has not run yet (the operations are cancelled next)."""
        from desktop.views.operations import FtdeskError

        try:
            self.settings_saver.flush()
        except FtdeskError as exc:  # the window is going: the log keeps the reason
            log.warning("%s", exc)

    # -- messages -------------------------------------------------------------------------------

    def _on_bus_error_posted(self, message: str) -> None:
        self.status_bar.show_error(message)

    def _on_bus_info_posted(self, message: str) -> None:
        self.status_bar.show_info(message)

    def _on_bus_bug_reported(self, summary: str, text: str) -> None:
        self.statusBar().showMessage(f"unexpected error: {summary}", 15_000)
        from desktop.views.operations import show_traceback_dialog

        show_traceback_dialog(self, summary, text)

    def _tray_message(self, title: str, body: str) -> None:
        if self.tray is not None:
            self.tray.showMessage(title, body, self.windowIcon(), 10_000)

    def open_compare(self) -> Any:
        """Show Batch compare (one dialog, reused) for the jobs selected in the table."""
        from desktop.views.compare_panel import ComparePanel

        if self.compare_dialog is None:
            runtime = lambda: self.service.runtime  # noqa: E731
            self.compare_dialog = ComparePanel(self.state, self.ops, runtime, self)
        self.compare_dialog.set_jobs(self.state.selected_job_ids)
        self.compare_dialog.show()
        self.compare_dialog.raise_()
        return self.compare_dialog

    # -- layout memory --------------------------------------------------------------------------

    def save_layout(self) -> None:
        """Remember geometry, splitter sizes and the chosen GPU."""
        self.layout_memory.save(self, self.splitters, self.fit_badge)

    def closeEvent(self, event: QCloseEvent) -> None:
        """Remember the layout and config; jobs keep running (the next start reattaches). With
        billed cloud jobs active, first ask whether to leave them running (`CloseGuard`)."""
        if not self._closing and self._is_ready and not self.close_guard.allows_close():
            event.ignore()
            return
        if not self._closing:
            self._closing = True
            self._fit_timer.stop()
            self.save_layout()
            self.save_last_config()
            if self._is_ready:
                self._flush_settings()
                self.inhibitor.close()
                self.chat_panel.shutdown()  # no model server outlives the window
                if self.compare_dialog is not None:
                    self.compare_dialog.shutdown()
            if self._is_ready and self.config_actions.preflight is not None:
                self.config_actions.preflight.close()
            if self.tray is not None:
                self.tray.hide()
            self.closed.emit()
        event.accept()
