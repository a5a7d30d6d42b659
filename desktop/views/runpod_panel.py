"""The RunPod launch target's panel: GPU candidates from the live catalog, the pod's limits, and
the run's estimate for each chosen GPU.

Shown in the editor's "Launch target" section while the target is RunPod. The catalog (prices
per GPU-hour in secure and community cloud, stock) is read off the GUI thread through
`operations.gpu_offers`; the GPUs ticked, in the list's order (drag to reorder), are the ones
a launch tries, first to last. GPU count is the pod's (`RunpodOptions.gpu_count`). Budget, maximum
runtime, disk and volume start from Settings' RunPod defaults; `options()` is what Start
launches with. The estimate (`operations.estimate_offers`: the trainer counts the data's tokens
in a worker) is labelled as one, with the memory fit on each GPU.
"""

from __future__ import annotations

import html
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QWidget,
)

from desktop.models import RunpodOptions
from desktop.views import operations

if TYPE_CHECKING:
    from desktop.views.config_editor import ConfigEditor
    from desktop.views.operations import Operations

__all__ = ["RunpodPanel"]

_FIT_COLORS = {"green": "#229954", "amber": "#ca6f1e", "red": "#c0392b"}
_GPU_ID = Qt.ItemDataRole.UserRole


def _config(editor: ConfigEditor) -> Any:
    """The editor's config, or None while it has a problem."""
    return editor.config() if editor.is_valid else None


def _money(value: Any) -> str:
    return "—" if value is None else f"${value:.2f}"


_ESTIMATE = "estimate the RunPod run"


