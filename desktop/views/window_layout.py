"""The main window's frame: the splitters with their first-frame placeholders, and the memory
of geometry, splitter sizes, the chosen GPU and the selected job between starts
(`window.ini`).

Light on purpose (Qt only): the window's first paint builds this.
"""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtWidgets import QFrame, QMainWindow, QSplitter, QVBoxLayout, QWidget

from desktop.views.memory_badge import MemoryFitBadge
from desktop.views.operations import GPUS

__all__ = ["DEFAULT_SIZES", "LayoutMemory", "Splitters"]

_STATE_VERSION = 1
#: Editor | right; jobs (about six rows) over chart | log; for a 1500x900 window.
DEFAULT_SIZES = {
    "main_split": [470, 1030],
    "right_split": [200, 610],
    "bottom_split": [650, 380],
}
_NAMES = ("main_split", "right_split", "bottom_split")


def _placeholder(name: str) -> QFrame:
    """An empty panel standing where a heavy widget will be (the first frame's skeleton)."""
    frame = QFrame()
    frame.setObjectName(f"{name}_placeholder")
    frame.setFrameShape(QFrame.Shape.StyledPanel)
    return frame


class Splitters:
    """Editor | (jobs over (chart | log)), each panel an empty placeholder until its widget is
    built (`replace`).

    Attributes:
        central: the window's central widget: banners (`add_banner`) over the main split.
        main_split: editor | right.
        right_split: jobs over the bottom split.
        bottom_split: chart | log.
    """

    def __init__(self) -> None:
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
        # The table takes two fifths of a taller window: at 2560x1440 it shows some twenty
        # rows, not the six a 900-pixel window gives it.
        self.right_split.setStretchFactor(0, 2)
        self.right_split.setStretchFactor(1, 3)
        self.main_split.addWidget(_placeholder("editor"))
        self.main_split.addWidget(self.right_split)
        self.main_split.setStretchFactor(0, 2)
        self.main_split.setStretchFactor(1, 5)
        for splitter in self.all():
            splitter.setSizes(DEFAULT_SIZES[splitter.objectName()])
        self.central = QWidget()
        self.central.setObjectName("central")
        self._central_layout = QVBoxLayout(self.central)
        self._central_layout.setContentsMargins(0, 0, 0, 0)
        self._central_layout.addWidget(self.main_split, 1)

    def add_banner(self, widget: QWidget) -> None:
        """Put `widget` across the window above the splitters (the error list, under Start)."""
        self._central_layout.insertWidget(self._central_layout.count() - 1, widget)

    def all(self) -> tuple[QSplitter, QSplitter, QSplitter]:
        """The three splitters, outermost first."""
        return self.main_split, self.right_split, self.bottom_split

    @staticmethod
    def replace(splitter: QSplitter, index: int, widget: QWidget, *, visible: bool) -> None:
        """Put `widget` where the placeholder at `index` is, keeping the splitter's sizes."""
        # Before the first layout sizes() says nothing useful: keep the defaults then.
        sizes = splitter.sizes() if visible else DEFAULT_SIZES[splitter.objectName()]
        old = splitter.replaceWidget(index, widget)
        if old is not None:
            # The stretch factors were set on the placeholder: the widget keeps them, or it
            # would not grow with the window (a six-row job table at 2560x1440).
            policy = widget.sizePolicy()
            policy.setHorizontalStretch(old.sizePolicy().horizontalStretch())
            policy.setVerticalStretch(old.sizePolicy().verticalStretch())
            widget.setSizePolicy(policy)
            old.hide()
            old.deleteLater()
        splitter.setSizes(sizes)


class LayoutMemory:
    """Geometry, splitter sizes, the chosen GPU and the selected job, kept in an INI file
    between starts.

    Args:
        path: the INI file (`window_state_path()`).
    """

    def __init__(self, path: str) -> None:
        self.qsettings = QSettings(path, QSettings.Format.IniFormat)

    def _current(self) -> bool:
        return bool(self.qsettings.value("version") == str(_STATE_VERSION))

    def restore(self, window: QMainWindow, badge: MemoryFitBadge) -> None:
        """The window's geometry and the badge's GPU (at the first frame)."""
        if not self._current():
            return
        geometry = self.qsettings.value("geometry")
        if isinstance(geometry, QByteArray):
            window.restoreGeometry(geometry)
        gpu = self.qsettings.value("gpu")
        if isinstance(gpu, str) and gpu in GPUS:
            badge.set_gpu(gpu)

    def restore_splitters(self, splitters: Splitters) -> None:
        """Splitter sizes, once the window has its size (before that Qt rescales them)."""
        if not self._current():
            return
        for splitter in splitters.all():
            value = self.qsettings.value(splitter.objectName())
            if isinstance(value, QByteArray):
                splitter.restoreState(value)

    def last_selected_job(self) -> str | None:
        """The id of the job selected when the window was last used, if any."""
        value = self.qsettings.value("selected_job") if self._current() else None
        return value if isinstance(value, str) and value else None

    def remember_selected_job(self, job_id: str | None) -> None:
        """Keep the selected job's id (written with the layout, or when Qt syncs)."""
        self.qsettings.setValue("selected_job", job_id or "")

    def save(self, window: QMainWindow, splitters: Splitters, badge: MemoryFitBadge) -> None:
        """Remember geometry, splitter sizes and the chosen GPU."""
        qs = self.qsettings
        qs.setValue("version", str(_STATE_VERSION))
        qs.setValue("geometry", window.saveGeometry())
        for splitter in splitters.all():
            qs.setValue(splitter.objectName(), splitter.saveState())
        qs.setValue("gpu", badge.gpu()[0])
        qs.sync()
