"""GUI start-up: process start → main window shown, against a bare PySide6 window.

Both programs run as fresh processes in this run, alternately, several times; the figure is the
median wall time from `Popen` to the child printing "shown" once its window has been shown and
the first events processed. The app's program does what `finetune-desk` does before its window
appears (logging, settings, job store, job service, the whole main window); it never imports
torch (checked). Run: `python bench/gui_startup.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BARE = """
from PySide6.QtWidgets import QApplication, QMainWindow, QLabel
app = QApplication([])
w = QMainWindow(); w.setCentralWidget(QLabel("hello")); w.resize(1500, 900); w.show()
app.processEvents()
print("shown", flush=True)
"""

APP = """
import sys
from PySide6.QtWidgets import QApplication
import qasync, asyncio
app = QApplication([])
loop = qasync.QEventLoop(app); asyncio.set_event_loop(loop)
from desktop.app import build_window
w = build_window(check_runtime=False)
w.show()
app.processEvents()
print("shown", flush=True)
assert "torch" not in sys.modules, "the window imported torch"
"""


def measure(code: str, home: str) -> float:
    """Seconds from process start to "shown"."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "FTDESK_HOME": home}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    _, err = proc.communicate(timeout=120)
    if line.strip() != "shown" or proc.returncode != 0:
        raise RuntimeError(f"the program failed (exit {proc.returncode}): {err[-2000:]}")
    return elapsed


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description="GUI start-up time against bare PySide6")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="ftdesk-bench-")
    measure(APP, home)  # warm the disk cache and create the store once, for both alike
    measure(BARE, home)
    bare, app = [], []
    for _ in range(args.runs):
        bare.append(measure(BARE, home))
        app.append(measure(APP, home))
    b, a = statistics.median(bare), statistics.median(app)
    print(f"bare PySide6 window: median {b * 1000:.0f} ms ({args.runs} runs)")
    print(f"Finetune Desk main window: median {a * 1000:.0f} ms ({args.runs} runs)")
    print(f"ratio vs bare PySide6: {a / b:.2f} (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
