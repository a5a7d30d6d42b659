"""Offline mode: a full demo run leaves loopback never, and what is not on disk is refused.

Every process of the run (the CLI, `trainer doctor`, `trainer check-data`, the trainer, the
queue scheduler) loads a `sitecustomize` from PYTHONPATH that makes every non-loopback
connection and name lookup fail and records the attempt. Each process also records that the
guard was loaded, so the test knows the trainer itself was guarded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from desktop.cli import main
from desktop.models import Settings, save_settings
from trainer.protocol import read_status

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = "sentinel-offline-0b5d2e8c41a7"

GUARD = r"""
import json, os, socket, sys

_LOG = os.environ.get("NET_GUARD_LOG")


def _record(kind, **fields):
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "kind": kind, **fields}) + "\n")


def _loopback(host):
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").lower()
    return host in ("localhost", "::1", "0:0:0:0:0:0:0:1", "") or host.startswith("127.")


def _local_address(address):
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    return _loopback(address[0])


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo


def connect(self, address):
    if not _local_address(address):
        _record("connect", target=repr(address))
        raise OSError(101, "network blocked by the offline test")
    return _connect(self, address)


def connect_ex(self, address):
    if not _local_address(address):
        _record("connect", target=repr(address))
        return 101
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if host is not None and not _loopback(host):
        _record("lookup", target=repr(host))
        raise socket.gaierror(-2, "name lookup blocked by the offline test")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.getaddrinfo = getaddrinfo
_record(
    "loaded",
    argv=list(getattr(sys, "orig_argv", sys.argv)),
    hf_offline=os.environ.get("HF_HUB_OFFLINE"),
    has_hf_token="HF_TOKEN" in os.environ,
)
"""


def _config(folder: Path, demo: Path, **model: Any) -> Path:
    data = json.loads((demo / "config.json").read_text(encoding="utf-8"))
    data["model"]["name_or_path"] = str(demo / "model")
    data["model"].update(model)
    data["dataset"]["path"] = str(demo / "train.jsonl")
    data["training"].update(max_steps=6, save_steps=3, logging_steps=1)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def offline_run(
    tmp_path_factory: pytest.TempPathFactory, demo_template: Path, worker_id: str
) -> dict[str, Any]:
    """One guarded offline `run --follow`, made once even when pytest-xdist splits the module."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "offline-run"
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = root / "result.json"
        if not result.exists():
            result.write_text(json.dumps(_guarded_run(root, demo_template)), encoding="utf-8")
        data: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    data["home"] = Path(data["home"])
    return data


def _guarded_run(root: Path, demo_template: Path) -> dict[str, Any]:
    guard_dir = root / "guard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(GUARD, encoding="utf-8")
    log = root / "net.log"
    home = root / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FTDESK_", "HF_", "TRANSF"))}
    env.update(
        FTDESK_HOME=str(home),
        PYTHONPATH=os.pathsep.join([str(guard_dir), str(ROOT)]),
        NET_GUARD_LOG=str(log),
        FTDESK_HF_TOKEN=SENTINEL,
    )
    config = _config(root / "cfg", demo_template)
    done = subprocess.run(
        [sys.executable, "-m", "desktop.cli", "--offline", "run", str(config), "--follow"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    return {
        "returncode": done.returncode,
        "output": done.stdout + done.stderr,
        "records": records,
        "home": str(home),
    }


@pytest.mark.slow
def test_offline_run_completes_without_leaving_loopback(offline_run: dict[str, Any]) -> None:
    assert offline_run["returncode"] == 0, offline_run["output"]
    jobs = list((offline_run["home"] / "jobs").iterdir())
    status = read_status(jobs[0])
    assert status is not None and status.state == "completed"
    records = offline_run["records"]
    attempts = [r for r in records if r["kind"] != "loaded"]
    assert attempts == []
    loaded = [r for r in records if r["kind"] == "loaded"]
    trainers = [r for r in loaded if "run" in r["argv"] and "--job-dir" in r["argv"]]
    assert len(trainers) == 1, loaded  # the guard was active inside the trainer itself
    assert trainers[0]["hf_offline"] == "1"
    assert any("check-data" in r["argv"] for r in loaded)


@pytest.mark.slow
def test_a_secret_reaches_the_trainer_but_no_file(offline_run: dict[str, Any]) -> None:
    assert offline_run["returncode"] == 0
    trainers = [
        r for r in offline_run["records"] if r["kind"] == "loaded" and "--job-dir" in r["argv"]
    ]
    assert trainers and trainers[0]["has_hf_token"]  # it went where it is needed ...
    files = [p for p in offline_run["home"].rglob("*") if p.is_file()]
    assert len(files) > 10
    assert [p for p in files if SENTINEL.encode() in p.read_bytes()] == []  # ... and nowhere else


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("FTDESK_HOME", str(folder))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    return folder


def test_a_model_not_on_disk_is_refused_before_launch(
    home: Path, tmp_path: Path, demo_template: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path / "cfg", demo_template, name_or_path="some-org/some-model")
    for argv in (["--offline", "run", str(config)], ["run", str(config), "--offline"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "offline" in err and "some-org/some-model" in err
    save_settings(Settings(offline=True))  # the setting works like the flag
    assert main(["validate", str(config)]) == 2
    assert "some-org/some-model" in capsys.readouterr().err
    missing_folder = _config(tmp_path / "cfg2", demo_template, name_or_path=str(tmp_path / "nope"))
    assert main(["run", str(missing_folder)]) == 2
    assert "model.name_or_path" in capsys.readouterr().err
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())
