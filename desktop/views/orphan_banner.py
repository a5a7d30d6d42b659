"""A banner above the window's panels when RunPod pods of ours run that no job owns.

The sweep (`operations.find_orphan_pods`, i.e. `desktop.providers.runpod.sweep`) runs when the
window starts and on `check()`; each orphan is listed with its $/h and why it counts as one.
Delete removes them all (listed afresh, so a pod adopted meanwhile is kept); Adopt re-links a
pod to the `unknown` job it is named for, as `finetune-desk pods --adopt` does. Without a RunPod
key, or offline, the banner stays hidden and says nothing.
"""

from __future__ import annotations

import html
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from desktop.views import operations

if TYPE_CHECKING:
    from desktop.views.operations import Operations

__all__ = ["OrphanBanner"]


class OrphanBanner(QFrame):
    """Orphaned pods, their cost per hour, and Delete / Adopt.

    Args:
        ops: runs the sweep, the delete and the adopt in the background.
        service: the job service (its jobs and settings).
        secret_store: a callable giving the keychain.

    Signals:
        swept(int): a sweep, delete or adopt finished; how many orphans are listed now.
    """

    swept = Signal(int)

    def __init__(
        self, ops: Operations, service: Any, secret_store: Any, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("orphan_banner")
        self.setStyleSheet(
            "#orphan_banner { background: #fdebd0; border: 1px solid #ca6f1e; border-radius: 3px; }"
        )
        self._ops = ops
        self._service = service
        self._secret_store = secret_store
        self._adoptable: list[str] = []
        self.orphans: list[Any] = []
        layout = QHBoxLayout(self)
        self.label = QLabel()
        self.label.setObjectName("orphan_text")
        self.label.setWordWrap(True)
        self.delete_button = QPushButton("Delete")
        self.delete_button.setObjectName("orphan_delete")
        self.delete_button.setToolTip("Delete every pod listed here (they stop costing at once).")
        self.adopt_button = QPushButton("Adopt")
        self.adopt_button.setObjectName("orphan_adopt")
        self.adopt_button.setToolTip(
            "Re-link a pod to the unknown job it is named for; the app watches it again."
        )
        hide = QPushButton("Hide")
        layout.addWidget(self.label, 1)
        layout.addWidget(self.adopt_button)
        layout.addWidget(self.delete_button)
        layout.addWidget(hide)
        self.delete_button.clicked.connect(self.delete_orphans)
        self.adopt_button.clicked.connect(self.adopt)
        hide.clicked.connect(self.hide)
        self.hide()

    def check(self) -> None:
        """Look for orphaned pods in the background (quiet when there is no key)."""
        if getattr(self._service, "offline", False):
            return
        self._ops.run(
            "look for orphaned RunPod pods",
            operations.find_orphan_pods(self._secret_store(), self._service),
            self._show,
            quiet=True,
        )

    def delete_orphans(self) -> None:
        """Delete the listed pods (those shown, never one orphaned since), then look again."""
        self.delete_button.setEnabled(False)
        shown = [orphan.pod_id for orphan in self.orphans]

        def done(deleted: list[Any]) -> None:
            self._ops.bus.info(f"deleted {len(deleted)} orphaned RunPod pod(s)")
            self.check()

        self._ops.run(
            "delete orphaned RunPod pods",
            operations.delete_orphan_pods(self._secret_store(), self._service, shown),
            done,
            lambda _exc: self.delete_button.setEnabled(True),
        )

    def adopt(self) -> None:
        """Adopt the first adoptable pod for its job, then look again."""
        if not self._adoptable:
            return
        pod_id = self._adoptable[0]

        def done(job: Any) -> None:
            self._ops.bus.info(f"adopted pod {pod_id} for job {job.id}; its next poll settles it")
            self.check()

        self._ops.run(
            f"adopt pod {pod_id}",
            operations.adopt_orphan(self._secret_store(), self._service, pod_id),
            done,
        )

    def _show(self, found: list[tuple[Any, bool]]) -> None:
        self.orphans = [o for o, _ in found]
        self._adoptable = [o.pod_id for o, adoptable in found if adoptable]
        if not found:
            self.hide()
            self.swept.emit(0)
            return
        total = sum((o.cost_per_hour for o in self.orphans), Decimal(0))
        items = "".join(
            f"<li>{html.escape(o.name)} (pod {html.escape(o.pod_id)}, {html.escape(o.status)},"
            f" ${o.cost_per_hour:.2f}/h): {html.escape(o.why)}</li>"
            for o in self.orphans
        )
        self.label.setText(
            f"<b>{len(self.orphans)} RunPod pod(s) of this app run with no job watching them, "
            f"costing ${total:.2f}/h.</b><ul style='margin:0'>{items}</ul>"
        )
        self.delete_button.setEnabled(True)
        self.adopt_button.setEnabled(bool(self._adoptable))
        self.show()
        self.swept.emit(len(self.orphans))
