"""The trainer runtime manager: `finetune-desk runtime setup|status|remove` and its core.

Fast tests: the torch build chosen from recorded `nvidia-smi` answers (never run for real
here), the plan's uv commands, the disk-space refusal, Cancel (a fake uv at the edge: a script
that sleeps), use-existing, remove, and the one sentence for each broken runtime in the CLI.
Slow tests (a real wheelhouse, `runtime_fixtures`): a setup that failed halfway resumes without
reinstalling torch, and `runtime status` then says doctor's verdict is OK.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from desktop.cli import main
from desktop.core.errors import RuntimeNotReadyError
from desktop.core.runtime import SETUP_FIX
from desktop.core.runtime_plan import (
    GB,
    constraints_file,
    plan_setup,
    read_setup_state,
    runtime_requirements,
    torch_build_for,
)
from desktop.core.runtime_setup import SetupCancelledError, SetupRun

if TYPE_CHECKING:
    from runtime_fixtures import SetUpRuntime

pytest_plugins = ["runtime_fixtures"]

SMI_HEADER = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.124.06             Driver Version: 570.124.06     CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|   0  NVIDIA GeForce RTX 4090        Off |   00000000:01:00.0 Off |                  Off |
"""
SMI_NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure "
    "that the latest NVIDIA driver is installed and running.\n"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data folder for this test."""
    folder = tmp_path / "home"
    monkeypatch.setenv("FTDESK_HOME", str(folder))
    return folder


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def set_runtime(home: Path, python: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "settings.json").write_text(json.dumps({"trainer_python": python}), encoding="utf-8")


def stored_runtime(home: Path) -> str | None:
    value: str | None = json.loads((home / "settings.json").read_text(encoding="utf-8"))[
        "trainer_python"
    ]
    return value


# ---------------------------------------------------------------------------------------------
# Which torch (decisions only: nvidia-smi's recorded answers)


@pytest.mark.parametrize(
    ("found", "text", "build", "words"),
    [
        (False, "", "cpu", "no NVIDIA GPU found"),
        (True, SMI_NO_DRIVER, "cpu", "does not reach the driver"),
        (True, SMI_HEADER.format(cuda="12.8"), "cu128", "CUDA 12.8"),
        (True, SMI_HEADER.format(cuda="12.9"), "cu128", "CUDA 12.9"),
        (True, SMI_HEADER.format(cuda="13.1"), "cu130", "CUDA 13.1"),
        (True, SMI_HEADER.format(cuda="12.6"), "cu126", "CUDA 12.6"),
        (True, SMI_HEADER.format(cuda="12.4"), "cu118", "CUDA 12.4"),
        (True, SMI_HEADER.format(cuda="11.4"), "cpu", "update the driver"),
    ],
)
def test_the_torch_build_follows_the_nvidia_driver(
    found: bool, text: str, build: str, words: str
) -> None:
    chosen = torch_build_for(found, text, platform="linux")
    assert chosen.name == build
    assert chosen.index_url == f"https://download.pytorch.org/whl/{build}"
    assert words in chosen.reason


def test_macos_takes_pypis_torch() -> None:
    assert torch_build_for(False, "", platform="darwin").name == "default"


def test_a_cuda_plan_installs_torch_from_its_index_then_the_rest_from_pypi(home: Path) -> None:
    plan = plan_setup(
        home, smi=lambda: (True, SMI_HEADER.format(cuda="12.8")), free_bytes=lambda _p: 100 * GB
    )
    steps = {step.name: step.argv for step in plan.steps()}
    assert list(steps) == ["venv", "torch", "requirements"]
    assert steps["torch"][-3:-1] == ["--index-url", "https://download.pytorch.org/whl/cu128"]
    assert steps["torch"][-1].startswith("torch")
    assert "--index-url" not in steps["requirements"] and "--no-index" not in steps["requirements"]
    assert plan.constraints == constraints_file() and plan.constraints is not None
    assert ["--constraints", str(plan.constraints)] == steps["torch"][5:7]
    assert plan.describe()[0] == (
        f"disk space: needs about 9.0 GB in {home / 'runtime'}, 100.0 GB free"
    )
    assert plan.python == home / "runtime" / "venv" / "bin" / "python"
    # Without a wheelhouse, any Python the trainer supports, 3.13's patch releases included.
    assert plan.base_python == ">=3.11,<3.14"
    assert steps["venv"][-3:] == ["--python", ">=3.11,<3.14", str(plan.venv)]


def test_the_trainers_requirements_come_from_the_apps_metadata() -> None:
    names = {r.split(">")[0].split("<")[0].split("=")[0].lower() for r in runtime_requirements()}
    assert {"torch", "transformers", "peft", "trl", "accelerate", "datasets"} <= names
    assert {"pydantic", "pyyaml"} <= names  # the config contract, imported by the trainer
    assert "pyside6-essentials" not in names


def fake_wheelhouse(folder: Path) -> Path:
    folder.mkdir()
    (folder / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"x" * 1000)
    return folder


def test_a_wheelhouse_plan_switches_the_index_off(home: Path, tmp_path: Path) -> None:
    wh = fake_wheelhouse(tmp_path / "wh")
    plan = plan_setup(home, wheelhouse=wh, free_bytes=lambda _p: 100 * GB)
    assert plan.base_python == "3.11"  # read from the torch wheel's tag
    for step in plan.steps()[1:]:
        assert ["--no-index", "--find-links", str(wh)] == step.argv[7:10]
    assert "index switched off" in plan.describe()[3]


def test_a_wheelhouse_without_torch_is_refused(home: Path, tmp_path: Path) -> None:
    (tmp_path / "wh").mkdir()
    with pytest.raises(RuntimeNotReadyError, match=r"holds no torch wheel; fill it with"):
        plan_setup(home, wheelhouse=tmp_path / "wh")


def test_setup_refuses_a_disk_too_small_with_figures_and_starts_nothing(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "uv-ran"
    monkeypatch.setenv("FTDESK_UV", str(write_script(tmp_path / "uv", f"touch {marker}\n")))
    plan = plan_setup(home, smi=lambda: (False, ""), free_bytes=lambda _p: 1 * GB)
    assert not plan.fits()
    with pytest.raises(RuntimeNotReadyError) as caught:
        SetupRun(plan).run()
    assert str(caught.value).startswith(
        f"setting up the trainer runtime needs about 3.0 GB in {home / 'runtime'}, but only "
        "1.0 GB is free; free some space"
    )
    assert not marker.exists() and not (home / "runtime" / "venv").exists()


def test_a_frozen_app_unpacks_its_compressed_uv_once(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lzma

    from desktop.core.runtime_plan import find_uv

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "uv.xz").write_bytes(lzma.compress(b"#!/bin/sh\necho uv 1\n"))
    monkeypatch.delenv("FTDESK_UV", raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(bundle), raising=False)
    uv = Path(find_uv())
    assert uv == home / "runtime" / "bin" / "uv"
    assert subprocess.run([uv], capture_output=True, text=True).stdout == "uv 1\n"
    inode = uv.stat().st_ino
    assert Path(find_uv()).stat().st_ino == inode  # unpacked once, not at every call
    # A new app version's uv replaces it.
    (bundle / "uv.xz").write_bytes(lzma.compress(b"#!/bin/sh\necho uv 2\n"))
    os.utime(bundle / "uv.xz", ns=(1, 1))
    assert subprocess.run([find_uv()], capture_output=True, text=True).stdout == "uv 2\n"


# ---------------------------------------------------------------------------------------------
# Cancel


def test_cancel_kills_uv_and_its_children_and_leaves_the_setup_resumable(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = tmp_path / "pids"
    uv = write_script(
        tmp_path / "uv",
        f'echo "fake uv $1"\nsleep 600 &\necho "$$ $!" > {pids}.tmp\nmv {pids}.tmp {pids}\nwait\n',
    )
    monkeypatch.setenv("FTDESK_UV", str(uv))
    plan = plan_setup(home, wheelhouse=fake_wheelhouse(tmp_path / "wh"), free_bytes=lambda _: GB)
    lines: list[str] = []
    run = SetupRun(plan, on_line=lines.append)
    outcome: list[BaseException] = []

    def target() -> None:
        try:
            run.run()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 60
    while not pids.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    uv_pid, sleep_pid = (int(p) for p in pids.read_text().split())
    run.cancel()
    thread.join(60)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], SetupCancelledError)
    assert "resumes it" in str(outcome[0])
    assert "fake uv venv" in lines
    for pid in (uv_pid, sleep_pid):
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(0.05)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    state = read_setup_state(home)
    assert state["state"] == "cancelled" and state["steps_done"] == []


# ---------------------------------------------------------------------------------------------
# Use existing, remove (the CLI, in this process)


@pytest.mark.slow
def test_setup_with_an_existing_venv_folder_stores_its_python(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    venv = Path(sys.prefix)  # this test run's own venv has the train extra
    assert main(["runtime", "setup", "--python", str(venv), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["python"] == str(venv / "bin" / "python")
    assert out["doctor"]["ok"] is True
    assert stored_runtime(home) == str(venv / "bin" / "python")


def test_remove_deletes_the_apps_venv_and_forgets_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    venv = home / "runtime" / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    set_runtime(home, str(venv / "bin" / "python"))
    assert main(["runtime", "remove", "--yes"]) == 0
    assert not venv.exists()
    assert stored_runtime(home) is None
    assert f"removed {venv}" in capsys.readouterr().out


def test_remove_refuses_a_persons_own_python(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    own = tmp_path / "own-venv"
    (own / "bin").mkdir(parents=True)
    set_runtime(home, str(own / "bin" / "python"))
    assert main(["runtime", "remove", "--yes"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: the trainer runtime {own / 'bin' / 'python'} is your own Python, not one this "
        "app set up, so nothing was deleted; choose another in Settings → Trainer runtime, or "
        "remove it yourself\n"
    )
    assert own.exists() and stored_runtime(home) == str(own / "bin" / "python")


def test_remove_without_yes_and_without_a_terminal_asks_for_yes(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 (closed by pytest)
    assert main(["runtime", "remove"]) == 2
    assert "add --yes to confirm" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Broken runtimes: one sentence with the fix, in `runtime status`, `doctor` and `run`


def cli_sentence(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    err = capsys.readouterr().err
    assert code != 0, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def demo_config(tmp_path: Path, demo_dir: Path) -> Path:
    data = json.loads((demo_dir / "config.json").read_text(encoding="utf-8"))
    data["model"]["name_or_path"] = str(demo_dir / "model")
    data["dataset"]["path"] = str(demo_dir / "train.jsonl")
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_a_folder_that_is_not_a_venv_gets_one_sentence_in_the_cli(
    home: Path, tmp_path: Path, demo_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "not-a-venv"
    folder.mkdir()
    set_runtime(home, str(folder))
    expected = (
        f"error: the trainer runtime {folder} is a folder but not a virtual environment (it "
        f"has no bin/python); {SETUP_FIX}"
    )
    assert cli_sentence(capsys, "runtime", "status") == expected
    assert cli_sentence(capsys, "doctor") == expected
    assert cli_sentence(capsys, "run", str(demo_config)) == expected


def test_a_python_too_old_gets_the_supported_versions_in_the_cli(
    home: Path, tmp_path: Path, demo_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An old interpreter, at the edge: it answers the version probe and cannot run the trainer.
    old = write_script(
        tmp_path / "python3.9",
        'if [ "$1" = "-I" ]; then echo 3.9; exit 0; fi\n'
        'echo "SyntaxError: future feature annotations is not defined" >&2\nexit 1\n',
    )
    set_runtime(home, str(old))
    expected = (
        f"error: the trainer runtime {old} is Python 3.9, but the trainer supports Python 3.11 "
        f"to 3.13; {SETUP_FIX}"
    )
    assert cli_sentence(capsys, "runtime", "status") == expected
    assert cli_sentence(capsys, "doctor") == expected
    assert cli_sentence(capsys, "run", str(demo_config)) == expected


@pytest.fixture(scope="module")
def torchless_venv(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    """A real venv with the config contract's packages (pydantic, PyYAML) and no torch."""
    from desktop.core.runtime_plan import find_uv

    venv = tmp_path_factory.mktemp("torchless") / "venv"
    env = {**os.environ, "UV_CACHE_DIR": str(venv.parent / "cache")}
    uv = find_uv()
    for argv in (
        [uv, "venv", "--python", sys.executable, str(venv)],
        [uv, "pip", "install", "--python", str(venv / "bin" / "python"), "--no-index",
         "--find-links", str(wheelhouse), "pydantic", "pyyaml"],
    ):  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        assert proc.returncode == 0, proc.stderr
    return venv


