"""`finetune-desk run CONFIG --provider runpod --gpu ID[,ID...] [--cloud ...] --budget USD
[--max-runtime 2h]`: the flags become this run's RunPod options; bad values are refused with
the flag named, before anything is spent."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from desktop.cli import build_parser, main
from desktop.cli.runpod_flags import parse_duration, runpod_settings
from desktop.core.errors import ConfigError
from desktop.models import RunpodOptions, Settings


def parsed(*args: str) -> Settings:
    ns = build_parser().parse_args(["run", "config.json", *args])
    return runpod_settings(ns, Settings(runpod=RunpodOptions(cloud="community")))


def test_the_flags_become_this_runs_runpod_options() -> None:
    settings = parsed(
        "--provider", "runpod", "--gpu", "NVIDIA A40, NVIDIA L40S", "--budget", "$2.50",
        "--max-runtime", "1h30m",
    )  # fmt: skip
    assert settings.runpod.gpu_ids == ("NVIDIA A40", "NVIDIA L40S")
    assert settings.runpod.budget_usd == Decimal("2.50")
    assert settings.runpod.max_runtime_s == 5400
    assert settings.runpod.cloud == "community"  # the saved default, no flag given
    assert parsed("--provider", "runpod", "--gpu", "X", "--cloud", "secure").runpod.cloud == (
        "secure"
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("2h", 7200), ("90m", 5400), ("3600", 3600), ("1d", 86400)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--gpu", "X"), "--gpu only apply with --provider runpod"),
        (("--provider", "runpod"), "choose GPU types with --gpu"),
        (("--provider", "runpod", "--gpu", "X", "--budget", "-1"), "--budget '-1'"),
        (("--provider", "runpod", "--gpu", "X", "--budget", "lots"), "--budget 'lots'"),
        (("--provider", "runpod", "--gpu", "X", "--max-runtime", "2x"), "--max-runtime '2x'"),
        (("--provider", "runpod", "--gpu", "X", "--max-runtime", "5s"), "max_runtime_s"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("$", r"\$")):
        parsed(*args)


def test_the_cli_refuses_them_before_anything_is_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FTDESK_HOME", str(tmp_path / "home"))
    config = tmp_path / "config.json"
    config.write_text("{}", encoding="utf-8")
    code = main(["run", str(config), "--provider", "runpod", "--gpu", "X", "--budget", "0"])
    assert code == ConfigError.exit_code
    assert "--budget '0': the budget must be above $0" in capsys.readouterr().err
    assert not (tmp_path / "home" / "jobs").exists() or not any(
        (tmp_path / "home" / "jobs").iterdir()
    )


@pytest.mark.slow
def test_a_whole_runpod_job_from_the_cli(demo_dir: Path, tmp_path: Path) -> None:
    """`run --provider runpod --follow` in its own process, against the emulator through its
    proxy (no test seam in the app): the job completes, zero pods remain, and the account key
    is in no file under FTDESK_HOME."""
    import json
    import os
    import subprocess
    import sys

    from runpod_emulator import RunpodEmulator, serve_emulator
    from runpod_emulator.runpod_pods import LocalPodRunner

    sentinel = "rp-SENTINEL-cli-account-key-0123456789"
    config = demo_dir / "config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    data["training"]["max_steps"] = 4
    config.write_text(json.dumps(data), encoding="utf-8")
    home = tmp_path / "home"
    runner = LocalPodRunner(tmp_path / "pods", extra_env={"FTDESK_CLOCK_SYNC_S": "1"})
    emulator = RunpodEmulator(api_key=sentinel, runner=runner)
    emulator.provisioning_s = emulator.starting_s = 0
    with serve_emulator(emulator):
        runner.api_url = emulator.url
        env = {k: v for k, v in os.environ.items() if not k.startswith("FTDESK_")}
        env.update(
            FTDESK_HOME=str(home),
            FTDESK_RUNPOD_API_URL=emulator.url,
            FTDESK_RUNPOD_PROXY_URL=emulator.proxy_template,
            FTDESK_RUNPOD_API_KEY=sentinel,
        )
        try:
            done = subprocess.run(
                [sys.executable, "-m", "desktop.cli", "run", str(config), "--provider",
                 "runpod", "--gpu", "NVIDIA GeForce RTX 4090", "--budget", "5", "--follow"],
                env=env, capture_output=True, text=True, timeout=400, check=False,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            runner.join()
        finally:
            runner.close()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert emulator.live_pods() == [] and len(runner.created) == 1
    assert emulator.mismatches == []
    jobs = list((home / "jobs").iterdir())
    assert len(jobs) == 1 and (jobs[0] / "output").is_dir()
    shown = subprocess.run(
        [sys.executable, "-m", "desktop.cli", "show", jobs[0].name, "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    stored = json.loads(shown.stdout)
    # The job table's "$ spent / budget": the budget given at launch, and what was spent.
    assert stored["state"] == "completed", stored
    # (the emulator's clock stands still here, so the cost is its rate × 0 s)
    assert float(stored["budget_usd"]) == 5.0 and 0 <= float(stored["cost_usd"]) < 5.0, stored
    for path in home.rglob("*"):
        if path.is_file():
            assert sentinel.encode() not in path.read_bytes(), path
