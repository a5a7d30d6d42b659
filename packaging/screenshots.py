"""Screenshots of the real window: `python packaging/screenshots.py` (or `make screenshots`).

Runs the app's own window on a fresh data folder, trains the demo through the local provider
(on the CPU, a few seconds), and saves:

    docs/screenshots/main.png       editor, job table and the loss chart with the run's points
    docs/screenshots/preflight.png  the dataset preflight of the demo data
    docs/screenshots/settings.png   the settings dialog

Without a display it re-runs itself under Xvfb (`xvfb-run`) when installed, else uses Qt's
offscreen platform. Options: --out DIR (default docs/screenshots), --steps N (default 40).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ensure_display(argv: list[str]) -> None:
    if os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM") or os.name == "nt":
        return
    if sys.platform != "darwin" and shutil.which("xvfb-run"):
        xvfb = ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24", sys.executable]
        env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
        probe = "from PySide6.QtWidgets import QApplication; QApplication([])"
        # Qt's xcb plugin needs a few libxcb-* packages; without them use offscreen instead.
        if subprocess.call([*xvfb, "-c", probe], env=env, stderr=subprocess.DEVNULL) == 0:
            raise SystemExit(subprocess.call([*xvfb, *argv], env=env))
        print("Qt cannot use Xvfb here (missing libxcb-* libraries); using offscreen")
    os.environ["QT_QPA_PLATFORM"] = "offscreen"


async def _until(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {predicate}")
        await asyncio.sleep(0.1)


def main() -> int:
    """Take the screenshots; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    _ensure_display([str(Path(__file__).resolve()), *sys.argv[1:]])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="ftdesk-screens-"))
    os.environ["FTDESK_HOME"] = str(home)
    sys.path.insert(0, str(ROOT))

    import qasync
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QFont
    from PySide6.QtWidgets import QApplication

    from desktop.app import build_window
    from desktop.models import JobState, Settings

    app = QApplication.instance() or QApplication(["finetune-desk"])
    assert isinstance(app, QApplication)
    app.setFont(QFont(app.font().family(), 10))
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    window = build_window(settings=Settings(poll_interval_s=0.3), check_runtime=True)

    async def shoot() -> None:
        window.resize(1600, 960)
        window.show()
        await window.start()
        await _until(lambda: window.start_button.isEnabled(), 600)
        config = window.editor.config()
        training = config.training.model_copy(update={"max_steps": args.steps})
        window.editor.set_config(config.model_copy(update={"training": training}))
        window.chart.set_smoothing(0.3)
        window.start_job()
        await _until(lambda: window.state.job_count() > 0, 120)
        job_id = window.state.job_at(0).id
        await _until(lambda: window.state.job(job_id).state.is_final, 900)
        job = window.state.job(job_id)
        if job.state is not JobState.COMPLETED:
            raise RuntimeError(f"the demo job ended {job.state}: {job.state_reason}")
        await _until(lambda: window.runtime_label.text() != "runtime: checking …", 300)
        window.jobs_view.select_job_ids([job_id])
        window.chart.redraw()
        window.statusBar().showMessage(f"job {job_id} completed: final loss {job.last_loss:.3f}")
        await asyncio.sleep(1.0)
        window.grab().save(str(out / "main.png"))

        window.run_preflight()
        dialog = window.preflight_dialog()
        dialog.resize(1200, 860)
        await _until(lambda: dialog.panel.report is not None, 600)
        await asyncio.sleep(0.5)
        dialog.grab().save(str(out / "preflight.png"))
        dialog.close()

        settings = window.settings_dialog()
        settings.run_doctor()
        settings.show()
        await _until(lambda: settings.doctor_button.isEnabled(), 300)
        await _until(lambda: "checking" not in settings.backend_label.text(), 30)
        await asyncio.sleep(0.5)
        settings.grab().save(str(out / "settings.png"))
        settings.close()

        window.close()
        await window.ops.close()
        await window.service.close()

    del Qt
    try:
        loop.run_until_complete(shoot())
    finally:
        loop.close()
        shutil.rmtree(home, ignore_errors=True)
    for name in ("main.png", "preflight.png", "settings.png"):
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
