"""Screenshots of the real window: `python packaging/screenshots.py` (or `make screenshots`).

Runs the app's own window on a fresh data folder and trains the demo through the local provider
on the CPU (under a minute): two short runs at different learning rates (both completed) and a
long one cancelled after a few steps, then one whose trainer is killed. It saves:

    docs/screenshots/main.png       editor, the three jobs, the two completed runs overlaid
    docs/screenshots/runs-compare.png   the three runs side by side: differing fields, metrics
    docs/screenshots/dark.png       the dark theme, chart included
    docs/screenshots/1280x720.png   the window at 1280x720: columns hidden by priority
    docs/screenshots/failed-job.png a run whose trainer was killed (SIGKILL): red, with its
                                    reason in the row and as the log's last line
    docs/screenshots/preflight.png  the dataset preflight of the demo data
    docs/screenshots/settings.png   the settings dialog
    docs/screenshots/invalid-field.png  Learning rate 0: its error, Start disabled, the error list
    docs/screenshots/runpod.png     the RunPod target: GPU candidates with both clouds' prices,
                                    the limits, the estimate per chosen GPU, an orphan banner
    docs/screenshots/chat.png       the Chat tab on a run trained to learn the demo: base and
                                    fine-tuned answers side by side
    docs/screenshots/compare.png    Batch compare: four prompts through the base and two runs
                                    (60 and 30 steps) as a table, with each run's eval loss

The settings shot uses a private gnome-keyring on a private D-Bus (as the keychain tests do:
`tests/keychain.py`) holding placeholder keys, so it shows where keys are stored; without
gnome-keyring / dbus it says why and the dialog shows the keychain problem instead.

Without a display it re-runs itself under Xvfb (`xvfb-run`) when installed, else uses Qt's
offscreen platform. Options: --out DIR (default docs/screenshots), --steps N (default 40),
--scene invalid-field, --scene runpod, --scene chat or --scene compare (that shot alone). The
RunPod shot talks to the tests' loopback emulator of RunPod (tests/runpod_emulator/: its
catalog's three GPU types and prices, and a pod no job owns), never to RunPod.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
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


def _private_keychain(stack: contextlib.ExitStack) -> bool:
    """Start a private gnome-keyring (tests/keychain.py) with placeholder keys; False (and a
    printed note) where it cannot run here."""
    try:
        sys.path.insert(0, str(ROOT / "tests"))
        from keychain import start_real_keychain
    except ImportError as exc:  # pytest missing: `make screenshots` installs the test extra
        print(f"note: no private keychain for the settings shot ({exc})")
        return False
    try:
        stack.enter_context(start_real_keychain())
    except BaseException as exc:  # pytest's skip outcome when gnome-keyring / dbus are missing
        if isinstance(exc, KeyboardInterrupt):
            raise
        print(f"note: the settings shot shows the keychain problem: {exc}")
        return False
    from desktop.core.secrets import SecretStore

    store = SecretStore()
    store.set("runpod_api_key", "placeholder-runpod-key-for-the-screenshot")
    store.set("hf_token", "hf_placeholderForTheScreenshot")
    return True


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
    parser.add_argument(
        "--scene", choices=["all", "invalid-field", "runpod", "chat", "compare"], default="all"
    )
    args = parser.parse_args()
    _ensure_display([str(Path(__file__).resolve()), *sys.argv[1:]])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="ftdesk-screens-"))
    os.environ["FTDESK_HOME"] = str(home)
    sys.path.insert(0, str(ROOT))
    stack = contextlib.ExitStack()
    if args.scene == "all":  # only the settings shot shows the keychain
        _private_keychain(stack)

    import qasync
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QFont
    from PySide6.QtWidgets import QApplication

    from desktop.models import JobState, Settings
    from desktop.views.app import build_window

    app = QApplication.instance() or QApplication(["finetune-desk"])
    assert isinstance(app, QApplication)
    app.setFont(QFont(app.font().family(), 10))
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    window = build_window(settings=Settings(poll_interval_s=0.3), check_runtime=True)

    def set_training(name: str, steps: int, lr: float) -> None:
        config = window.editor.config()
        training = config.training.model_copy(
            update={"max_steps": steps, "learning_rate": lr, "save_steps": max(2, steps // 2)}
        )
        window.editor.set_config(config.model_copy(update={"name": name, "training": training}))

    async def run_job(
        name: str, steps: int, lr: float, cancel_at: int | None = None, kill_at: int | None = None
    ) -> str:
        known = {window.state.job_at(i).id for i in range(window.state.job_count())}
        set_training(name, steps, lr)
        await _until(lambda: window.start_button.isEnabled(), 60)
        window.start_job()
        await _until(lambda: window.state.job_count() > len(known), 120)
        job_id: str = next(
            window.state.job_at(i).id
            for i in range(window.state.job_count())
            if window.state.job_at(i).id not in known
        )
        if cancel_at is not None:
            await _until(lambda: (window.state.job(job_id).step or 0) >= cancel_at, 600)
            window.cancel_job(job_id)
        if kill_at is not None:  # as `kill -9` from a terminal would
            await _until(lambda: (window.state.job(job_id).step or 0) >= kill_at, 600)
            os.kill(window.state.job(job_id).handle.pid, signal.SIGKILL)
        await _until(lambda: window.state.job(job_id).state.is_final, 900)
        await _until(lambda: not window.ops.is_running(f"cancel job {job_id}"), 120)
        job = window.state.job(job_id)
        wanted = JobState.CANCELLED if cancel_at is not None else JobState.COMPLETED
        wanted = JobState.FAILED if kill_at is not None else wanted
        if job.state is not wanted:
            raise RuntimeError(f"job {name} ended {job.state}: {job.state_reason}")
        return job_id

    async def shoot_invalid_field() -> None:
        from PySide6.QtTest import QTest

        window.editor.focus_field("training.learning_rate")
        spin = window.editor.field_widget("training.learning_rate")
        edit = spin.lineEdit()  # type: ignore[attr-defined]
        before = edit.text()
        edit.selectAll()
        QTest.keyClicks(edit, "0")
        QTest.keyClick(spin, Qt.Key.Key_Return)
        window.editor.focus_field("training.learning_rate")
        await asyncio.sleep(1.0)
        window.grab().save(str(out / "invalid-field.png"))
        # The shots after this one start from a valid config again.
        edit.selectAll()
        QTest.keyClicks(edit, before)
        QTest.keyClick(spin, Qt.Key.Key_Return)
        window.editor.config()  # raises if the field did not take its value back

    async def shoot_runpod() -> None:
        from PySide6.QtWidgets import QScrollArea

        sys.path.insert(0, str(ROOT / "tests"))
        from runpod_emulator import RunpodEmulator, serve_emulator

        key = "placeholder-runpod-key-for-the-screenshot"
        emulator = RunpodEmulator(api_key=key)
        emulator.provisioning_s = emulator.starting_s = 0
        emulator.add_pod("ftdesk-20261130-090000-gone", gpu_id="NVIDIA A100 80GB PCIe")
        with serve_emulator(emulator):
            os.environ["FTDESK_RUNPOD_API_URL"] = emulator.url
            os.environ["FTDESK_RUNPOD_API_KEY"] = key
            set_training("demo", args.steps, 2e-4)
            window.orphan_banner.check()
            panel = window.runpod_panel
            window.target_combo.setCurrentIndex(window.target_combo.findData("runpod"))
            await _until(lambda: panel.gpu_list.count() == 3, 60)
            panel.choose_gpus(["NVIDIA GeForce RTX 4090", "NVIDIA A100 80GB PCIe"])
            await _until(lambda: panel.estimate_label.text().count("Estimate on") == 2, 300)
            await _until(lambda: window.orphan_banner.isVisible(), 60)
            scroll = window.editor.findChild(QScrollArea)
            scroll.ensureWidgetVisible(panel.estimate_label, 0, 0)
            scroll.ensureWidgetVisible(window.editor.target_combo, 0, 0)
            window.statusBar().showMessage("RunPod: two GPU types chosen, estimated before launch")
            await asyncio.sleep(1.0)
            window.grab().save(str(out / "runpod.png"))
            # The shots after this one train on this machine again, and the emulator's pod is
            # gone with the emulator.
            window.target_combo.setCurrentIndex(window.target_combo.findData("local"))
            window.orphan_banner.hide()

    async def shoot_layouts(first: str, second: str, long_run: str) -> None:
        """The runs view, the dark theme and the window at 1280x720."""
        window.jobs_view.select_job_ids([first, second, long_run])
        window.chart_tabs.setCurrentWidget(window.runs_view)
        window.runs_view.refresh()
        window.statusBar().showMessage("three runs compared: only the config fields that differ")
        await asyncio.sleep(1.0)
        window.grab().save(str(out / "runs-compare.png"))
        window.chart_tabs.setCurrentWidget(window.chart)
        window.jobs_view.select_job_ids([first, second])
        window.theme.apply("dark")
        window.statusBar().showMessage("dark theme (Settings → Theme; follows the system)")
        window.chart.redraw()
        await asyncio.sleep(1.0)
        window.grab().save(str(out / "dark.png"))
        window.theme.apply("light")
        window.resize(1280, 720)
        window.statusBar().showMessage("1280x720: the least needed columns hide")
        await asyncio.sleep(1.0)
        window.chart.redraw()
        window.grab().save(str(out / "1280x720.png"))
        window.resize(1760, 990)
        await asyncio.sleep(0.5)

    async def shoot_chat() -> None:
        job_id = await run_job("demo-chat", 60, 1e-2)
        window.jobs_view.select_job_ids([job_id])
        panel = window.chat_panel
        window.log_tabs.setCurrentWidget(panel)
        window.bottom_split.setSizes([560, 1000])
        await _until(lambda: panel.send_button.isEnabled(), 60)
        # Sampled: the tiny demo model's adapter learned the answers' shape (a few numbers
        # or words, then the end) more than the tasks; greedy, it often ends at once.
        panel.temperature.setValue(1.0)
        panel.top_p.setValue(1.0)
        panel.seed.setValue(5)
        panel.max_new_tokens.setValue(16)
        for number, prompt in enumerate(("count on from 41", "reverse: red cat blue"), start=1):
            panel.prompt_edit.setPlainText(prompt)
            panel.send_button.click()
            await _until(lambda n=number: len(panel.conversation.turns) == n, 600)
        panel.prompt_edit.setPlainText("count on from 7")
        await asyncio.sleep(1.0)
        window.grab().save(str(out / "chat.png"))

    async def shoot_compare() -> None:
        """Two runs with an eval split, four prompts, eval loss: the dialog, its table filled."""
        config = window.editor.config()
        dataset = config.dataset.model_copy(update={"eval_split": 0.1})
        window.editor.set_config(config.model_copy(update={"dataset": dataset}))
        jobs = [await run_job("demo-60-steps", 60, 1e-2), await run_job("demo-30-steps", 30, 1e-2)]
        window.jobs_view.select_job_ids(jobs)
        window.log_tabs.setCurrentWidget(window.chat_panel)
        prompts = home / "prompts.jsonl"
        lines = ["count on from 41", "reverse: red cat blue", "count on from 7", "reverse: sun fog"]
        prompts.write_text("".join(f'{{"prompt": "{line}"}}\n' for line in lines), "utf-8")
        dialog = window.open_compare()
        dialog.resize(1280, 620)
        dialog.prompts_edit.setText(str(prompts))
        # Sampled, as the chat shot (greedy, the tiny demo's adapter often ends at once).
        dialog.temperature.setValue(1.0)
        dialog.top_p.setValue(1.0)
        dialog.seed.setValue(5)
        dialog.max_new_tokens.setValue(16)
        dialog.eval_loss_check.setChecked(True)
        dialog.run_button.click()
        await _until(lambda: not dialog.running, 900)
        if not dialog.rows:
            raise RuntimeError(f"batch compare failed: {dialog.status_label.text()}")
        dialog.table.setCurrentIndex(dialog.model.index(1, 2))
        await asyncio.sleep(1.0)
        dialog.grab().save(str(out / "compare.png"))
        dialog.close()

    async def shoot() -> None:
        window.resize(1760, 990)
        window.show()
        await window.start()
        await _until(lambda: window.start_button.isEnabled(), 600)
        if args.scene in ("invalid-field", "runpod", "chat", "compare"):
            shots_alone = {
                "invalid-field": shoot_invalid_field,
                "runpod": shoot_runpod,
                "chat": shoot_chat,
                "compare": shoot_compare,
            }
            await shots_alone[args.scene]()
            window.close()
            await window.ops.close()
            await window.service.close()
            return
        window.chart.set_smoothing(0.3)
        first = await run_job("demo-lr-2e-3", args.steps, 2e-3)
        second = await run_job("demo-lr-5e-4", args.steps, 5e-4)
        long_run = await run_job("demo-long", 5_000, 1e-3, cancel_at=6)
        await _until(lambda: window.runtime_label.text() != "runtime: checking …", 300)
        set_training("demo-lr-2e-3", args.steps, 2e-3)
        window.jobs_view.select_job_ids([first, second])
        window.chart.redraw()
        best = window.state.job(first)
        window.statusBar().showMessage(
            f"job {best.name} completed: final loss {best.last_loss:.3f}; "
            "two runs selected: compared in the chart"
        )
        await asyncio.sleep(1.0)
        window.grab().save(str(out / "main.png"))
        await shoot_layouts(first, second, long_run)

        killed = await run_job("demo-killed", 5_000, 1e-3, kill_at=8)
        # Shown (chart, log) without the table's highlight over its row, so its red reads.
        window.jobs_view.table.clearSelection()
        window.state.set_selected_job_ids([killed])
        await _until(lambda: "job failed" in window.log_view.text.toPlainText(), 60)
        window.chart.redraw()
        await asyncio.sleep(1.0)
        window.grab().save(str(out / "failed-job.png"))

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
        settings.resize(760, settings.heightForWidth(760) if settings.hasHeightForWidth() else 490)
        await asyncio.sleep(0.5)
        settings.grab().save(str(out / "settings.png"))
        settings.close()
        await shoot_invalid_field()
        await shoot_runpod()
        await shoot_chat()
        await shoot_compare()

        window.close()
        await window.ops.close()
        await window.service.close()

    try:
        loop.run_until_complete(shoot())
    finally:
        loop.close()
        stack.close()
        shutil.rmtree(home, ignore_errors=True)
    shots = [
        "main.png",
        "runs-compare.png",
        "dark.png",
        "1280x720.png",
        "failed-job.png",
        "preflight.png",
        "settings.png",
        "invalid-field.png",
        "runpod.png",
        "chat.png",
        "compare.png",
    ]
    for name in shots if args.scene == "all" else [f"{args.scene}.png"]:
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
