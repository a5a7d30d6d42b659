"""`finetune-desk --self-test`: can this install (a frozen bundle above all) run the app?

It builds the main window offscreen (Qt, its platform plugin, the window's heavy modules),
resolves the keychain backend (a machine without one reports "none": not a failure), loads
every preset as a `TrainingConfig`, and checks that torch was never imported. It prints ONE
JSON line and returns 0, or the same line with `"ok": false` and the reason, and returns 1.
The installers' test (tests/test_bundle.py) runs it from the built bundle.

Outside the Qt-free core on purpose: it imports the views (`desktop.__main__` reaches it only
when asked, like the window).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["run_self_test"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("finetune-desk")
    except PackageNotFoundError as exc:
        raise RuntimeError(
            "the package metadata of finetune-desk is missing (the bundle must copy it)"
        ) from exc


def _keychain() -> str:
    import keyring

    from desktop.core.keychain_backends import describe_backend, unusable_reason

    backend = keyring.get_keyring()
    return "none" if unusable_reason(backend) else describe_backend(backend)


def _presets() -> int:
    from desktop.core.config_io import list_presets, load_preset

    presets = list_presets()
    if not presets:
        raise RuntimeError("no presets found (resources/presets is missing)")
    with tempfile.TemporaryDirectory() as demo:
        for info in presets:
            load_preset(info.name, demo_dir=Path(demo))  # validates as TrainingConfig
    return len(presets)


def _window() -> str:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from desktop.views.app import build_window
    from desktop.views.heavy_imports import import_heavy_modules

    app = QApplication.instance() or QApplication(["finetune-desk"])
    assert isinstance(app, QApplication)
    window = build_window(deferred=True, check_runtime=False)
    try:
        window.show()
        if "painted" not in window.timings:
            painted = QEventLoop()
            window.first_painted.connect(painted.quit)
            QTimer.singleShot(10_000, painted.quit)
            painted.exec()
        if "painted" not in window.timings:
            raise RuntimeError("the main window never painted within 10 s")
        import_heavy_modules()  # what the window builds next (pyqtgraph, asyncio, pydantic...)
        return str(app.platformName())
    finally:
        window.close()
        window.deleteLater()


def run_self_test() -> int:
    """Run every check, print the one JSON line, return the exit code (0 ok, 1 a failure)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    report: dict[str, Any] = {
        "ok": True,
        "version": None,
        "frozen": bool(getattr(sys, "frozen", False)),
        "presets": None,
        "keychain": None,
        "qt_platform": None,
        "torch_loaded": None,
    }
    steps = (
        ("version", _version),
        ("presets", _presets),
        ("keychain", _keychain),
        ("qt_platform", _window),
    )
    for key, step in steps:
        try:
            report[key] = step()
        except Exception as exc:  # the report carries it; a traceback helps nobody here
            report["ok"] = False
            report["reason"] = f"{key}: {type(exc).__name__}: {exc}"
            break
    report["torch_loaded"] = "torch" in sys.modules
    if report["ok"] and report["torch_loaded"]:
        report["ok"] = False
        report["reason"] = "torch_loaded: the app imported torch; it must stay in the trainer"
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1