class RunpodPanel(QGroupBox):
    """GPU candidates, pod limits and the estimate of a RunPod launch.

    Args:
        ops: runs the catalog read and the estimate in the background.
        editor: the config editor (its config is estimated; its GPU count is the pod's).
        service: the job service (its settings' RunPod defaults, its trainer runtime).
        secret_store: a callable giving the keychain (the RunPod key is read in a worker).

    Signals:
        catalog_loaded(int): the catalog's GPU types are listed (how many).
        estimated(str): the estimate was shown (its plain text).
    """

    catalog_loaded = Signal(int)
    estimated = Signal(str)

    def __init__(
        self,
        ops: Operations,
        editor: ConfigEditor,
        service: Any,
        secret_store: Any,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("RunPod", parent)
        self.setObjectName("runpod_panel")
        self._ops = ops
        self._editor = editor
        self._service = service
        self._secret_store = secret_store
        self._offers: dict[str, Any] = {}
        self._estimate_asked = 0  # the newest estimate's number: older answers are not shown
        self._choices: list[Any] = []
        defaults: RunpodOptions = service.settings.runpod
        form = QFormLayout(self)

        self.cloud_combo = QComboBox()
        self.cloud_combo.setObjectName("runpod_cloud")
        self.cloud_combo.addItem("Secure cloud", "secure")
        self.cloud_combo.addItem("Community cloud", "community")
        self.cloud_combo.setCurrentIndex(max(self.cloud_combo.findData(defaults.cloud), 0))
        self.cloud_combo.setToolTip("Secure: RunPod's data centres. Community: cheaper hosts.")
        form.addRow("Cloud", self.cloud_combo)

        self.gpu_list = QListWidget()
        self.gpu_list.setObjectName("runpod_gpus")
        self.gpu_list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.gpu_list.setToolTip(
            "Tick the GPU types to try; drag to order them. A launch tries them top to bottom "
            "and takes the first with capacity. Prices per GPU-hour: secure / community."
        )
        self.gpu_list.setMinimumHeight(70)
        self.gpu_list.setMaximumHeight(120)
        form.addRow(QLabel("GPU types: tick the ones to try, drag to order them"))
        form.addRow(self.gpu_list)  # the whole width: name, memory, both prices, stock
        row = QHBoxLayout()
        self.refresh_button = QPushButton("Refresh prices")
        self.refresh_button.setObjectName("runpod_refresh")
        self.catalog_label = QLabel("Prices come from RunPod's live catalog.")
        self.catalog_label.setObjectName("runpod_catalog_status")
        self.catalog_label.setWordWrap(True)
        row.addWidget(self.refresh_button)
        row.addWidget(self.catalog_label, 1)
        form.addRow("", row)

        self.gpu_count_spin = self._spin("runpod_gpu_count", 1, 8, defaults.gpu_count)
        self.gpu_count_spin.setToolTip(
            "GPUs in the pod; the trainer runs one process per GPU (billed per GPU)."
        )
        form.addRow("GPU count", self.gpu_count_spin)
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setObjectName("runpod_budget")
        self.budget_spin.setRange(0.01, 100000)
        self.budget_spin.setDecimals(2)
        self.budget_spin.setPrefix("$ ")
        self.budget_spin.setValue(float(defaults.budget_usd))
        self.budget_spin.setToolTip("The pod is deleted once it has cost this much.")
        form.addRow("Budget", self.budget_spin)
        self.runtime_spin = QDoubleSpinBox()
        self.runtime_spin.setObjectName("runpod_max_runtime")
        self.runtime_spin.setRange(1 / 60, 720)
        self.runtime_spin.setDecimals(2)
        self.runtime_spin.setSuffix(" h")
        self.runtime_spin.setValue(defaults.max_runtime_s / 3600)
        self.runtime_spin.setToolTip("The pod is deleted this long after it was created.")
        form.addRow("Maximum runtime", self.runtime_spin)
        self.disk_spin = self._spin("runpod_disk", 1, 4000, defaults.disk_gb, " GB")
        form.addRow("Container disk", self.disk_spin)
        self.volume_spin = self._spin("runpod_volume", 10, 4000, defaults.volume_gb, " GB")
        form.addRow("Pod volume", self.volume_spin)

        self.estimate_label = QLabel("Estimate: choose GPU types.")
        self.estimate_label.setObjectName("runpod_estimate")
        self.estimate_label.setWordWrap(True)
        self.estimate_label.setTextFormat(Qt.TextFormat.RichText)
        self.estimate_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("Estimate", self.estimate_label)

        self._estimate_timer = QTimer(self)
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(600)
        self._estimate_timer.timeout.connect(self.update_estimate)
        self.refresh_button.clicked.connect(self.refresh_catalog)
        self.cloud_combo.currentIndexChanged.connect(self._on_cloud_combo_changed)
        self.gpu_list.itemChanged.connect(lambda _item: self._estimate_timer.start())
        self.gpu_list.model().rowsMoved.connect(lambda *_: self._estimate_timer.start())
        for spin in (self.gpu_count_spin, self.budget_spin, self.runtime_spin):
            spin.valueChanged.connect(lambda _v: self._estimate_timer.start())
        editor.config_changed.connect(self._on_editor_config_changed)

    def _spin(self, name: str, low: int, high: int, value: int, suffix: str = "") -> QSpinBox:
        spin = QSpinBox()
        spin.setObjectName(name)
        spin.setRange(low, high)
        spin.setValue(value)
        spin.setSuffix(suffix)
        return spin

    # -- what a launch gets ------------------------------------------------------------------

    def chosen_gpu_ids(self) -> tuple[str, ...]:
        """The ticked GPU types, top to bottom."""
        items = (self.gpu_list.item(i) for i in range(self.gpu_list.count()))
        return tuple(
            str(item.data(_GPU_ID)) for item in items if item.checkState() == Qt.CheckState.Checked
        )

    def choose_gpus(self, gpu_ids: list[str]) -> None:
        """Tick exactly `gpu_ids`, moved to the top in that order (as a person would)."""
        for target, gpu_id in enumerate(gpu_ids):
            for i in range(self.gpu_list.count()):
                if self.gpu_list.item(i).data(_GPU_ID) == gpu_id:
                    item = self.gpu_list.takeItem(i)
                    self.gpu_list.insertItem(target, item)
                    break
            else:
                raise ValueError(f"{gpu_id!r} is not in the GPU list")
        for i in range(self.gpu_list.count()):
            item = self.gpu_list.item(i)
            wanted = item.data(_GPU_ID) in gpu_ids
            item.setCheckState(Qt.CheckState.Checked if wanted else Qt.CheckState.Unchecked)

    def options(self) -> RunpodOptions:
        """The RunPod options of a launch now: Settings' defaults with this panel's values."""
        base: RunpodOptions = self._service.settings.runpod
        chosen = self.chosen_gpu_ids() if self.gpu_list.count() else base.gpu_ids
        return base.model_copy(
            update={
                "gpu_ids": chosen,
                "gpu_count": self.gpu_count_spin.value(),
                "cloud": str(self.cloud_combo.currentData()),
                "budget_usd": Decimal(f"{self.budget_spin.value():.2f}"),
                "max_runtime_s": max(60, round(self.runtime_spin.value() * 3600)),
                "disk_gb": self.disk_spin.value(),
                "volume_gb": self.volume_spin.value(),
            }
        )

    # -- the catalog -------------------------------------------------------------------------

    def refresh_catalog(self) -> None:
        """Read RunPod's GPU catalog in the background, then list it (chosen ones first)."""
        if getattr(self._service, "offline", False):  # offline refuses every network path
            self.catalog_label.setText("Offline mode is on: RunPod's catalog is not read.")
            return
        self.catalog_label.setText("Reading RunPod's catalog …")
        self._ops.run(
            "read RunPod's GPU catalog",
            operations.gpu_offers(self._secret_store(), self.options()),
            self._on_catalog_read,
            lambda exc: self.catalog_label.setText(f"No catalog: {exc}"),
            quiet=True,
        )

    def _on_catalog_read(self, offers: list[Any]) -> None:
        chosen = set(self.chosen_gpu_ids() or self._service.settings.runpod.gpu_ids)
        self.gpu_list.blockSignals(True)
        self.gpu_list.clear()
        self._offers = {}
        for offer in offers:
            self._offers[offer.gpu_id] = offer
            item = QListWidgetItem(self._offer_text(offer))
            item.setData(_GPU_ID, offer.gpu_id)
            item.setToolTip(
                f"{offer.gpu_id}: {_money(offer.secure)} per GPU-hour in secure cloud, "
                f"{_money(offer.community)} in community cloud"
            )
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            on = offer.gpu_id in chosen
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            if offer.availability == "NONE":
                item.setForeground(Qt.GlobalColor.gray)
            self.gpu_list.addItem(item)
        self.gpu_list.blockSignals(False)
        self.catalog_label.setText(
            f"{len(offers)} GPU types, live; $ per GPU-hour: secure / community cloud."
        )
        self.catalog_loaded.emit(len(offers))
        self._estimate_timer.start()

    def _offer_text(self, offer: Any) -> str:
        memory = f"{offer.memory_gb:g} GB" if offer.memory_gb else "? GB"
        prices = f"{_money(offer.secure)} / {_money(offer.community)}"
        stock = (offer.availability or "unknown").lower()
        return f"{offer.name} · {memory} · {prices} · {stock}"

    # -- the estimate ------------------------------------------------------------------------

    def update_estimate(self) -> None:
        """Estimate the editor's config on each ticked GPU (the data's tokens counted in a
        worker); the label says why when it cannot.

        One estimate runs at a time: a choice made while one runs is estimated after it, and
        the running one's answer, being for an older choice, is never shown.
        """
        self._estimate_asked += 1
        asked = self._estimate_asked
        config = _config(self._editor)
        chosen = [self._offers[g] for g in self.chosen_gpu_ids() if g in self._offers]
        if config is None:
            self._show_estimate("Estimate: fix the config's problems first.")
            return
        if not chosen:
            self._show_estimate("Estimate: tick at least one GPU type.")
            return
        if self._ops.is_running(_ESTIMATE):
            self._estimate_timer.start()
            return
        options = self.options()
        offers = [c.offer(options.cloud) for c in chosen]

        def done(estimates: list[Any]) -> None:
            if asked == self._estimate_asked:
                self._on_estimated(estimates)

        def failed(exc: BaseException) -> None:
            if asked == self._estimate_asked:
                self._show_estimate(f"No estimate: {exc}")

        self._ops.run_in_thread(
            _ESTIMATE,
            operations.estimate_offers,
            config,
            self._service.runtime,
            offers,
            options,
            on_done=done,
            on_error=failed,
            quiet=True,
        )

    def _on_estimated(self, estimates: list[Any]) -> None:
        parts = []
        for est in estimates:
            color = _FIT_COLORS.get(est.fit or "", "#555555")
            extra = "".join(
                f"<br>&nbsp;&nbsp;⚠ {html.escape(w)}" for w in (*est.blockers, *est.warnings)
            )
            parts.append(
                f"<b>{html.escape(est.headline())}</b><br>&nbsp;&nbsp;"
                f"{html.escape(est.token_count.describe())}<br>&nbsp;&nbsp;"
                f"<span style='color:{color}'>● {html.escape(est.fit_line())}</span>{extra}"
            )
        parts.append("<i>A rough estimate (about ×2 either way); the budget bounds the cost.</i>")
        self._show_estimate("<br>".join(parts))

    def _show_estimate(self, text: str) -> None:
        self.estimate_label.setText(text)
        self.estimated.emit(self.estimate_label.text())

    # -- slots -------------------------------------------------------------------------------

    def _on_cloud_combo_changed(self, _index: int) -> None:
        self._estimate_timer.start()

    def _on_editor_config_changed(self) -> None:
        if self.isVisible() and self._offers:
            self._estimate_timer.start()


def install_runpod(window: Any) -> tuple[RunpodPanel, Any]:
    """Put the RunPod panel in the editor's "Launch target" section (shown while the target is
    RunPod; its catalog read on first show) and the orphan banner above the panels."""
    from desktop.views.orphan_banner import OrphanBanner

    panel = RunpodPanel(window.ops, window.editor, window.service, window.secret_store)
    window.editor.section("Launch target").form.addRow(panel)

    def on_target(target: str) -> None:
        panel.setVisible(target == "runpod")
        if target == "runpod" and not panel.gpu_list.count():
            panel.refresh_catalog()

    window.editor.launch_target_changed.connect(on_target)
    on_target(window.editor.launch_target())
    banner = OrphanBanner(window.ops, window.service, window.secret_store)
    window.splitters.add_banner(banner)
    return panel, banner


def add_key_test(layout: Any, ops: Operations, store: Any, api_url: str | None) -> QPushButton:
    """A "Test connection" button and its one-sentence answer (the key works / RunPod refused it
    (401) / RunPod unreachable), added to the Settings dialog's keys `layout`."""
    row = QHBoxLayout()
    button = QPushButton("Test RunPod connection")
    button.setObjectName("runpod_test_connection")
    answer = QLabel("")
    answer.setObjectName("runpod_test_answer")
    answer.setWordWrap(True)
    row.addWidget(button)
    row.addWidget(answer, 1)
    layout.addLayout(row)

    def test() -> None:
        answer.setText("Asking RunPod …")
        ops.run("test the RunPod key", operations.test_runpod_key(store, api_url), answer.setText)

    button.clicked.connect(test)
    return button
