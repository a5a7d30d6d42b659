"""`finetune-desk --self-test` from source: one JSON line with the right values, exit 0, and
nothing unexpected on stderr; a failure gives `"ok": false` with the reason and exit 1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_PRESETS = len(list((REPO / "resources" / "presets").glob("*.json")))

# Qt's offscreen platform plugin says this when a window is shown; it is not the app's.
EXPECTED_STDERR = (re.compile(r"This plugin does not support propagateSizeHints\(\)"),)


def unexpected_stderr(stderr: str) -> list[str]:
    """The stderr lines that no pattern of EXPECTED_STDERR explains."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not any(p.fullmatch(line.strip()) for p in EXPECTED_STDERR)
    ]


def run_self_test(tmp_path: Path, extra_path: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", FTDESK_HOME=str(tmp_path / "home"))
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([extra_path, env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "desktop", "--self-test"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def one_json_line(stdout: str) -> dict[str, object]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    return data


@pytest.mark.slow
def test_self_test_from_source_reports_the_right_values(tmp_path: Path) -> None:
    proc = run_self_test(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = one_json_line(proc.stdout)
    assert report["ok"] is True
    assert report["presets"] == SOURCE_PRESETS
    assert report["torch_loaded"] is False
    assert report["frozen"] is False
    assert report["version"] == version("finetune-desk")
    assert report["qt_platform"] == "offscreen"
    assert isinstance(report["keychain"], str) and report["keychain"]
    assert unexpected_stderr(proc.stderr) == []


@pytest.mark.slow
def test_self_test_failure_is_ok_false_with_the_reason_and_exit_1(tmp_path: Path) -> None:
    # A site hook that loads a module named torch before the app runs: the check must see it.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys, types\nsys.modules['torch'] = types.ModuleType('torch')\n", encoding="utf-8"
    )
    proc = run_self_test(tmp_path, str(hook))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = one_json_line(proc.stdout)
    assert report["ok"] is False
    assert report["torch_loaded"] is True
    assert "torch" in str(report["reason"])
    assert unexpected_stderr(proc.stderr) == []
