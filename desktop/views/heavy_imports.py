"""What the main window imports only once it is on screen, and how (in a worker thread).

The first paint must not wait for asyncio, pydantic models, numpy, pyqtgraph and the job service
(~0.8 s together): `MainWindow.build()` imports `HEAVY_MODULES` in a worker thread, then builds
the widgets on the GUI thread. Only module code runs there; no widget is created off the GUI
thread.
"""

from __future__ import annotations

import importlib

__all__ = ["HEAVY_MODULES", "import_heavy_modules"]

#: Modules the window needs only once it is on screen; `MainWindow.build()` imports them in a
#: worker thread (pure Python imports; no widget is created off the GUI thread).
HEAVY_MODULES = (
    "asyncio",
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
    "desktop.views.chat_panel",
    "desktop.core.chat_session",
    "desktop.views.chart.widget",
    "desktop.views.runs_view",
)


def import_heavy_modules() -> None:
    """Import `HEAVY_MODULES` (safe in a worker thread: module code only, no widgets)."""
    for name in HEAVY_MODULES:
        importlib.import_module(name)
