"""GUI start-up: process start → main window painted, against a bare PySide6 window.

Programs run as fresh processes in this run, interleaved, several times; figures are medians.

- bare: a QApplication and a QMainWindow (1500x900, a label); "shown" is printed from the
  window's first `paintEvent`.
- app: the real entry point `desktop.views.app.main([])` with `FTDESK_STARTUP_PROBE=1`, which prints
  "shown" from the main window's first `paintEvent` and "ready" once the editor, job table,
  chart and log view are built, the jobs are loaded and Start is enabled (then closes the
  window). The data folder holds the demo (written once by `trainer make-demo` before timing)
  and, after the warm-up run, a job store, as after a person's first start. The probe skips the
  runtime doctor (a child process started after "ready" in normal use).
- command (informational): the same through `desktop.__main__.main([])`, what the
  `finetune-desk` console script runs.

Times are from `Popen` to the line arriving on the pipe. The app must not import torch
(checked in the child). Run: `python bench/gui_startup.py [--runs N]`; the last line is the
summary.
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
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow

class Window(QMainWindow):
    painted = False

    def paintEvent(self, event):
        super().paintEvent(event)
        if not self.painted:
            self.painted = True
            print("shown", flush=True)
            app.quit()

app = QApplication([])
w = Window()
w.setCentralWidget(QLabel("hello"))
w.resize(1500, 900)
w.show()
app.exec()
"""

APP = """
import atexit, sys
atexit.register(lambda: print("torch" if "torch" in sys.modules else "no-torch", flush=True))
from desktop.views.app import main
sys.exit(main([]))
"""

CLI = """
import sys
from desktop.__main__ import main
sys.exit(main([]))
"""


def measure(code: str, home: str) -> dict[str, float]:
    """Seconds from process start to each line the program prints ("shown", "ready")."""
    env = {**os.environ, "FTDESK_HOME": home, "FTDESK_STARTUP_PROBE": "1"}
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    assert proc.stdout is not None
    seen: dict[str, float] = {}
    for line in proc.stdout:
        seen.setdefault(line.strip(), time.perf_counter() - start)
    _, err = proc.communicate(timeout=120)
    if "shown" not in seen or proc.returncode != 0:
        raise RuntimeError(f"the program failed (exit {proc.returncode}): {seen} {err[-2000:]}")
    if "torch" in seen:
        raise RuntimeError("the window imported torch")
    if "ready-but-start-disabled" in seen:
        raise RuntimeError("the window was ready but Start stayed disabled")
    return seen


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description="GUI start-up time against bare PySide6")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-cli", action="store_true", help="skip the finetune-desk figure")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="ftdesk-bench-")
    subprocess.run(
        [sys.executable, "-m", "trainer", "make-demo", str(Path(home) / "demo")],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        cwd=str(ROOT),
    )
    measure(APP, home)  # warm the disk cache and create the store once, for all alike
    measure(BARE, home)
    bare: list[float] = []
    shown: list[float] = []
    ready: list[float] = []
    cli: list[float] = []
    for _ in range(args.runs):
        bare.append(measure(BARE, home)["shown"])
        seen = measure(APP, home)
        shown.append(seen["shown"])
        ready.append(seen["ready"])
        if not args.no_cli:
            cli.append(measure(CLI, home)["shown"])
    b, s, r = statistics.median(bare), statistics.median(shown), statistics.median(ready)
    print(f"CPUs: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    print(f"bare PySide6 window, first paint: median {b * 1000:.0f} ms ({args.runs} runs)")
    print(f"Finetune Desk main window, first paint: median {s * 1000:.0f} ms")
    print(f"Finetune Desk ready (editor, jobs, chart, Start enabled): median {r * 1000:.0f} ms")
    if cli:
        c = statistics.median(cli)
        print(f"`finetune-desk` (desktop.__main__), first paint: median {c * 1000:.0f} ms")
    print(f"ratio vs bare PySide6: {s / b:.2f} (target <= 1.5); ready: {r * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
