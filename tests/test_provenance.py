"""Provenance (issue 8): what a job trained on, recorded by the trainer, shown by `show`, and
checked before a resume.

Real CLI processes, the real trainer on the tiny demo, the real store. The hashes the tests
expect are computed here with hashlib, independently of the code under test.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from test_cli import cli, job_id_from, max_metric_step, show_json, wait_for, write_config

from desktop.cli import main
from desktop.core.errors import DatasetError
from desktop.core.provenance_check import ProvenanceChangedError, check_resume
from desktop.core.runtime import TrainerRuntime
from desktop.models import Job, JobState
from trainer.config import TrainingConfig
from trainer.provenance import record_attempt
from trainer.reports import model_revision

pytestmark = pytest.mark.slow


def _cancelled_job(
    home: Path,
    tmp_path: Path,
    demo_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[str, Path, Path]:
    """A demo job on its own copy of the data, cancelled mid-run with a checkpoint.

    Returns the job id, its folder and its dataset file.
    """
    config = write_config(tmp_path / "cfg", demo_template, max_steps=150, save_steps=1000)
    data = tmp_path / "data" / "train.jsonl"
    data.parent.mkdir()
    shutil.copy(demo_template / "train.jsonl", data)
    raw = json.loads(config.read_text(encoding="utf-8"))
    raw["dataset"]["path"] = str(data)
    config.write_text(json.dumps(raw), encoding="utf-8")
    started = cli(home, "run", str(config))
    assert started.returncode == 0, started.stderr
    job_id = job_id_from(started.stdout)
    job_dir = (home / "jobs" / job_id).resolve()
    wait_for(lambda: max_metric_step(job_dir / "events.jsonl") >= 1, 180, "training steps")
    # In this process: no interpreter start between seeing a step and cancelling.
    monkeypatch.setenv("FTDESK_HOME", str(home))
    assert main(["cancel", job_id]) == 0
    said = capsys.readouterr().out
    assert f"{job_id}: cancelled" in said, said
    return job_id, job_dir, data


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _records(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def _untouched(job_dir: Path, home: Path, job_id: str) -> dict[str, Any]:
    """What a refused resume must leave as it was: state, history, checkpoints, files."""
    data = show_json(home, job_id)
    checkpoints = sorted(
        (str(p.relative_to(job_dir)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in (job_dir / "checkpoints").rglob("*")
    )
    files = {
        name: (job_dir / name).read_bytes()
        for name in ("events.jsonl", "status.json", "provenance.json", "config.json")
    }
    return {
        "state": data["state"],
        "transitions": data["transitions"],
        "last_checkpoint": data["last_checkpoint"],
        "checkpoints": checkpoints,
        "files": files,
    }


def test_show_prints_provenance_and_a_changed_dataset_needs_force(
    tmp_path: Path,
    demo_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    job_id, job_dir, data = _cancelled_job(home, tmp_path, demo_template, monkeypatch, capsys)
    digest, size, records = _sha256(data), data.stat().st_size, _records(data)

    # The trainer recorded it before training, and `show` prints it.
    recorded = json.loads((job_dir / "provenance.json").read_text(encoding="utf-8"))
    assert len(recorded["attempts"]) == 1
    shown = cli(home, "show", job_id)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"sha256 {digest[:12]}" in text, text
    assert f"{size} bytes" in text, text
    assert f"{records} records" in text, text
    assert str(demo_template / "model") in text
    assert "fingerprint" in text
    assert f"torch {importlib.metadata.version('torch')}" in text
    assert f"transformers {importlib.metadata.version('transformers')}" in text
    assert "seed:" in text and " 42" in text.split("seed:")[1].splitlines()[0]

    prov = show_json(home, job_id)["provenance"]
    assert prov["dataset"]["sha256"] == digest
    assert prov["dataset"]["size_bytes"] == size
    assert prov["dataset"]["records"] == records
    assert prov["dataset"]["trainable_records"] == records  # the demo fits max_length
    assert prov["model"]["revision_kind"] == "fingerprint"
    assert len(prov["model"]["revision"]) == 64
    assert prov["packages"]["peft"] == importlib.metadata.version("peft")
    assert prov["seed"] == 42

    # One byte of the data changes (a letter inside a message: the file stays valid).
    content = data.read_bytes()
    at = content.index(b'"content": "') + len(b'"content": "')
    changed = content[:at] + (b"Z" if content[at : at + 1] != b"Z" else b"Y") + content[at + 1 :]
    data.write_bytes(changed)
    new_digest = _sha256(data)
    before = _untouched(job_dir, home, job_id)

    refused = cli(home, "run", "--resume", job_id)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (
        f"the dataset changed since this job started: sha256 {digest[:8]}… → {new_digest[:8]}…"
        in refused.stderr
    ), refused.stderr
    assert "--force" in refused.stderr
    assert _untouched(job_dir, home, job_id) == before

    forced = cli(home, "run", "--resume", job_id, "--force", "--follow")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    after = show_json(home, job_id)
    assert after["state"] == "completed"
    queued = [t for t in after["transitions"] if t["new"] == "queued"]
    assert "the dataset changed" in queued[-1]["reason"], queued
    attempts = json.loads((job_dir / "provenance.json").read_text(encoding="utf-8"))["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert attempts[0]["dataset"]["sha256"] == digest  # the first attempt's record is kept
    assert attempts[1]["dataset"]["sha256"] == new_digest
    assert attempts[1]["resumed"] is True
    assert any("the dataset changed" in c for c in attempts[1]["changes"]), attempts[1]


def test_a_job_without_provenance_shows_so_and_resumes(
    tmp_path: Path,
    demo_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A job folder of an older version (no provenance.json) is shown and resumed."""
    home = tmp_path / "home"
    job_id, job_dir, _ = _cancelled_job(home, tmp_path, demo_template, monkeypatch, capsys)
    (job_dir / "provenance.json").write_text("{not json", encoding="utf-8")
    damaged = cli(home, "show", job_id)
    assert damaged.returncode == 0, damaged.stderr
    assert "provenance: unreadable: " in damaged.stdout and "provenance.json" in damaged.stdout
    (job_dir / "provenance.json").unlink()

    shown = cli(home, "show", job_id)
    assert shown.returncode == 0, shown.stderr
    assert "provenance: not recorded" in shown.stdout, shown.stdout
    assert show_json(home, job_id)["provenance"] is None

    resumed = cli(home, "run", "--resume", job_id, "--follow")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "no provenance recorded for this job (made by an older version)" in resumed.stdout
    assert show_json(home, job_id)["state"] == "completed"
    attempts = json.loads((job_dir / "provenance.json").read_text(encoding="utf-8"))["attempts"]
    assert len(attempts) == 1 and attempts[0]["resumed"] is True


