"""`finetune-desk` end to end: real trainer on the demo, real store, real detached processes.

Each run has its own FTDESK_HOME. Runs are shared between assertions (module fixtures) to keep
the whole file within a few minutes on two cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from desktop.cli import main
from trainer.protocol import read_all_events, read_status

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = "sentinel-7f3c9a1e5b2d4c6f8a0e"
_VALUE_SKIP = {"seq", "time", "kind", "step", "total_steps"}


# ---------------------------------------------------------------------------------------------
# helpers


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTDESK_")}
    env.update({"FTDESK_HOME": str(home), "PYTHONUNBUFFERED": "1", **extra})
    return env


def cli(
    home: Path, *args: str, timeout: float = 300, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run `finetune-desk ARGS` as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "desktop.cli", *args],
        env=cli_env(home, **extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def write_config(folder: Path, demo: Path, **training: Any) -> Path:
    """The demo config with absolute paths and these `training` overrides."""
    data = json.loads((demo / "config.json").read_text(encoding="utf-8"))
    data["model"]["name_or_path"] = str(demo / "model")
    data["dataset"]["path"] = str(demo / "train.jsonl")
    data["training"].update(training)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def job_id_from(output: str) -> str:
    match = re.search(r"^(\d{8}-\d{6}-[0-9a-f]{4}): ", output, re.M)
    assert match, output
    return match.group(1)


def metric_values(events_path: Path) -> set[tuple[int, str, float]]:
    """Every (step, series, value) of the metric events, read as plain JSON lines."""
    out = set()
    for line in events_path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["kind"] == "metric":
            for key, value in record.items():
                if key not in _VALUE_SKIP and isinstance(value, int | float):
                    out.add((record["step"], key, float(value)))
    return out


def stored_values(home: Path, job_id: str) -> tuple[set[tuple[int, str, float]], int]:
    """What `finetune-desk metrics JOB --json` returns, as (step, series, value), and how many."""
    done = cli(home, "metrics", job_id, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    values = {
        (row["step"], name, float(value))
        for row in rows
        for name, value in row.items()
        if name != "step"
    }
    count = sum(len(row) - 1 for row in rows)
    return values, count


def show_json(home: Path, job_id: str) -> dict[str, Any]:
    done = cli(home, "show", job_id, "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def assert_ingested_exactly_once(job: dict[str, Any], events_path: Path) -> None:
    """The store read the whole events file once: its offset is the file's end and its last
    seq the file's last (a watcher that re-read from the start would still store the same
    set of values, so the sets alone cannot show "none doubled")."""
    assert job["events_offset"] == events_path.stat().st_size
    assert job["events_last_seq"] == read_all_events(events_path)[-1].seq


def max_metric_step(events_path: Path) -> int:
    if not events_path.exists():
        return -1
    steps = [e.step for e in read_all_events(events_path) if e.kind == "metric"]
    return max(steps, default=-1)


# ---------------------------------------------------------------------------------------------
# A completed run, shared


@pytest.fixture(scope="module")
def completed(
    tmp_path_factory: pytest.TempPathFactory, demo_template: Path, worker_id: str
) -> dict[str, Any]:
    """One finished `run --follow`, made once even when pytest-xdist splits this module."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "cli-completed"
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = root / "result.json"
        if not result.exists():
            home = root / "home"
            config = write_config(
                root / "cfg", demo_template, max_steps=12, save_steps=6, logging_steps=1
            )
            done = cli(home, "run", str(config), "--follow", FTDESK_HF_TOKEN=SENTINEL)
            result.write_text(
                json.dumps(
                    {
                        "home": str(home),
                        "returncode": done.returncode,
                        "stdout": done.stdout,
                        "stderr": done.stderr,
                    }
                ),
                encoding="utf-8",
            )
        data = json.loads(result.read_text(encoding="utf-8"))
    home = Path(data["home"])
    job_id = job_id_from(data["stdout"])
    return {**data, "home": home, "job_id": job_id, "job_dir": home / "jobs" / job_id}


@pytest.mark.slow
def test_run_follow_completes_with_progress(completed: dict[str, Any]) -> None:
    assert completed["returncode"] == 0, completed["stdout"] + completed["stderr"]
    output = completed["stdout"]
    # One line per poll that saw new steps (a fast machine may finish in one or two polls).
    assert re.search(r"^step \d+/12 +loss \d+\.\d+ +lr \S+ +ETA (\d+:\d\d:\d\d|-)$", output, re.M)
    assert re.search(r"completed +final loss \d+\.\d+ +output /", output)
    status = read_status(completed["job_dir"])
    assert status is not None and status.state == "completed"


