"""The pod's startup script (`desktop/providers/runpod/bootstrap.py`) and boot (`trainer.pod_boot`).

The rendered script runs for real under `sh` with a sandbox workspace, this test environment's
Python standing for the pod image's (it has the trainer's requirements, as RunPod's PyTorch
image has torch), and a local server standing for RunPod's API (`tests/runpod_pod_fakes.py`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from runpod_pod_fakes import (
    POD_KEY,
    AgentProcess,
    FakeRunPodApi,
    agent_env,
    wait_until,
)

from desktop.providers.runpod.bootstrap import (
    container_args,
    default_requirements,
    pinned_requirements,
    pod_env,
    render_script,
)
from trainer.pod_boot import ensure_runtime

JOB = "20260202-101010-wxyz"


@pytest.fixture
def api() -> Iterator[FakeRunPodApi]:
    fake = FakeRunPodApi()
    yield fake
    fake.close()


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "boot.sh"
    path.write_text(render_script(JOB, ["ftdesk-never-installed==0.0"]))
    return path


def test_args_carry_the_script_with_the_pinned_requirements_and_never_a_runpod_key() -> None:
    requirements = default_requirements()
    script = render_script(JOB, requirements)
    args = json.loads(container_args(script))
    assert args["entrypoint"] == ["sh", "-c"]
    encoded = args["cmd"][0].split("echo ", 1)[1].split(" |", 1)[0]
    assert base64.b64decode(encoded).decode() == script
    assert len(container_args(script)) < 24_000
    names = {line.split("==")[0].lower() for line in requirements}
    assert {"transformers", "peft", "trl"} <= names and "torch" not in names
    assert all("==" in line for line in requirements)
    with pytest.raises(ValueError, match="torch is never installed"):
        pinned_requirements("torch==2.5.0\n", ["torch"])
    with pytest.raises(ValueError, match="pin no version of 'peft'"):
        pinned_requirements("trl==1.0\n", ["trl", "peft"])
    with pytest.raises(ValueError, match="not a plain folder name"):
        render_script("../etc", requirements)
    env = pod_env(
        JOB, "tok", budget_usd=Decimal("2.50"), max_runtime_s=7200, extra={"HF_TOKEN": "hf_x"}
    )
    assert env["FTDESK_BUDGET_USD"] == "2.50" and env["HF_TOKEN"] == "hf_x"
    assert not any("RUNPOD_API_KEY" in name for name in env)
    with pytest.raises(ValueError, match="RUNPOD_API_KEY may not be passed"):
        pod_env(JOB, "t", budget_usd=Decimal(1), max_runtime_s=1, extra={"RUNPOD_API_KEY": "k"})


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def test_a_restarted_container_never_trains_twice(
    tmp_path: Path, api: FakeRunPodApi, demo_template: Path
) -> None:
    workspace = tmp_path / "workspace"
    job = workspace / JOB
    env = agent_env(workspace, JOB, api, FTDESK_PYTHON=sys.executable)
    script = _script(tmp_path)
    first = AgentProcess(["sh", str(script)], env)
    pid = 0
    try:
        wait_until(lambda: first.json("GET", "/health")["runtime"] == "ready", "the install check")
        config = json.loads((demo_template / "config.json").read_text())
        config["model"]["name_or_path"] = str(demo_template / "model")
        config["dataset"]["path"] = "data/train.jsonl"
        for name, data in (
            ("data/train.jsonl", (demo_template / "train.jsonl").read_bytes()),
            ("config.json", json.dumps(config).encode()),
        ):
            first.json("PUT", f"/files/{name}?offset=0", data)
            digest = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            first.json("POST", f"/files/{name}/commit", digest)
        pid = first.json("POST", "/start", {})["pid"]
    finally:
        # The container dies with everything in it, the training included.
        first.stop()
        if pid:
            os.killpg(pid, signal.SIGKILL)
    assert pid, "the first boot never started training"
    wait_until(lambda: _gone(pid), "the first trainer to be gone")
    if (job / "events.jsonl").exists():  # whatever the killed trainer left, torn or not
        (job / "events.jsonl").rename(job / "events.killed-by-test.jsonl")
    assert not (job / "status.json").exists()

    second = AgentProcess(["sh", str(script)], env)
    try:
        health = second.json("GET", "/health")
        assert health["state"] == "recovery" and health["trainer_pid"] is None
        status, body, _ = second.request("POST", "/start", {})
        assert status == 409 and "never starts twice" in json.loads(body)["error"]
        assert second.json("GET", "/health")["trainer_pid"] is None
    finally:
        second.stop()
    log = (job / "train.log").read_text()
    assert log.count("container start") == 2
    assert "restarted while training ran" in log
    assert api.deletes() == []  # the app decides; the watchdog still guards money


@pytest.mark.parametrize(
    ("name", "record"),
    [
        ("agent.json", {"final": True, "reason": "keep-alive passed"}),
        ("status.json", {"state": "completed", "exit_code": 0}),
    ],
)
def test_a_restart_after_the_job_ended_deletes_the_pod_and_starts_nothing(
    tmp_path: Path, api: FakeRunPodApi, name: str, record: dict[str, object]
) -> None:
    workspace = tmp_path / "workspace"
    job = workspace / JOB
    job.mkdir(parents=True)
    (job / ".bootstrap-started").write_text("1\n")
    (job / name).write_text(json.dumps(record))
    env = agent_env(workspace, JOB, api, FTDESK_PYTHON=sys.executable)
    result = subprocess.run(
        ["sh", str(_script(tmp_path))], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [d.authorization for d in api.deletes()] == [f"Bearer {POD_KEY}"]
    assert " on port " not in result.stdout  # no agent
    assert not (job / ".runtime.json").exists() and not (job / ".training-started").exists()
    assert "restarted after the job ended" in (job / "train.log").read_text()


def test_the_install_is_skipped_when_the_requirements_import(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("ftdesk-never-installed==0.0\n")
    venv = tmp_path / "venv"
    assert ensure_runtime(sys.executable, venv, ("json", "zlib"), requirements, []) == (
        sys.executable
    )
    assert not venv.exists()


def _tiny_wheel(folder: Path) -> Path:
    """A one-module wheel, written by hand (no build backend, no index)."""
    files = {
        "ftdesk_probe/__init__.py": "VALUE = 42\n",
        "ftdesk_probe-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: ftdesk-probe\n"
        "Version: 0.1\n",
        "ftdesk_probe-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    files["ftdesk_probe-0.1.dist-info/RECORD"] = "\n".join(
        [*record, "ftdesk_probe-0.1.dist-info/RECORD,,"]
    )
    folder.mkdir()
    wheel = folder / "ftdesk_probe-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def test_a_missing_requirement_is_pip_installed_from_a_wheelhouse_into_a_venv(
    tmp_path: Path,
) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    _tiny_wheel(wheelhouse)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("ftdesk-probe==0.1\n")
    venv = tmp_path / "venv"
    pip_args = ["--no-index", "--find-links", str(wheelhouse)]
    python = ensure_runtime(sys.executable, venv, ("ftdesk_probe",), requirements, pip_args)
    assert python == str(venv / "bin" / "python")
    probe = subprocess.run(
        [python, "-c", "import ftdesk_probe; print(ftdesk_probe.VALUE)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "42"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    # A second boot finds it installed and does not run pip again (no wheelhouse needed).
    again = ensure_runtime(sys.executable, venv, ("ftdesk_probe",), requirements, ["--no-index"])
    assert again == python


def test_the_pinned_versions_installed_skip_the_slow_import_check(tmp_path: Path) -> None:
    """The pins are read from the packages' metadata: no import, so a pod whose image already
    holds them starts its trainer seconds sooner (bench/pod_overhead.py)."""
    from importlib.metadata import version

    from trainer.pod_boot import pins_present

    requirements = tmp_path / "requirements.txt"
    pins = f"pydantic=={version('pydantic')}  # pinned\nPyYAML=={version('pyyaml')}\n"
    requirements.write_text(pins)
    assert pins_present(sys.executable, requirements)
    venv = tmp_path / "venv"
    # A module that would not import is never tried: the pins decided.
    assert ensure_runtime(sys.executable, venv, ("ftdesk_never_here",), requirements, []) == (
        sys.executable
    )
    assert not venv.exists()
    for wrong in ("pydantic==0.0.1\n", "ftdesk-never-installed==1.0\n"):
        requirements.write_text(wrong)
        assert not pins_present(sys.executable, requirements)