@pytest.mark.slow
def test_a_runtime_without_torch_gets_one_sentence_in_the_cli(
    home: Path, torchless_venv: Path, demo_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    python = torchless_venv / "bin" / "python"
    set_runtime(home, str(python))
    missing = "(the trainer's packages are missing); " + SETUP_FIX
    expected = f"error: the trainer runtime {python} has no torch {missing}"
    assert cli_sentence(capsys, "runtime", "status") == expected
    # doctor prints its own report, then the same sentence.
    assert cli_sentence(capsys, "doctor") == expected
    # run checks the data first, whose first import is transformers.
    sentence = cli_sentence(capsys, "run", str(demo_config))
    assert sentence.startswith(
        f"error: the trainer runtime {python} has no transformers (the trainer's packages are "
        f"missing): `{python} -m trainer check-data` printed no JSON report (exit code 1): "
    )
    assert sentence.endswith(SETUP_FIX)


# ---------------------------------------------------------------------------------------------
# The wheelhouse: a real setup with the index switched off


@pytest.mark.slow
def test_a_failed_setup_resumes_without_reinstalling_torch(
    wheelhouse_runtime: SetUpRuntime,
) -> None:
    rt = wheelhouse_runtime
    assert rt.failed.returncode == RuntimeNotReadyError.exit_code
    assert "failed while installing the trainer's requirements" in rt.failed.stderr
    assert "it resumes" in rt.failed.stderr and "Traceback" not in rt.failed.stderr
    assert rt.failed_state["state"] == "failed"
    assert rt.failed_state["steps_done"] == ["venv", "torch"]
    # The resumed attempt kept the venv and torch: the same file, not a reinstalled copy.
    assert "resuming: kept from the last attempt: venv, torch" in rt.resumed.stdout
    assert "making the venv" not in rt.resumed.stdout
    assert rt.torch_inode_after_resume == rt.torch_inode_after_failure
    assert "--no-index --find-links" in rt.resumed.stdout
    assert "disk space: needs about" in rt.failed.stdout.splitlines()[0]


@pytest.mark.slow
def test_runtime_status_says_doctor_is_ok_for_the_wheelhouse_runtime(
    wheelhouse_runtime: SetUpRuntime,
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "desktop.cli", "runtime", "status", "--json"],
        env={**os.environ, "FTDESK_HOME": str(wheelhouse_runtime.home)},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["ok"] is True and status["problem"] is None
    assert status["python"] == str(wheelhouse_runtime.python)
    assert status["kind"] == "managed" and status["setup"] == "ready"
    assert status["torch"].endswith("+cpu") and status["device"] == "cpu"
    assert status["doctor"]["ok"] is True
