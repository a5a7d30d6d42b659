"""The main window: config editor on the left, jobs, chart and log on the right.

The window wires widgets to operations and does no work itself: every launch, cancel, dataset
check, file read or keychain call goes through `Operations` (background task, then UI update or
the error on the message bus). `AppState` is the one state the views read; the `JobService`
feeds it.

Layout (see DESIGN.md "The GUI"):

    toolbar: [Presets ▾] [Open…] [Save…] [Export TRL YAML…] Target [Local ▾] fit ●
             [Settings…] [Start ▶]
    left:    ConfigEditor (+ [Preflight…] in its Dataset section)
    right:   job table over (chart | log), in splitters
    status:  offline ● · runtime (from `trainer doctor`) · messages
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QIcon,
    QKeySequence,
    QPaintEvent,
)
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QLabel,
    QMainWindow,
    QMenu,
    QPushButton,
    QSplitter,
    QToolBar,
    QToolButton,
    QWidget,
)

from desktop.core.errors import ConfigError, FtdeskError
from desktop.core.memory_fit import GPUS, MemoryEstimate, estimate_for_config, read_model_config
from desktop.core.paths import data_home
from desktop.views.memory_badge import MemoryFitBadge

# Everything below is imported when the window builds its heavy parts, after its first paint
# (asyncio, pydantic models, numpy, pyqtgraph, the job service cost ~0.8 s together): see
# HEAVY_MODULES.
if TYPE_CHECKING:
    from PySide6.QtWidgets import QSystemTrayIcon

    from desktop.core.notify import JobEndNotifier
    from desktop.core.sleep_inhibit import LocalJobsInhibitor
    from desktop.models import Job, Settings
    from desktop.views.chart.widget import LossChart
    from desktop.views.config_editor import ConfigEditor
    from desktop.views.job_table import JobTableView
    from desktop.views.log_view import LogView
    from desktop.views.operations import MessageBus, Operations
    from desktop.views.preflight import PreflightDialog
    from desktop.views.settings_dialog import SettingsDialog
    from desktop.views.state import AppState
    from trainer.config import TrainingConfig

__all__ = [
    "DEMO_PRESET",
    "HEAVY_MODULES",
    "MainWindow",
    "icon_path",
    "make_demo",
    "window_state_path",
]

log = logging.getLogger(__name__)

DEMO_PRESET = "demo-cpu"
_LAST_CONFIG = "last_config.json"
_STATE_VERSION = 1
# Editor | right; jobs (about six rows) over chart | log; for a 1500x900 window.
_DEFAULT_SIZES = {
    "main_split": [470, 1030],
    "right_split": [200, 610],
    "bottom_split": [650, 380],
}

#: Modules the window needs only once it is on screen; `MainWindow.build()` imports them in a
#: worker thread (pure Python imports; no widget is created off the GUI thread).
HEAVY_MODULES = (
    "asyncio",
    "desktop.views.operations",
    "numpy",
    "pydantic",
    "trainer.config",
    "desktop.models",
    "desktop.core.config_io",
    "desktop.views.state",
    "desktop.core.service",
    "desktop.core.notify",
    "desktop.core.sleep_inhibit",
    "pyqtgraph",
    "desktop.views.config_editor",
    "desktop.views.job_table",
    "desktop.views.log_view",
    "desktop.views.chart.widget",
)


def window_state_path() -> Path:
    """`data_home()/window.ini`: geometry, splitters, the chosen GPU."""
    return data_home() / "window.ini"


def import_heavy_modules() -> None:
    """Import `HEAVY_MODULES` (safe in a worker thread: module code only, no widgets)."""
    import importlib

    for name in HEAVY_MODULES:
        importlib.import_module(name)


def _run_trainer_json(*args: Any, **kwargs: Any) -> Any:
    from desktop.views.operations import run_trainer_json

    return run_trainer_json(*args, **kwargs)


def _read_record(*args: Any) -> Any:
    from desktop.views.operations import read_record

    return read_record(*args)


def icon_path() -> Path:
    """resources/icon.svg (inside a PyInstaller bundle too)."""
    bundle = getattr(sys, "_MEIPASS", None)
    root = Path(bundle) if bundle else Path(__file__).resolve().parents[2]
    return root / "resources" / "icon.svg"


def make_demo(python: str, folder: Path, timeout_s: float = 600.0) -> Path:
    """Write the demo (tiny model, data, config) with `python -m trainer make-demo` (blocking).

    Raises:
        RuntimeNotReadyError: the runtime could not write it.
    """
    import subprocess

    from desktop.core.errors import RuntimeNotReadyError

    folder.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            [python, "-m", "trainer", "make-demo", str(folder)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeNotReadyError(
            f"cannot write the demo with {python}: {exc}; check the runtime in Settings"
        ) from exc
    if proc.returncode != 0 or not (folder / "config.json").exists():
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeNotReadyError(
            f"writing the demo to {folder} failed (exit {proc.returncode}): {tail}; check the "
            "runtime in Settings"
        )
    return folder


def _placeholder(name: str) -> QFrame:
    """An empty panel standing where a heavy widget will be (the first frame's skeleton)."""
    frame = QFrame()
    frame.setObjectName(f"{name}_placeholder")
    frame.setFrameShape(QFrame.Shape.StyledPanel)
    return frame


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
        self._demo_pending = False
        self._doctor: dict[str, Any] | None = None
        self._logs_loaded: set[str] = set()
        self._closing = False
        self._painted = False
        #: perf_counter() at "painted" (first paint) and "ready" (heavy parts built).
        self.timings: dict[str, float] = {}
        self._is_ready = False
        self._building = False
        self.qsettings = QSettings(str(window_state_path()), QSettings.Format.IniFormat)
        self.tray: QSystemTrayIcon | None = None
        self.preflight: PreflightDialog | None = None

        # -- skeleton (the first frame): splitters with empty panels ----------------------------
        self.main_split = QSplitter(Qt.Orientation.Horizontal)
        self.main_split.setObjectName("main_split")
        self.right_split = QSplitter(Qt.Orientation.Vertical)
        self.right_split.setObjectName("right_split")
        self.bottom_split = QSplitter(Qt.Orientation.Horizontal)
        self.bottom_split.setObjectName("bottom_split")
        self.bottom_split.addWidget(_placeholder("chart"))
        self.bottom_split.addWidget(_placeholder("log"))
        self.bottom_split.setStretchFactor(0, 3)
        self.bottom_split.setStretchFactor(1, 2)
        self.right_split.addWidget(_placeholder("jobs"))
        self.right_split.addWidget(self.bottom_split)
        self.right_split.setStretchFactor(0, 1)
        self.right_split.setStretchFactor(1, 3)
        self.main_split.addWidget(_placeholder("editor"))
        self.main_split.addWidget(self.right_split)
        self.main_split.setStretchFactor(0, 2)
        self.main_split.setStretchFactor(1, 5)
        for splitter in (self.main_split, self.right_split, self.bottom_split):
            splitter.setSizes(_DEFAULT_SIZES[splitter.objectName()])
        self.setCentralWidget(self.main_split)

        self._build_toolbar()
        self._build_status_bar()
        self._fit_timer = QTimer(self)
        self._fit_timer.setSingleShot(True)
        self._fit_timer.setInterval(250)
        self._fit_timer.timeout.connect(self._update_memory_fit)

        self.resize(1500, 900)
        self._restore_layout()
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
        from desktop.core.notify import JobEndNotifier, make_sender
        from desktop.core.sleep_inhibit import LocalJobsInhibitor
        from desktop.views.operations import MessageBus, Operations
        from desktop.views.state import AppState

        self.bus = self._given_bus or MessageBus(self)
        self.ops = self._given_ops or Operations(self.bus, parent=self)
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
        from PySide6.QtWidgets import QSystemTrayIcon

        if QSystemTrayIcon.isSystemTrayAvailable() and QSystemTrayIcon.supportsMessages():
            self.tray = QSystemTrayIcon(self.windowIcon(), self)
            self.tray.setToolTip("Finetune Desk")
            self.tray.show()
        self.notifier = JobEndNotifier(make_sender(self._tray_message if self.tray else None))
        self.service.add_listener(self.notifier)
        self.inhibitor = LocalJobsInhibitor()
        self.service.add_listener(self.inhibitor)
        yield "service"

        from desktop.views.config_editor import ConfigEditor

        self.editor = ConfigEditor(parent=self)
        self.preflight_button = QPushButton("Preflight…")
        self.preflight_button.setObjectName("preflight_button")
        self.preflight_button.setToolTip(
            "Check the dataset with the trainer runtime: format, every problem with its line, "
            "token lengths against max length, and one rendered example."
        )
        self.preflight_button.clicked.connect(self.run_preflight)
        dataset_section: Any = self.editor.section("Dataset")
        dataset_section.form.addRow("", self.preflight_button)
        self._replace(self.main_split, 0, self.editor)
        yield "editor"

        from desktop.views.job_table import JobTableView

        self.jobs_view = JobTableView(self.state, self)
        self._replace(self.right_split, 0, self.jobs_view)
        yield "jobs"

        from desktop.views.chart.widget import LossChart

        self.chart = LossChart(self.state, self)
        self._replace(self.bottom_split, 0, self.chart)
        yield "chart"

        from desktop.views.log_view import LogView

        self.log_view = LogView(self.state, self)
        self._replace(self.bottom_split, 1, self.log_view)
        yield "log"

        self._fill_toolbar()
        self.editor.validity_changed.connect(self._update_start_enabled)
        self.editor.config_changed.connect(self._on_editor_config_changed)
        self.editor.launch_target_changed.connect(self._on_editor_launch_target_changed)
        self.jobs_view.cancel_requested.connect(self.cancel_job)
        self.jobs_view.resume_requested.connect(self.resume_job)
        self.jobs_view.duplicate_requested.connect(self.duplicate_job)
        self.jobs_view.open_output_requested.connect(self.open_output)
        self.jobs_view.show_log_requested.connect(self.show_log)
        self.jobs_view.delete_requested.connect(self.delete_job)
        self.state.selection_changed.connect(self._on_state_selection_changed)
        self._is_ready = True
        self._building = False
        self.timings["ready"] = time.perf_counter()
        self._update_start_enabled()
        self.ready.emit()
        yield "ready"

    def _replace(self, splitter: QSplitter, index: int, widget: QWidget) -> None:
        # Before the first layout sizes() says nothing useful: keep the defaults then.
        sizes = splitter.sizes() if self.isVisible() else _DEFAULT_SIZES[splitter.objectName()]
        old = splitter.replaceWidget(index, widget)
        if old is not None:
            old.hide()
            old.deleteLater()
        splitter.setSizes(sizes)

    def _build_toolbar(self) -> None:
        bar = QToolBar("Main")
        bar.setObjectName("main_toolbar")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.addToolBar(bar)

        self.presets_menu = QMenu("Presets", self)
        self.presets_menu.setToolTipsVisible(True)
        presets_button = QToolButton()
        presets_button.setObjectName("presets_button")
        presets_button.setText("Presets")
        presets_button.setMenu(self.presets_menu)
        presets_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        bar.addWidget(presets_button)

        self.open_action = QAction("Open…", self)
        self.open_action.setShortcut(QKeySequence.StandardKey.Open)
        self.open_action.setToolTip("Load a training config (JSON or YAML)")
        self.open_action.triggered.connect(self.open_config)
        bar.addAction(self.open_action)
        self.save_action = QAction("Save…", self)
        self.save_action.setShortcut(QKeySequence.StandardKey.Save)
        self.save_action.setToolTip("Save the config as JSON or YAML")
        self.save_action.triggered.connect(self.save_config)
        bar.addAction(self.save_action)
        self.export_action = QAction("Export TRL YAML…", self)
        self.export_action.setToolTip(
            "Write a `trl sft --config` file with the same effective hyperparameters"
        )
        self.export_action.triggered.connect(self.export_trl)
        bar.addAction(self.export_action)
        bar.addSeparator()

        bar.addWidget(QLabel(" Target "))
        self.target_combo = QComboBox()
        self.target_combo.setObjectName("toolbar_target")
        self.target_combo.setToolTip("Where the job runs")
        self.target_combo.setMinimumContentsLength(10)
        bar.addWidget(self.target_combo)
        bar.addSeparator()
        self.fit_badge = MemoryFitBadge(parent=self)
        self.fit_badge.gpu_changed.connect(lambda *_: self._update_memory_fit())
        bar.addWidget(self.fit_badge)

        spacer = QWidget()
        spacer.setSizePolicy(spacer.sizePolicy().Policy.Expanding, spacer.sizePolicy().Policy.Fixed)
        bar.addWidget(spacer)
        self.settings_action = QAction("Settings…", self)
        self.settings_action.setShortcut(QKeySequence.StandardKey.Preferences)
        self.settings_action.triggered.connect(self.open_settings)
        bar.addAction(self.settings_action)
        self.start_button = QPushButton("Start ▶")
        self.start_button.setObjectName("start_button")
        self.start_button.setDefault(True)
        self.start_button.setMinimumWidth(96)
        self.start_button.setEnabled(False)
        self.start_button.setToolTip("Loading …")
        self.start_button.setStyleSheet(
            "QPushButton { background: #2e7d32; color: white; font-weight: bold; "
            "padding: 4px 14px; border-radius: 3px; }"
            "QPushButton:disabled { background: #b9c7b9; color: #eeeeee; }"
        )
        self.start_button.clicked.connect(self.start_job)
        bar.addWidget(self.start_button)

    def _fill_toolbar(self) -> None:
        """Presets and targets, which come from the config schema (part of the build)."""
        from desktop.core.config_io import list_presets

        for preset in list_presets():
            action = self.presets_menu.addAction(preset.title)
            action.setToolTip(preset.description)
            action.setObjectName(f"preset:{preset.name}")
            action.triggered.connect(lambda _c=False, n=preset.name: self.load_preset(n))
        for i in range(self.editor.target_combo.count()):
            self.target_combo.addItem(
                self.editor.target_combo.itemText(i), self.editor.target_combo.itemData(i)
            )
        self._on_editor_launch_target_changed(self.editor.launch_target())
        self.target_combo.currentIndexChanged.connect(self._on_target_combo_changed)

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        self.offline_label = QLabel()
        self.offline_label.setObjectName("offline_status")
        self.runtime_label = QLabel("runtime: checking …")
        self.runtime_label.setObjectName("runtime_status")
        status.addPermanentWidget(self.offline_label)
        status.addPermanentWidget(self.runtime_label)
        self._update_offline_label()

    def _update_offline_label(self) -> None:
        if self.service is None:
            return
        if self.service.offline:
            self.offline_label.setText("<span style='color:#e0a800'>●</span> offline")
            self.offline_label.setToolTip("Offline mode: no network; local jobs only.")
        else:
            self.offline_label.setText("<span style='color:#2e9e44'>●</span> online")
            self.offline_label.setToolTip("Online. Offline mode is in Settings (or --offline).")

    # -- start-up -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build (when not yet), then load the jobs (reattaching to running ones), their
        metrics, and the first config."""
        await self.build()
        if self._closing:
            return
        self._restore_splitters()
        await self.service.start(with_history=True)
        if not self._load_last_config():
            self.load_preset(DEMO_PRESET)
        if self._check_runtime:
            self.check_runtime()
        self.started.emit()

    def _last_config_path(self) -> Path:
        return data_home() / _LAST_CONFIG

    def _load_last_config(self) -> bool:
        from desktop.core.config_io import import_config

        path = self._last_config_path()
        if not path.exists():
            return False
        try:
            config = import_config(path)
        except FtdeskError as exc:
            self.bus.error(f"the last config could not be restored: {exc}")
            return False
        self.editor.set_config(config)
        return True

    def save_last_config(self) -> None:
        """Remember the editor's config for the next start (only a valid one)."""
        if not self._is_ready or not self.editor.is_valid:
            return
        from desktop.core.config_io import export_config

        try:
            export_config(self.editor.config(), self._last_config_path())
        except FtdeskError as exc:
            log.warning("cannot remember the last config: %s", exc)

    def demo_folder(self) -> Path:
        """Where the demo lives: `data_home()/demo`."""
        return data_home() / "demo"

    def load_preset(self, name: str) -> None:
        """Load a preset into the editor; the demo's folder is written first when missing."""
        from desktop.core.config_io import list_presets, load_preset

        demo = self.demo_folder()
        try:
            config = load_preset(name, demo_dir=demo)
        except ConfigError as exc:
            self.bus.error(str(exc))
            return
        self.editor.set_config(config)
        for preset in list_presets():
            if preset.name == name and preset.gpu in GPUS:
                self.fit_badge.set_gpu(preset.gpu)
        if name == DEMO_PRESET:
            self.ensure_demo()
        self.bus.info(f"preset loaded: {name}")

    def ensure_demo(self) -> None:
        """Write the demo folder in the background if it is missing (Start waits for it)."""
        demo = self.demo_folder()
        if (demo / "config.json").exists() and (demo / "model").exists():
            self.demo_ready.emit(str(demo))
            return
        if self._demo_pending:
            return
        self._demo_pending = True
        self._update_start_enabled()
        self.statusBar().showMessage(f"writing the demo model and data to {demo} …")

        def done(folder: Path) -> None:
            self._demo_pending = False
            self._update_start_enabled()
            self._update_memory_fit()
            self.bus.info(f"the demo is ready in {folder}; press Start to train it on the CPU")
            self.demo_ready.emit(str(folder))

        def failed(_exc: BaseException) -> None:
            self._demo_pending = False
            self._update_start_enabled()

        self.ops.run_in_thread(
            "write the demo",
            make_demo,
            self.trainer_python(),
            demo,
            on_done=done,
            on_error=failed,
        )

    def trainer_python(self) -> str:
        """The interpreter that runs the trainer runtime."""
        return self.settings.trainer_python or sys.executable

    def check_runtime(self) -> None:
        """Run `trainer doctor --json` in the background; the status bar shows the result."""

        from desktop.views.settings_dialog import describe_doctor

        def done(report: dict[str, Any]) -> None:
            self._doctor = report
            text = describe_doctor(report).splitlines()[0]
            self.runtime_label.setText(f"runtime: {text}")
            problems = report.get("problems") or []
            warnings = report.get("warnings") or []
            self.runtime_label.setToolTip("\n".join([*map(str, problems), *map(str, warnings)]))
            self.runtime_checked.emit(text)

        def failed(exc: BaseException) -> None:
            self.runtime_label.setText("runtime: <span style='color:#c9302c'>not usable</span>")
            self.runtime_label.setToolTip(str(exc))
            self.runtime_checked.emit(str(exc))

        self.ops.run_in_thread(
            "check the trainer runtime",
            lambda: _run_trainer_json(
                self.trainer_python(), ["doctor", "--json"], timeout_s=300, accept_codes=(0, 1)
            ),
            on_done=done,
            on_error=failed,
        )

    # -- editor ---------------------------------------------------------------------------------

    def _update_start_enabled(self, *_args: object) -> None:
        if not self._is_ready:
            return
        ok = self.editor.is_valid and not self._demo_pending
        self.start_button.setEnabled(ok)
        if self._demo_pending:
            tip = "Writing the demo model first …"
        elif not self.editor.is_valid:
            errors = self.editor.errors()
            first = next(iter(errors.items()), None)
            general = self.editor.general_errors()
            reason = f"{first[0]}: {first[1]}" if first else (general[0] if general else "")
            tip = f"Fix the config first: {reason}" if reason else "Fix the config first"
        else:
            tip = "Check the config and data, then train"
        self.start_button.setToolTip(tip)

    def _on_editor_config_changed(self) -> None:
        self._fit_timer.start()

    def _update_memory_fit(self) -> None:
        if not self._is_ready:
            return
        if not self.editor.is_valid:
            self.fit_badge.set_estimate(None, "the config is not valid yet")
            return
        if self.ops.is_running("estimate memory"):
            self._fit_timer.start()
            return
        config = self.editor.config()

        def work() -> MemoryEstimate:
            return estimate_for_config(config, read_model_config(config.model.name_or_path))

        self.ops.run_in_thread(
            "estimate memory",
            work,
            on_done=lambda est: self.fit_badge.set_estimate(est),
            on_error=lambda exc: self.fit_badge.set_estimate(None, str(exc)),
            quiet=True,
        )

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

    def open_config(self) -> None:
        """Load a JSON or YAML config into the editor (errors name the field and line)."""
        path = self._file_dialog("open", "Open a training config", "Configs (*.json *.yaml *.yml)")
        if not path:
            return
        from desktop.core.config_io import import_config

        def done(config: TrainingConfig) -> None:
            self.editor.set_config(config)
            self.bus.info(f"opened {path}")

        self.ops.run_in_thread("open the config", import_config, path, on_done=done)

    def save_config(self) -> None:
        """Save the editor's config as JSON or YAML."""
        if not self._require_valid("save"):
            return
        path = self._file_dialog("save", "Save the config", "JSON (*.json);;YAML (*.yaml *.yml)")
        if not path:
            return
        if Path(path).suffix.lower() not in (".json", ".yaml", ".yml"):
            path += ".json"
        from desktop.core.config_io import export_config

        self.ops.run_in_thread(
            "save the config",
            export_config,
            self.editor.config(),
            path,
            on_done=lambda p: self.bus.info(f"saved {p}"),
        )

    def export_trl(self) -> None:
        """Write the config as a `trl sft --config` YAML."""
        if not self._require_valid("export"):
            return
        path = self._file_dialog("save", "Export a TRL sft config", "YAML (*.yaml *.yml)")
        if not path:
            return
        if Path(path).suffix.lower() not in (".yaml", ".yml"):
            path += ".yaml"
        from desktop.core.config_io import export_trl_sft_yaml

        def done(notes: list[str]) -> None:
            more = f" ({len(notes)} notes at the top of the file)" if notes else ""
            self.bus.info(f"exported {path}; run it with: trl sft --config {Path(path).name}{more}")

        self.ops.run_in_thread(
            "export the TRL config", export_trl_sft_yaml, self.editor.config(), path, on_done=done
        )

    def _require_valid(self, what: str) -> bool:
        if self.editor.is_valid:
            return True
        errors = self.editor.errors()
        first = next(iter(errors.items()), None)
        detail = f"{first[0]}: {first[1]}" if first else "; ".join(self.editor.general_errors())
        self.bus.error(f"cannot {what} an invalid config: {detail}")
        return False

    # -- jobs -----------------------------------------------------------------------------------

    def start_job(self) -> None:
        """Launch the editor's config on the chosen target (checks run first, off the UI)."""
        if not self._require_valid("start"):
            return
        config = self.editor.config()
        target = self.editor.launch_target()
        self.save_last_config()
        self.start_button.setEnabled(False)
        self.statusBar().showMessage(f"checking {config.name} and starting it …")

        def done(job: Job) -> None:
            self._update_start_enabled()
            self.bus.info(f"job {job.id} ({job.name}) is {job.state.value} on {job.provider}")
            self.jobs_view.select_job_ids([job.id])

        self.ops.run(
            "start the job",
            self.service.launch(config, provider=target),
            done,
            lambda _exc: self._update_start_enabled(),
        )

    def cancel_job(self, job_id: str) -> None:
        """Cancel a job (it checkpoints first)."""
        self.ops.run(
            f"cancel job {job_id}",
            self.service.cancel(job_id),
            lambda job: self.bus.info(f"cancelling job {job.id} …"),
        )

    def resume_job(self, job_id: str) -> None:
        """Resume a cancelled or failed job from its last checkpoint."""
        self.ops.run(
            f"resume job {job_id}",
            self.service.resume(job_id),
            lambda job: self.bus.info(f"job {job.id} resumed ({job.state.value})"),
        )

    def duplicate_job(self, job_id: str) -> None:
        """Copy a job's config into the editor."""
        job = self.state.job(job_id)
        if job is None:
            return
        self.editor.set_config(job.config)
        self.bus.info(f"the config of job {job.id} is in the editor")

    def open_output(self, job_id: str) -> None:
        """Show the job's output folder (else its job folder) in the file manager."""
        job = self.state.job(job_id)
        if job is None:
            return
        folder = job.output_dir if job.output_dir and job.output_dir.exists() else job.job_dir
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices

        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self.bus.error(f"cannot open {folder} in a file manager; open it yourself")

    def show_log(self, job_id: str) -> None:
        """Select the job so the log view (and the chart) follow it."""
        self.jobs_view.select_job_ids([job_id])

    def confirm_delete(self, job: Job) -> str | None:
        """Ask how to delete: "record", "files" (record and job folder) or None (keep)."""
        from PySide6.QtWidgets import QMessageBox

        box = QMessageBox(self)
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
        job = self.state.job(job_id)
        if job is None:
            return
        choice = self.confirm_delete(job)
        if choice is None:
            return
        self.ops.run(
            f"delete job {job_id}",
            self.service.delete(job_id, delete_files=choice == "files"),
            lambda _r: self.bus.info(f"job {job_id} deleted"),
        )

    def _on_state_selection_changed(self, job_ids: list[str]) -> None:
        """The log view follows the (last) selected job; a finished job's stored log is read
        once when it is first selected (its watcher, which streams logs, has ended)."""
        if job_ids:
            self.log_view.set_job(job_ids[-1])
        for job_id in job_ids[-1:]:
            job = self.state.job(job_id)
            if job is None or not job.is_final or job_id in self._logs_loaded:
                continue
            if self.state.log_tail(job_id):
                continue
            self._logs_loaded.add(job_id)

            async def read(job: Job = job) -> list[str]:
                chunk = await self.service.provider(job.provider).logs(job, 0)
                return list(chunk.text.splitlines())

            def show(lines: list[str], job_id: str = job_id) -> None:
                self.state.log_added(job_id, lines)

            self.ops.run(f"read the log of {job_id}", read(), show)

    # -- preflight ------------------------------------------------------------------------------

    def preflight_dialog(self) -> PreflightDialog:
        """The preflight window (created on first use)."""
        if self.preflight is None:
            from desktop.views.preflight import PreflightDialog

            self.preflight = PreflightDialog(self)
            self.preflight.panel.rerun_requested.connect(self.run_preflight)
            self.preflight.panel.record_requested.connect(self._on_preflight_record_requested)
        return self.preflight

    def preflight_args(self) -> list[str] | None:
        """The `trainer check-data` arguments for the editor's dataset, or None without one."""
        raw = self.editor.raw_values()
        data = raw.get("dataset") or {}
        path = data.get("path")
        if not path:
            return None
        args = ["check-data", str(path), "--json", "--format", str(data.get("format") or "auto")]
        if data.get("max_length"):
            args += ["--max-length", str(data["max_length"])]
        if data.get("split"):
            args += ["--split", str(data["split"])]
        if data.get("train_on_completions_only") is False:
            args.append("--all-tokens")
        for key, column in (data.get("field_map") or {}).items():
            if column:
                args += ["--field", f"{key}={column}"]
        model = (raw.get("model") or {}).get("name_or_path")
        if model and (Path(str(model)).expanduser() / "config.json").exists():
            args += ["--model", str(model)]
        return args

    def run_preflight(self) -> None:
        """Open the preflight window and check the dataset in the background."""
        args = self.preflight_args()
        if args is None:
            self.bus.error("dataset.path: choose a dataset file first")
            return
        dialog = self.preflight_dialog()
        dialog.show()
        dialog.raise_()
        dialog.panel.set_busy(args[1])
        from desktop.providers.offline import OFFLINE_ENV

        env = OFFLINE_ENV if self.service.offline else None
        self.ops.run_in_thread(
            "check the dataset",
            lambda: _run_trainer_json(
                self.trainer_python(), args, timeout_s=3600, env=env, accept_codes=(0, 2)
            ),
            on_done=dialog.panel.show_report,
            on_error=lambda exc: dialog.panel.show_error(str(exc)),
        )

    def _on_preflight_record_requested(self, line: int) -> None:
        dialog = self.preflight_dialog()
        report = dialog.panel.report or {}
        path = str(report.get("path") or "")
        location = str(report.get("location") or "line")
        self.ops.run_in_thread(
            f"read {location} {line}",
            _read_record,
            path,
            line,
            location,
            on_done=lambda text: dialog.panel.show_record(line, text),
        )

    # -- settings -------------------------------------------------------------------------------

    def secret_store(self) -> Any:
        """The keychain (created on first use)."""
        if self._secret_store is None:
            from desktop.core.secrets import SecretStore

            self._secret_store = SecretStore()
        return self._secret_store

    def settings_dialog(self) -> SettingsDialog:
        """A new Settings dialog, its keychain status being read."""
        from desktop.views.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self.ops, self.secret_store(), parent=self)
        if self._doctor is not None:
            dialog.show_doctor(self._doctor)
        dialog.refresh_keys()
        return dialog

    def open_settings(self) -> None:
        """Show the Settings dialog; save what was changed."""
        dialog = self.settings_dialog()
        if dialog.exec():
            self.apply_settings(dialog.settings())
        dialog.deleteLater()

    def apply_settings(self, settings: Settings) -> None:
        """Save new settings and apply what can change while running (offline, runtime)."""
        from desktop.models import save_settings

        old = self.settings
        self.settings = settings
        self.service.settings = settings
        try:
            save_settings(settings)
        except OSError as exc:
            self.bus.error(f"cannot save the settings: {exc}")
        if settings.offline != old.offline:
            self.service.offline = settings.offline
            self._update_offline_label()
            self.bus.info(
                "offline mode is on" if settings.offline else "offline mode is off (new jobs)"
            )
        if settings.trainer_python != old.trainer_python:
            self.bus.info("the trainer runtime applies to jobs started from now on")
            if self._check_runtime:
                self.check_runtime()

    # -- messages -------------------------------------------------------------------------------

    def _on_bus_error_posted(self, message: str) -> None:
        first = message.strip().splitlines()[0] if message.strip() else message
        self.statusBar().showMessage(f"⚠ {first}", 15_000)
        self.statusBar().setToolTip(message)

    def _on_bus_info_posted(self, message: str) -> None:
        self.statusBar().showMessage(message, 8_000)

    def _on_bus_bug_reported(self, summary: str, text: str) -> None:
        self.statusBar().showMessage(f"unexpected error: {summary}", 15_000)
        from desktop.views.operations import show_traceback_dialog

        show_traceback_dialog(self, summary, text)

    def _tray_message(self, title: str, body: str) -> None:
        if self.tray is not None:
            self.tray.showMessage(title, body, self.windowIcon(), 10_000)

    # -- layout memory --------------------------------------------------------------------------

    def _restore_layout(self) -> None:
        qs = self.qsettings
        if qs.value("version") != str(_STATE_VERSION):
            return
        geometry = qs.value("geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        gpu = qs.value("gpu")
        if isinstance(gpu, str) and gpu in GPUS:
            self.fit_badge.set_gpu(gpu)

    def _restore_splitters(self) -> None:
        """Splitter sizes, once the window has its size (before that Qt rescales them)."""
        qs = self.qsettings
        if qs.value("version") != str(_STATE_VERSION):
            return
        for name in ("main_split", "right_split", "bottom_split"):
            value = qs.value(name)
            if isinstance(value, QByteArray):
                getattr(self, name).restoreState(value)

    def save_layout(self) -> None:
        """Remember geometry, splitter sizes and the chosen GPU."""
        qs = self.qsettings
        qs.setValue("version", str(_STATE_VERSION))
        qs.setValue("geometry", self.saveGeometry())
        for name in ("main_split", "right_split", "bottom_split"):
            qs.setValue(name, getattr(self, name).saveState())
        qs.setValue("gpu", self.fit_badge.gpu()[0])
        qs.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Remember the layout and config; jobs keep running (the next start reattaches)."""
        if not self._closing:
            self._closing = True
            self._fit_timer.stop()
            self.save_layout()
            self.save_last_config()
            if self._is_ready:
                self.inhibitor.close()
            if self.preflight is not None:
                self.preflight.close()
            if self.tray is not None:
                self.tray.hide()
            self.closed.emit()
        event.accept()