@pytest.mark.slow
def test_metrics_lists_every_logged_step(completed: dict[str, Any]) -> None:
    events = completed["job_dir"] / "events.jsonl"
    expected = metric_values(events)
    assert {step for step, _, _ in expected} == set(range(1, 13))
    stored, count = stored_values(completed["home"], completed["job_id"])
    assert stored == expected
    assert count == len(expected)
    assert_ingested_exactly_once(show_json(completed["home"], completed["job_id"]), events)
    table = cli(completed["home"], "metrics", completed["job_id"])
    assert table.returncode == 0
    steps = [int(line.split()[0]) for line in table.stdout.splitlines()[1:]]
    assert steps == list(range(1, 13))
    as_csv = cli(completed["home"], "metrics", completed["job_id"], "--csv")
    lines = as_csv.stdout.strip().splitlines()
    assert lines[0].startswith("step,time,loss") and len(lines) == 13


@pytest.mark.slow
def test_show_gives_final_loss_and_output(completed: dict[str, Any]) -> None:
    status = read_status(completed["job_dir"])
    assert status is not None and status.final_loss is not None
    done = cli(completed["home"], "show", completed["job_id"][:13])  # a unique prefix works
    assert done.returncode == 0, done.stderr
    assert re.search(r"^state: +completed", done.stdout, re.M)
    loss = re.search(r"^final loss: +(\S+)", done.stdout, re.M)
    assert loss and float(loss.group(1)) == pytest.approx(status.final_loss, abs=1e-4)
    output = re.search(r"^output: +(\S+)", done.stdout, re.M)
    assert output and Path(output.group(1)).is_dir()
    assert any(Path(output.group(1)).iterdir())
    listing = cli(completed["home"], "jobs", "--json")
    jobs = json.loads(listing.stdout)
    assert [(j["id"], j["state"]) for j in jobs] == [(completed["job_id"], "completed")]


@pytest.mark.slow
def test_a_secret_reaches_no_file(completed: dict[str, Any]) -> None:
    assert completed["returncode"] == 0
    files = [p for p in completed["home"].rglob("*") if p.is_file()]
    assert len(files) > 10  # the store, the job dir, the checkpoints, the output
    leaks = [p for p in files if SENTINEL.encode() in p.read_bytes()]
    assert leaks == []


@pytest.mark.slow
def test_run_follow_exits_1_with_the_reason_when_training_fails(
    tmp_path: Path, demo_template: Path
) -> None:
    home = tmp_path / "home"
    # The demo model without its weights: the checks before launch (which load the tokenizer
    # to count trainable tokens) pass, and the trainer fails when it loads the model.
    broken = tmp_path / "broken-model"
    shutil.copytree(demo_template / "model", broken)
    for weights in broken.glob("*.safetensors"):
        weights.unlink()
    config = write_config(tmp_path / "cfg", demo_template, max_steps=3)
    data = json.loads(config.read_text(encoding="utf-8"))
    data["model"]["name_or_path"] = str(broken)
    config.write_text(json.dumps(data), encoding="utf-8")
    done = cli(home, "run", str(config), "--follow")
    assert done.returncode == 1, done.stdout + done.stderr
    job_id = job_id_from(done.stdout)
    shown = show_json(home, job_id)
    assert shown["state"] == "failed"
    assert shown["state_reason"] and shown["state_reason"] in done.stdout
    assert f"finetune-desk logs {job_id}" in done.stdout


# ---------------------------------------------------------------------------------------------
# Reattach after kill -9 of the CLI


