"""Slurm as a launch target: the cluster, its partitions (from `sinfo`, asked off the GUI thread
through `operations`), nodes, processes and GPUs per node and the time limit; and a Slurm job's
details (its Slurm job id, state, queue reason, node list and restarts, from the job's handle).

`SlurmPanel.install` adds the "Slurm" target and the panel to the editor's "Launch target"
section, shown while Slurm is the target; each change emits `options_changed` with the
settings' Slurm options for the next launch. `SlurmJobDetails` follows the selected job.
"""

from __future__ import annotations

from typing import Any, TypeVar

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from desktop.models import Job, Settings, SlurmOptions
from desktop.models.slurm_options import parse_time_limit
from desktop.views import operations
from desktop.views.state import AppState

__all__ = ["SlurmJobDetails", "SlurmPanel", "slurm_details"]

SLURM_TARGET = "slurm"
DETAIL_LABELS = ("Slurm job", "Slurm state", "Queue reason", "Nodes", "Restarts")


class SlurmPanel(QWidget):
    """The Slurm launch options (see the module docstring).

    Args:
        settings: the app's settings (clusters in `settings.slurm`).
        ops: runs `sinfo` in the background.

    Signals:
        options_changed(object): the `SlurmOptions` the next Slurm launch uses.
    """

    options_changed = Signal(object)

    def __init__(self, settings: Settings | None, ops: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        settings = settings or Settings()
        self._ops = ops
        self._settings = settings
        self.partitions: list[tuple[str, str]] = []
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.cluster_combo = _named(QComboBox(), "slurm_cluster")
        self.refresh_button = _named(QPushButton("Refresh"), "slurm_refresh")
        self.refresh_button.setToolTip("Ask the cluster for its partitions (sinfo over SSH)")
        row = QHBoxLayout()
        row.addWidget(self.cluster_combo, 1)
        row.addWidget(self.refresh_button)
        form.addRow("Cluster", row)
        self.partition_combo = _named(QComboBox(), "slurm_partition")
        form.addRow("Partition", self.partition_combo)
        self.nodes_spin = _spin("slurm_nodes", 1, 1024, 1)
        form.addRow("Nodes", self.nodes_spin)
        self.tasks_spin = _spin("slurm_tasks_per_node", 1, 64, 1)
        form.addRow("Processes per node", self.tasks_spin)
        self.gpus_spin = _spin("slurm_gpus_per_node", 0, 64, 0)
        form.addRow("GPUs per node", self.gpus_spin)
        self.time_edit = _named(QLineEdit(), "slurm_time")
        self.time_edit.setPlaceholderText("the cluster's (e.g. 4:00:00)")
        form.addRow("Time limit", self.time_edit)
        self.status_label = _named(QLabel(), "slurm_status")
        self.status_label.setWordWrap(True)
        form.addRow(self.status_label)
        self.set_settings(settings)
        self.cluster_combo.currentIndexChanged.connect(lambda _i: self.refresh_partitions())
        self.refresh_button.clicked.connect(lambda _c=False: self.refresh_partitions())
        for spin in (self.nodes_spin, self.tasks_spin, self.gpus_spin):
            spin.valueChanged.connect(lambda _v: self._emit())
        self.partition_combo.currentIndexChanged.connect(lambda _i: self._emit())
        self.time_edit.editingFinished.connect(self._emit)

    def install(self, editor: Any) -> None:
        """Add the "Slurm" target and this panel to the editor's "Launch target" section."""
        if editor.target_combo.findData(SLURM_TARGET) < 0:
            editor.target_combo.addItem("Slurm", SLURM_TARGET)
        editor.section("Launch target").form.addRow(self)
        editor.launch_target_changed.connect(self._on_target_changed)
        self.setVisible(editor.launch_target() == SLURM_TARGET)

    def _on_target_changed(self, target: str) -> None:
        self.setVisible(target == SLURM_TARGET)
        if target == SLURM_TARGET and not self.partitions:
            self.refresh_partitions()

    def set_settings(self, settings: Settings) -> None:
        """Show the clusters and this run's options of `settings`."""
        self._settings = settings
        options = settings.slurm
        self.cluster_combo.blockSignals(True)
        self.cluster_combo.clear()
        for name, profile in sorted(options.clusters.items()):
            self.cluster_combo.addItem(f"{name} ({profile.user}@{profile.host})", name)
        chosen = self.cluster_combo.findData(options.cluster)
        self.cluster_combo.setCurrentIndex(max(chosen, 0))
        self.cluster_combo.blockSignals(False)
        self.refresh_button.setEnabled(bool(options.clusters))
        if not options.clusters:
            self.status_label.setText(
                "No cluster yet: add one with finetune-desk clusters add NAME --host HOST "
                "--user USER --work-dir /path"
            )
        for spin, value in (
            (self.nodes_spin, options.nodes),
            (self.tasks_spin, options.tasks_per_node),
            (self.gpus_spin, options.gpus_per_node or 0),
        ):
            spin.blockSignals(True)
            spin.setValue(value)
            spin.blockSignals(False)
        self.time_edit.setText(options.time_limit or "")

    def cluster(self) -> str | None:
        """The chosen cluster's name."""
        data = self.cluster_combo.currentData()
        return None if data is None else str(data)

    def refresh_partitions(self) -> None:
        """Ask the chosen cluster for its partitions, off the GUI thread."""
        name = self.cluster()
        if name is None:
            return
        profile = self._settings.slurm.clusters[name]
        self.status_label.setText(f"asking {profile.host} for its partitions…")
        self._ops.run(
            f"sinfo on {name}",
            operations.slurm_partitions(profile),
            on_done=lambda found, n=name: self._show_partitions(n, found),
            on_error=self._failed,
            quiet=True,
        )

    def _show_partitions(self, cluster: str, found: list[tuple[str, str]]) -> None:
        if cluster != self.cluster():
            return  # another cluster was chosen meanwhile
        self.partitions = found
        wanted = self._settings.slurm.partition or self._settings.slurm.clusters[cluster].partition
        self.partition_combo.blockSignals(True)
        self.partition_combo.clear()
        for name, description in found:
            self.partition_combo.addItem(description, name)
        index = self.partition_combo.findData(wanted)
        self.partition_combo.setCurrentIndex(max(index, 0))
        self.partition_combo.blockSignals(False)
        self.status_label.setText(f"{len(found)} partition(s) on {cluster}")
        self._emit()

    def _failed(self, exc: BaseException) -> None:
        self.status_label.setText(f"cannot list the partitions: {exc}")

    def options(self) -> SlurmOptions:
        """The Slurm options of the next launch from the panel.

        Raises:
            ValueError: the time limit is not a Slurm time (the message gives the forms).
        """
        time_text = self.time_edit.text().strip()
        if time_text:
            parse_time_limit(time_text)
        partition = self.partition_combo.currentData()
        return self._settings.slurm.model_copy(
            update={
                "cluster": self.cluster(),
                "partition": None if partition is None else str(partition),
                "nodes": self.nodes_spin.value(),
                "tasks_per_node": self.tasks_spin.value(),
                "gpus_per_node": self.gpus_spin.value() or None,
                "time_limit": time_text or None,
            }
        )

    def _emit(self) -> None:
        try:
            options = self.options()
        except ValueError as exc:
            self.status_label.setText(str(exc))
            return
        self.options_changed.emit(options)


W = TypeVar("W", bound=QWidget)


def _named(widget: W, name: str) -> W:
    widget.setObjectName(name)
    return widget


def _spin(name: str, low: int, high: int, value: int) -> QSpinBox:
    spin = _named(QSpinBox(), name)
    spin.setRange(low, high)
    spin.setValue(value)
    return spin


def slurm_details(job: Job) -> list[tuple[str, str]]:
    """A Slurm job's (label, value) rows from its handle; empty for any other job."""
    handle = job.handle
    if job.provider != SLURM_TARGET or handle is None:
        return []
    extra = handle.extra
    values = [
        f"{extra.get('slurm_job_id') or '-'} on {extra.get('cluster') or '-'}",
        extra.get("slurm_state") or "-",
        extra.get("queue_reason") or "-",
        extra.get("nodes") or "-",
        extra.get("restarts") or "0",
    ]
    return list(zip(DETAIL_LABELS, values, strict=True))


class SlurmJobDetails(QWidget):
    """The selected job's Slurm details (hidden unless the selected job runs on Slurm)."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self.setObjectName("slurm_job_details")
        form = QFormLayout(self)
        form.setContentsMargins(4, 2, 4, 2)
        self.labels: dict[str, QLabel] = {}
        for label in DETAIL_LABELS:
            value = _named(QLabel(), f"slurm_detail_{label.lower().replace(' ', '_')}")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.labels[label] = value
            form.addRow(label, value)
        state.selection_changed.connect(lambda _ids: self.refresh())
        state.row_changed.connect(lambda _row: self.refresh())
        self.refresh()

    @classmethod
    def below(cls, view: QWidget, state: AppState) -> SlurmJobDetails:
        """The details, added at the bottom of `view`'s layout (the job table)."""
        details = cls(state, view)
        layout = view.layout()
        if layout is not None:
            layout.addWidget(details)
        return details

    def refresh(self) -> None:
        """Show the first selected job's details, or hide."""
        ids = self._state.selected_job_ids
        job = self._state.job(ids[0]) if ids else None
        rows = slurm_details(job) if job is not None else []
        for label, value in rows:
            self.labels[label].setText(value)
        self.setVisible(bool(rows))
