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