@pytest.mark.slow
def test_reattach_after_the_cli_was_killed(tmp_path: Path, demo_template: Path) -> None:
    home = tmp_path / "home"
    # Long enough (a few seconds even on a quiet machine) that the CLI dies mid-run.
    config = write_config(tmp_path / "cfg", demo_template, max_steps=150, save_steps=50)
    out = open(tmp_path / "follow.out", "w+", encoding="utf-8")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "desktop.cli", "run", str(config), "--follow"],
        env=cli_env(home),
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        jobs = home / "jobs"
        wait_for(lambda: "step " in (tmp_path / "follow.out").read_text(), 180, "training")
        job_id = job_id_from((tmp_path / "follow.out").read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        job_dir = jobs / job_id
        assert read_status(job_dir) is None  # the trainer outlived the CLI
        wait_for(lambda: read_status(job_dir) is not None, 240, "the trainer to end")
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
    data = show_json(home, job_id)
    assert data["state"] == "completed"
    assert_ingested_exactly_once(data, job_dir / "events.jsonl")
    expected = metric_values(job_dir / "events.jsonl")
    assert {step for step, _, _ in expected} == set(range(1, 151))
    assert data["metric_points"] == len(expected)
    stored, count = stored_values(home, job_id)
    assert stored == expected and count == len(expected)


# ---------------------------------------------------------------------------------------------
# Cancel, then resume


@pytest.mark.slow
def test_cancel_leaves_a_checkpoint_and_resume_continues(
    tmp_path: Path,
    demo_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    config = write_config(tmp_path / "cfg", demo_template, max_steps=150, save_steps=1000)
    started = cli(home, "run", str(config))
    assert started.returncode == 0, started.stderr
    job_id = job_id_from(started.stdout)
    events = home / "jobs" / job_id / "events.jsonl"
    wait_for(lambda: max_metric_step(events) >= 1, 180, "training steps")

    # `finetune-desk cancel` in this process: no interpreter start between seeing the step
    # and cancelling, so the run is still going on a fast machine.
    monkeypatch.setenv("FTDESK_HOME", str(home))
    assert main(["cancel", job_id]) == 0
    said = capsys.readouterr().out
    assert f"{job_id}: cancelled" in said and "checkpoint" in said
    data = show_json(home, job_id)
    assert data["state"] == "cancelled"
    assert data["last_checkpoint"] and Path(data["last_checkpoint"]).is_dir()
    stopped_at = max_metric_step(events)
    assert 1 <= stopped_at < 150

    resumed = cli(home, "run", "--resume", job_id, "--follow")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    data = show_json(home, job_id)
    assert data["state"] == "completed"
    starts = [
        e for e in read_all_events(events) if e.kind == "status" and e.resumed_from_step is not None
    ]
    assert len(starts) == 1
    resumed_from = starts[0].resumed_from_step
    assert resumed_from is not None and 1 <= resumed_from <= stopped_at
    assert f"resumed from step {resumed_from}" in resumed.stdout
    steps = {step for step, _, _ in metric_values(events)}
    assert steps == set(range(1, 151))
    stored, _ = stored_values(home, job_id)
    assert {s for s, _, _ in stored} == steps


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2 and a message that names it


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("FTDESK_HOME", str(folder))
    return folder


def _edit(path: Path, edit: Any) -> Path:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("unknown_field", "training.lerning_rate: unknown field"),
        ("out_of_bounds", "lora.r: Input should be greater than or equal to 1"),
        ("missing_dataset", "dataset.path"),
        ("malformed_line", "line 3"),
    ],
)
def test_bad_input_exits_2_naming_it(
    case: str,
    needle: str,
    home: Path,
    tmp_path: Path,
    demo_template: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path / "cfg", demo_template)
    if case == "unknown_field":
        _edit(config, lambda d: d["training"].update(lerning_rate=0.1))
    elif case == "out_of_bounds":
        _edit(config, lambda d: d["lora"].update(r=0))
    elif case == "missing_dataset":
        _edit(config, lambda d: d["dataset"].update(path=str(tmp_path / "gone.jsonl")))
    else:
        lines = (demo_template / "train.jsonl").read_text(encoding="utf-8").splitlines()[:6]
        lines[2] = '{"messages": [{"role": "user", "content": "no end"}'
        (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        _edit(config, lambda d: d["dataset"].update(path=str(tmp_path / "bad.jsonl")))
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert needle in err
    if case == "missing_dataset":
        assert "gone.jsonl" in err
    if case == "malformed_line":
        assert "bad.jsonl" in err
    assert main(["validate", str(config)]) == 2
    assert needle in capsys.readouterr().err
    # Nothing was spent: no job, no job folder.
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())


def test_unknown_job_id_exits_2_naming_it(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["show", "nosuchjob"], ["cancel", "nosuchjob"], ["metrics", "nosuchjob"]):
        assert main(command) == 2
        assert "nosuchjob" in capsys.readouterr().err
    assert main(["run", "--resume", "nosuchjob"]) == 2
    assert "nosuchjob" in capsys.readouterr().err


