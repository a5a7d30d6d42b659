"""The frozen app (packaging/finetune-desk.spec): built once per session into a tmp folder, then
run as a user would: `--self-test` offscreen, `jobs --json` on an empty data folder, a `run`
without a trainer runtime (one sentence, not a traceback), and the whole offline story: the
frozen app sets a runtime up from the wheelhouse (`runtime_fixtures`) with its bundled uv and
the index switched off, doctor says OK, and it trains the demo through the detached scheduler.
The fast tests at the top check the frozen code paths (scheduler command, runtime not set up,
trainer source path) in this process.
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
from typing import TYPE_CHECKING

import pytest

from desktop.core.errors import RuntimeNotReadyError
from desktop.core.runtime import NOT_SET_UP, TrainerRuntime, source_root
from desktop.providers.local.provider import LocalProvider

# The bundle is built once per worker (session fixture): every test that needs it runs on one.
pytestmark = pytest.mark.xdist_group("bundle")

if TYPE_CHECKING:
    from runtime_fixtures import SetUpRuntime

pytest_plugins = ["runtime_fixtures"]

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


def test_frozen_app_gives_the_runtime_the_systems_libraries(frozen: Path) -> None:
    # The bootloader points LD_LIBRARY_PATH at the bundle (keeping the original in *_ORIG).
    bundled = {"LD_LIBRARY_PATH": str(frozen), "LD_LIBRARY_PATH_ORIG": "/opt/cuda/lib64"}
    env = TrainerRuntime("/opt/rt/bin/python").child_env(base=bundled)
    assert env["LD_LIBRARY_PATH"] == "/opt/cuda/lib64" and "LD_LIBRARY_PATH_ORIG" not in env
    env = TrainerRuntime("/opt/rt/bin/python").child_env(base={"LD_LIBRARY_PATH": str(frozen)})
    assert "LD_LIBRARY_PATH" not in env


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


def run_frozen(
    bundle: Bundle, tmp_path: Path, *args: str, timeout: float = 300, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(QT_QPA_PLATFORM="offscreen", FTDESK_HOME=str(tmp_path / "home"), **extra)
    return subprocess.run(
        [str(bundle.exe), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=timeout,
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


@pytest.mark.slow
def test_bundle_ships_uv_and_the_trainers_pins(bundle: Bundle, tmp_path: Path) -> None:
    import lzma

    internal = bundle.exe.parent / "_internal"
    uv = tmp_path / "uv"
    uv.write_bytes(lzma.decompress((internal / "uv.xz").read_bytes()))
    uv.chmod(0o755)
    proc = subprocess.run([str(uv), "--version"], capture_output=True, text=True, check=False)
    assert proc.stdout.startswith(f"uv {version('uv')}"), proc.stdout + proc.stderr
    pins = (internal / "constraints.txt").read_text(encoding="utf-8")
    assert pins == (REPO / "constraints.txt").read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_frozen_app_sets_a_runtime_up_offline_and_trains_the_demo_with_it(
    bundle: Bundle,
    wheelhouse: Path,
    wheelhouse_runtime: SetUpRuntime,
    demo_template: Path,
    tmp_path: Path,
) -> None:
    # The wheels are unpacked in the session's uv cache already: this setup links them.
    cache = str(wheelhouse_runtime.home.parent / "uv-cache")
    started = time.monotonic()
    setup = run_frozen(
        bundle, tmp_path, "runtime", "setup", "--wheelhouse", str(wheelhouse), timeout=900,
        UV_CACHE_DIR=cache,
    )  # fmt: skip
    setup_s = time.monotonic() - started
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    assert "--no-index --find-links" in setup.stdout
    # The bundle's uv, unpacked into the data folder.
    assert f"{tmp_path / 'home' / 'runtime' / 'bin' / 'uv'} pip install" in setup.stdout
    python = tmp_path / "home" / "runtime" / "venv" / "bin" / "python"
    status = run_frozen(bundle, tmp_path, "runtime", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert (report["python"], report["ok"], report["kind"]) == (str(python), True, "managed")

    config = json.loads((demo_template / "config.json").read_text(encoding="utf-8"))
    config["model"]["name_or_path"] = str(demo_template / "model")
    config["dataset"]["path"] = str(demo_template / "train.jsonl")
    config["training"].update(max_steps=4, save_steps=2, logging_steps=1)
    config_path = tmp_path / "demo.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    started = time.monotonic()
    done = run_frozen(bundle, tmp_path, "run", str(config_path), "--follow", timeout=900)
    train_s = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    job_id = re.search(r"^(\d{8}-\d{6}-[0-9a-f]{4}): ", done.stdout, re.M)
    assert job_id, done.stdout
    show = run_frozen(bundle, tmp_path, "show", job_id.group(1), "--json")
    assert json.loads(show.stdout)["state"] == "completed", show.stdout + show.stderr
    metrics = run_frozen(bundle, tmp_path, "metrics", job_id.group(1), "--json")
    points = json.loads(metrics.stdout)
    assert [p["step"] for p in points if "loss" in p] == [1, 2, 3, 4], metrics.stdout
    # The frozen app has no Python and no torch: the runtime's Python trained it.
    print(f"frozen runtime setup {setup_s:.1f} s, demo run {train_s:.1f} s")


def check_desktop_file(path: Path) -> None:
    """`desktop-file-validate` where installed, else the keys a menu needs."""
    validator = shutil.which("desktop-file-validate")
    if validator:
        proc = subprocess.run([validator, str(path)], capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
        return
    import configparser

    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # type: ignore[assignment,method-assign]
    entry.read(path, encoding="utf-8")
    keys = entry["Desktop Entry"]
    assert keys["Type"] == "Application" and keys["Name"] and keys["Exec"] and keys["Icon"]
    assert keys["Categories"].endswith(";") and keys["Terminal"] in ("true", "false")


@pytest.mark.slow
def test_linux_tarball_holds_the_app_a_valid_desktop_file_and_the_icon(
    bundle: Bundle, tmp_path: Path
) -> None:
    import tarfile

    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "packaging" / "linux" / "tarball.py"),
         str(bundle.exe.parent), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    archive = Path(proc.stdout.strip())
    assert archive.name == f"finetune-desk-{version('finetune-desk')}-linux-x86_64.tar.gz"
    print(f"tar.gz: {archive.stat().st_size / 1e6:.0f} MB in {time.monotonic() - started:.0f} s")
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for name in ("finetune-desk.desktop", "finetune-desk.svg", "install-desktop-entry.sh"):
            tar.extract(members[f"finetune-desk/{name}"], tmp_path / "x", filter="data")
    assert members["finetune-desk/finetune-desk"].mode & 0o111
    assert members["finetune-desk/install-desktop-entry.sh"].mode & 0o111
    assert "finetune-desk/_internal/uv.xz" in members
    assert "finetune-desk/_internal/trainer_src/trainer/__main__.py" in members
    assert len(members) > 100
    folder = tmp_path / "x" / "finetune-desk"
    check_desktop_file(folder / "finetune-desk.desktop")
    assert (folder / "finetune-desk.svg").read_bytes() == (
        REPO / "resources" / "icon.svg"
    ).read_bytes()
    # The menu entry, installed for a user: Exec points at wherever the folder was unpacked.
    data = tmp_path / "share"
    env = {**os.environ, "XDG_DATA_HOME": str(data)}
    subprocess.run(["sh", str(folder / "install-desktop-entry.sh")], env=env, check=True)
    installed = data / "applications" / "finetune-desk.desktop"
    check_desktop_file(installed)
    assert f'Exec="{folder / "finetune-desk"}"' in installed.read_text(encoding="utf-8")
    assert (data / "icons" / "hicolor" / "scalable" / "apps" / "finetune-desk.svg").is_file()
