"""`dataset.skip_invalid_records`: one bad line among good ones is an explicit, recorded choice.

Without the option, the run is refused naming the line and the option; with it, `validate`
says the record will be skipped and the real trainer drops it, says which line it skipped (in
train.log and as a log event) and trains on the rest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from trainer.protocol import EXIT_BAD_INPUT, EXIT_OK, read_status

ROOT = Path(__file__).resolve().parent.parent
GOOD = 40
BAD_LINE = 17
BROKEN = '{"messages": [{"role": "user", "content": "broken"'


def _one_bad_line(job: Path) -> Path:
    """40 good chat records with a torn JSON line at line 17."""
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"what is {i} plus one?"},
                    {"role": "assistant", "content": f"{i + 1}"},
                ]
            }
        )
        for i in range(GOOD)
    ]
    lines.insert(BAD_LINE - 1, BROKEN)
    path = job / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _configure(job: Path, *, skip: bool | None, absolute: bool = False) -> Path:
    data = json.loads((job / "config.json").read_text(encoding="utf-8"))
    data["training"].update({"max_steps": 2, "save_steps": 2, "logging_steps": 1})
    if skip is not None:
        data["dataset"]["skip_invalid_records"] = skip
    if absolute:
        data["model"]["name_or_path"] = str(job / "model")
        data["dataset"]["path"] = str(job / "train.jsonl")
        out = job / "absolute.json"
    else:
        out = job / "config.json"
    out.write_text(json.dumps(data), encoding="utf-8")
    return out


def _log_events(job: Path) -> list[str]:
    out = []
    for line in (job / "events.jsonl").read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("kind") == "log":
            out.append(str(event.get("message")))
    return out


def test_the_option_is_in_the_schema_with_a_title_and_off_by_default() -> None:
    from trainer.config import DatasetConfig

    info = DatasetConfig.model_fields["skip_invalid_records"]
    assert info.default is False
    assert info.title and info.description and "skip" in info.description.lower()


def test_without_the_option_one_bad_line_refuses_the_run_naming_the_line_and_the_option(
    demo_dir: Path, run_trainer: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    _one_bad_line(demo_dir)
    _configure(demo_dir, skip=None)
    result = run_trainer(demo_dir)
    log = (demo_dir / "train.log").read_text(encoding="utf-8")
    assert result.returncode == EXIT_BAD_INPUT, log[-3000:]
    status = read_status(demo_dir)
    assert status is not None and status.state == "failed"
    assert f"line {BAD_LINE}: invalid JSON" in status.message, status.message
    assert "dataset.skip_invalid_records" in status.message, status.message


@pytest.mark.slow
def test_with_the_option_the_trainer_skips_the_bad_line_and_trains_on_the_rest(
    demo_dir: Path, run_trainer: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    _one_bad_line(demo_dir)
    _configure(demo_dir, skip=True)
    result = run_trainer(demo_dir)
    log = (demo_dir / "train.log").read_text(encoding="utf-8")
    assert result.returncode == EXIT_OK, log[-3000:]
    said = f"skipped 1 invalid record (line {BAD_LINE}: invalid JSON"
    assert said in log, log[-3000:]
    assert any(said in message for message in _log_events(demo_dir))
    assert f"data: {GOOD} training records" in log
    status = read_status(demo_dir)
    assert status is not None and status.state == "completed"
    # The choice is recorded with the job.
    config = json.loads((demo_dir / "config.json").read_text(encoding="utf-8"))
    assert config["dataset"]["skip_invalid_records"] is True


def test_the_app_checks_refuse_or_announce_the_skip(demo_dir: Path) -> None:
    from desktop.core.checks import check_datasets, resolve_config
    from desktop.core.errors import DatasetError
    from desktop.core.runtime import TrainerRuntime

    _one_bad_line(demo_dir)
    runtime = TrainerRuntime()
    refused = resolve_config(_configure(demo_dir, skip=False, absolute=True))
    with pytest.raises(DatasetError) as caught:
        check_datasets(refused, runtime)
    assert f"line {BAD_LINE}: invalid JSON" in str(caught.value)
    assert "dataset.skip_invalid_records" in str(caught.value)
    allowed = resolve_config(_configure(demo_dir, skip=True, absolute=True))
    (report,) = check_datasets(allowed, runtime)
    assert report.invalid_records == 1 and report.valid_records == GOOD


def test_validate_says_the_invalid_record_will_be_skipped(demo_dir: Path, tmp_path: Path) -> None:
    import os

    _one_bad_line(demo_dir)
    config = _configure(demo_dir, skip=True, absolute=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTDESK_")}
    env["FTDESK_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-m", "desktop.cli", "validate", str(config)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"1 invalid record will be skipped (line {BAD_LINE})" in done.stdout, done.stdout


def test_check_data_counts_the_invalid_records_and_names_the_option(demo_dir: Path) -> None:
    from trainer.data import check_dataset

    report = check_dataset(_one_bad_line(demo_dir))
    assert not report.usable and report.skippable
    assert report.invalid_records == 1 and report.valid_records == GOOD
    text = report.to_text()
    assert f"{GOOD + 1} records ({GOOD} valid)" in text
    assert f"line {BAD_LINE}: invalid JSON" in text
    assert f"set dataset.skip_invalid_records to train on the {GOOD} valid records" in text