def test_missing_config_file_is_named(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err


@pytest.mark.slow
def test_no_keychain_says_so_and_never_prints_the_value(tmp_path: Path) -> None:
    backend = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    done = subprocess.run(
        [sys.executable, "-m", "desktop.cli", "keys", "set", "hf_token"],
        env=cli_env(tmp_path / "home", **backend),
        input="hf_secretvalue123\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "keychain" in done.stderr.lower() and "FTDESK_HF_TOKEN" in done.stderr
    assert "hf_secretvalue123" not in done.stdout + done.stderr
    status = cli(tmp_path / "home", "keys", "status", "hf_token", timeout=60, **backend)
    assert status.returncode == 0 and "unavailable" in status.stdout
    unknown = cli(tmp_path / "home", "keys", "set", "github_token", timeout=60, **backend)
    assert unknown.returncode == 2 and "github_token" in unknown.stderr


def test_no_arguments_opens_the_window(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: list[list[str]] = []

    def window_main(argv: list[str]) -> int:
        seen.append(list(argv))
        return 7

    window = types.ModuleType("desktop.views.app")
    window.main = window_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "desktop.views.app", window)
    assert main([]) == 7
    assert main(["--demo"]) == 7
    from desktop.__main__ import main as launcher_main

    assert launcher_main(["--offline"]) == 7
    assert seen == [[], ["--demo"], ["--offline"]]
    # A command goes to the CLI, never to the window.
    assert launcher_main(["jobs", "--json"]) == 0
    assert seen == [[], ["--demo"], ["--offline"]]


@pytest.mark.slow
def test_the_cli_process_never_imports_torch(tmp_path: Path, demo_template: Path) -> None:
    """`validate` checks the config and the data through the trainer runtime (a child
    process); the CLI's own process stays free of the ML stack."""
    config = write_config(tmp_path / "cfg", demo_template, max_steps=2)
    code = (
        "import sys\n"
        "from desktop.__main__ import main\n"
        f"code = main(['validate', {str(config)!r}])\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') "
        "if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=cli_env(tmp_path / "home"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "heavy: []" in done.stdout


# ---------------------------------------------------------------------------------------------
# The trainer runtime's checks, through the one gateway

DATASETS = ROOT / "tests" / "fixtures" / "datasets"


def test_check_data_prints_the_report_and_exits_2_when_unusable(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = DATASETS / "bad_json.jsonl"
    assert main(["check-data", str(bad)]) == 2
    out = capsys.readouterr().out
    assert "NOT usable" in out
    assert "line 3: invalid JSON" in out and "line 5: invalid JSON" in out
    good = DATASETS / "alpaca.csv"
    assert main(["check-data", str(good), "--field", "prompt=instruction", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] is True and report["format"] == "alpaca"
    assert main(["check-data", str(good), "--field", "prompt"]) == 2
    assert "FIELD=COLUMN" in capsys.readouterr().err


def test_doctor_json_is_the_runtimes_report_alone(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A runtime without torch: the trainer Python of the settings answers like the doctor
    # does when it cannot train, and gets the offline environment the --offline flag asks for.
    report = {"python": "3.12.1", "executable": "/opt/rt/python", "ok": False}
    report["problems"] = ["torch is not installed"]
    fake = tmp_path / "python"
    fake.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"report = {report!r}\nreport['warnings'] = [os.environ.get('HF_HUB_OFFLINE', 'online')]\n"
        "print(json.dumps(report))\nsys.exit(1)\n",
        encoding="utf-8",
    )
    fake.chmod(0o755)
    home.mkdir(parents=True)
    (home / "settings.json").write_text(json.dumps({"trainer_python": str(fake)}))
    assert main(["doctor", "--offline", "--json"]) == 1
    captured = capsys.readouterr()
    shown = json.loads(captured.out)
    assert shown["ok"] is False and shown["problems"] == ["torch is not installed"]
    assert shown["warnings"] == ["1"]
    assert f"trainer:       {fake}" in captured.err
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "problem: torch is not installed" in out and "NOT ready to train" in out
    (home / "settings.json").write_text(json.dumps({"trainer_python": str(tmp_path / "gone")}))
    assert main(["doctor"]) == 1
    assert f"cannot start the trainer runtime {tmp_path / 'gone'}" in capsys.readouterr().err
