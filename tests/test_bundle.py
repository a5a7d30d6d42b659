"""The frozen app (packaging/finetune-desk.spec): built once per session into a tmp folder, then
run as a user would: `--self-test` offscreen, `jobs --json` on an empty data folder, and a `run`
without a trainer runtime (one sentence, not a traceback). The fast tests at the top check the
frozen code paths (scheduler command, runtime not set up, trainer source path) in this process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

from desktop.core.errors import RuntimeNotReadyError
from desktop.core.runtime import NOT_SET_UP, TrainerRuntime, source_root
from desktop.providers.local.provider import LocalProvider

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "packaging" / "finetune-desk.spec"
SOURCE_PRESETS = len(list((REPO / "resources" / "presets").glob("*.json")))
MAX_BUNDLE_MB = 250

# Qt's offscreen platform plugin says this when a window is shown; it is not the app's.
EXPECTED_STDERR = (re.compile(r"This plugin does not support propagateSizeHints\(\)"),)


def unexpected_stderr(stderr: str) -> list[str]:
    """The stderr lines that no pattern of EXPECTED_STDERR explains."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not any(p.fullmatch(line.strip()) for p in EXPECTED_STDERR)
    ]


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This process seen as a PyInstaller bundle whose data folder is `tmp_path`."""
    (tmp_path / "trainer_src" / "trainer").mkdir(parents=True)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    return tmp_path


def test_frozen_app_starts_the_scheduler_through_its_own_executable(
    frozen: Path, tmp_path: Path
) -> None:
    provider = LocalProvider(tmp_path / "home")
    assert provider.scheduler_argv == [
        sys.executable,
        "--scheduler",
        "--home",
        str(tmp_path / "home"),
    ]


def test_frozen_app_without_a_runtime_says_it_is_not_set_up(frozen: Path) -> None:
    runtime = TrainerRuntime()
    assert runtime.python == ""
    with pytest.raises(RuntimeNotReadyError) as caught:
        runtime.doctor()
    assert str(caught.value) == NOT_SET_UP
    assert "Settings → Trainer runtime" in NOT_SET_UP and "not set up yet" in NOT_SET_UP
    assert TrainerRuntime("/opt/rt/bin/python").argv("doctor")[0] == "/opt/rt/bin/python"


def test_frozen_app_gives_the_runtime_the_bundled_trainer_source(frozen: Path) -> None:
    assert source_root() == frozen / "trainer_src"
    env = TrainerRuntime("/opt/rt/bin/python").child_env(base={"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(frozen / "trainer_src"), "/x"]


@dataclass
class Bundle:
    exe: Path
    size_mb: float
    build_s: float


def _size_bytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="session")
def bundle(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Bundle]:
    """The bundle built from this checkout, once per session; its size and build time are
    printed in the terminal summary."""
    out = tmp_path_factory.mktemp("bundle")
    started = time.monotonic()
    pyinstaller = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN"]
    proc = subprocess.run(
        [*pyinstaller, "--distpath", str(out / "dist"), "--workpath", str(out / "work"), str(SPEC)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    build_s = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-4000:]
    folder = out / "dist" / "finetune-desk"
    built = Bundle(folder / "finetune-desk", _size_bytes(folder) / 1e6, build_s)
    # Shown in every run (-q included), past the output capture.
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(
                f"\nfrozen bundle: {built.size_mb:.0f} MB, built in {built.build_s:.0f} s "
                f"({folder})"
            )
    yield built
    shutil.rmtree(out / "work", ignore_errors=True)


def run_frozen(bundle: Bundle, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(QT_QPA_PLATFORM="offscreen", FTDESK_HOME=str(tmp_path / "home"))
    return subprocess.run(
        [str(bundle.exe), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_bundle_self_test(bundle: Bundle, tmp_path: Path) -> None:
    assert bundle.exe.is_file()
    assert bundle.size_mb < MAX_BUNDLE_MB, f"the bundle weighs {bundle.size_mb:.0f} MB"
    proc = run_frozen(bundle, tmp_path, "--self-test")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    report = json.loads(lines[0])
    assert report["ok"] is True
    assert report["presets"] == SOURCE_PRESETS
    assert report["torch_loaded"] is False
    assert report["frozen"] is True
    assert report["version"] == version("finetune-desk")
    assert report["qt_platform"] == "offscreen"
    assert unexpected_stderr(proc.stderr) == []
    trainer_src = bundle.exe.parent / "_internal" / "trainer_src" / "trainer"
    assert (trainer_src / "__main__.py").is_file() and (trainer_src / "config.py").is_file()


@pytest.mark.slow
def test_bundle_lists_no_jobs_on_an_empty_data_folder(bundle: Bundle, tmp_path: Path) -> None:
    proc = run_frozen(bundle, tmp_path, "jobs", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == []
    assert unexpected_stderr(proc.stderr) == []


@pytest.mark.slow
def test_bundle_run_without_a_runtime_says_how_to_set_one_up(
    bundle: Bundle, tmp_path: Path
) -> None:
    config = tmp_path / "lora.json"
    shutil.copy(REPO / "resources" / "presets" / "lora-8b-24gb.json", config)
    proc = run_frozen(bundle, tmp_path, "run", str(config))
    assert proc.returncode == RuntimeNotReadyError.exit_code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"error: {NOT_SET_UP}" in proc.stderr.splitlines(), proc.stderr
