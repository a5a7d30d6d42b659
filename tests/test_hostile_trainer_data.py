"""Hostile data: every record longer than `dataset.max_length` before its first trained token.

TRL cuts each record to max_length and then drops the ones left with no trained token (a long
prompt whose answer falls past the cut). When that is every record, training has no data.
`validate`, `check-data --model` and the trainer itself must all say so in the same sentence,
with the count and the fix, instead of a sampler's `num_samples=0` crash.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from trainer.protocol import EXIT_BAD_INPUT, read_status

ROOT = Path(__file__).resolve().parent.parent
RECORDS = 12
# The demo's max_length is 64 tokens; this prompt alone is well past it (and under the demo
# tokenizer's own 512, which would log a warning of its own).
LONG_PROMPT = " ".join(["tell me the colour of the sky please"] * 10)


def _long_prompt_data(job: Path) -> Path:
    """Replace the demo's data with records whose answer lies past max_length."""
    path = job / "train.jsonl"
    records = [
        {
            "messages": [
                {"role": "user", "content": f"{LONG_PROMPT} ({i})"},
                {"role": "assistant", "content": "blue"},
            ]
        }
        for i in range(RECORDS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _absolute_config(job: Path) -> Path:
    data = json.loads((job / "config.json").read_text(encoding="utf-8"))
    data["model"]["name_or_path"] = str(job / "model")
    data["dataset"]["path"] = str(job / "train.jsonl")
    config = job / "absolute.json"
    config.write_text(json.dumps(data), encoding="utf-8")
    return config


def _says_no_trainable_records(text: str) -> None:
    assert f"all {RECORDS} records" in text, text
    assert "max_length 64" in text, text
    assert "raise dataset.max_length" in text and "shorter records" in text, text
    assert "num_samples" not in text, text


def test_validate_fails_naming_the_count_and_the_fix(demo_dir: Path, tmp_path: Path) -> None:
    _long_prompt_data(demo_dir)
    config = _absolute_config(demo_dir)
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
    assert done.returncode == 2, done.stdout + done.stderr
    _says_no_trainable_records(done.stderr)


def test_check_data_with_the_model_reports_it_unusable(demo_dir: Path) -> None:
    from desktop.core.runtime import TrainerRuntime

    path = _long_prompt_data(demo_dir)
    report = TrainerRuntime().check_data(
        str(path), model=str(demo_dir / "model"), max_length=64, timeout_s=300
    )
    assert not report.usable
    assert report.valid_records == RECORDS  # every record is well formed: only too long
    _says_no_trainable_records(" ".join(p.message for p in report.problems))


def test_the_trainer_started_anyway_fails_with_the_same_sentence(
    demo_dir: Path, run_trainer: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    _long_prompt_data(demo_dir)
    result = run_trainer(demo_dir)
    log = (demo_dir / "train.log").read_text(encoding="utf-8")
    assert result.returncode == EXIT_BAD_INPUT, log[-3000:]
    status = read_status(demo_dir)
    assert status is not None and status.state == "failed"
    _says_no_trainable_records(status.message)
    _says_no_trainable_records(log)
    assert not list((demo_dir / "checkpoints").glob("checkpoint-*"))


def test_some_records_past_max_length_is_a_warning_not_a_failure(demo_dir: Path) -> None:
    from trainer.data import check_dataset

    path = _long_prompt_data(demo_dir)
    short = {
        "messages": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue"}]
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(short) + "\n")
    report = check_dataset(path, model_path=demo_dir / "model", max_length=64)
    assert report.usable, report.problems
    assert any(f"{RECORDS} of {RECORDS + 1} records" in w for w in report.warnings), report.warnings
    roomy = check_dataset(path, model_path=demo_dir / "model", max_length=500)
    assert roomy.usable and not any("dropped" in w for w in roomy.warnings), roomy.warnings