# ---------------------------------------------------------------------------------------------
# The resume check on its own: real files, the real trainer runtime's doctor


def _recorded_job(tmp_path: Path, demo_template: Path) -> Job:
    """A cancelled job whose first attempt was recorded by the trainer's own code, on copies
    of the demo's data and model."""
    data = tmp_path / "train.jsonl"
    shutil.copy(demo_template / "train.jsonl", data)
    model = tmp_path / "model"
    shutil.copytree(demo_template / "model", model)
    raw = json.loads((demo_template / "config.json").read_text(encoding="utf-8"))
    raw["dataset"]["path"], raw["model"]["name_or_path"] = str(data), str(model)
    config = TrainingConfig.model_validate(raw)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    record_attempt(job_dir, config, records=_records(data), eval_records=None, resumed=False)
    return Job(
        id="20261202-120000-abcd",
        name="demo",
        state=JobState.CANCELLED,
        config=config,
        job_dir=job_dir,
    )


def test_a_missing_dataset_is_its_own_error_even_forced(
    tmp_path: Path, demo_template: Path
) -> None:
    job = _recorded_job(tmp_path, demo_template)
    Path(job.config.dataset.path).unlink()
    runtime = TrainerRuntime(sys.executable)
    for force in (False, True):
        with pytest.raises(DatasetError, match="is not there any more") as caught:
            check_resume(job, runtime, force=force)
        assert job.config.dataset.path in str(caught.value)
        assert "put it back" in str(caught.value)


def test_a_changed_model_folder_needs_force_and_is_recorded_when_forced(
    tmp_path: Path, demo_template: Path
) -> None:
    job = _recorded_job(tmp_path, demo_template)
    runtime = TrainerRuntime(sys.executable)
    assert check_resume(job, runtime, force=False) == (None, None)  # nothing changed yet

    config_file = Path(job.config.model.name_or_path) / "config.json"
    config_file.write_text(config_file.read_text(encoding="utf-8") + " ", encoding="utf-8")
    with pytest.raises(ProvenanceChangedError) as caught:
        check_resume(job, runtime, force=False)
    assert len(caught.value.changes) == 1  # same data, same packages: only the model
    message = str(caught.value)
    assert message.startswith(f"job {job.id}: the model changed since this job started: ")
    assert "fingerprint" in message and "--force" in message
    assert caught.value.exit_code == 2

    verdict = check_resume(job, runtime, force=True)
    assert verdict.history is not None and "the model changed" in verdict.history


def test_other_trainer_packages_need_force(tmp_path: Path, demo_template: Path) -> None:
    """The versions the record holds against the ones the trainer runtime's doctor reports."""
    job = _recorded_job(tmp_path, demo_template)
    path = job.job_dir / "provenance.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record["attempts"][-1]["packages"]["torch"] = "1.0.0"
    path.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(ProvenanceChangedError) as caught:
        check_resume(job, TrainerRuntime(sys.executable), force=False)
    torch_now = importlib.metadata.version("torch")
    assert caught.value.changes == [
        f"the trainer's packages changed since this job started: torch 1.0.0 → {torch_now}"
    ]
    assert "resume with --force to continue with the packages installed now" in str(caught.value)


def test_an_unreadable_record_refuses_unless_forced(tmp_path: Path, demo_template: Path) -> None:
    job = _recorded_job(tmp_path, demo_template)
    (job.job_dir / "provenance.json").write_text('{"attempts": [{"seed": "x"', encoding="utf-8")
    runtime = TrainerRuntime(sys.executable)
    with pytest.raises(ProvenanceChangedError, match=r"provenance\.json: cannot be read"):
        check_resume(job, runtime, force=False)
    verdict = check_resume(job, runtime, force=True)
    assert verdict.history is not None and "unreadable provenance record" in verdict.history


def test_a_hub_model_revision_is_the_cached_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    refs = tmp_path / "hub" / "models--someone--tiny" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(commit, encoding="utf-8")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert model_revision("someone/tiny") == (commit, "hub-commit")
    assert model_revision("someone/tiny", "v2") == ("v2", "requested")  # not in the cache
    assert model_revision("someone/other") == ("main", "requested")
