"""`finetune-desk pods [--json] [--delete-orphans]`: the account's pods with our name prefix that
no live job owns, with their $/h; deleting them leaves a live job's pod and foreign pods alone.

Run in-process against the loopback emulator (its pods made directly, as in RunPod's console),
with a real job store under FTDESK_HOME and the key from FTDESK_RUNPOD_API_KEY.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from runpod_emulator import RunpodEmulator, serve_emulator

from desktop.cli import main
from desktop.core.store import JobStore
from desktop.models import Job, JobState, ProviderHandle
from trainer.config import load_config

KEY = "rp-SWEEP-account-key-0123456789"
LIVE = "20261201-120000-live"
DONE = "20261201-120000-done"
UNKNOWN = "20261201-120000-gone"


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunpodEmulator]:
    """The emulator (no containers: these pods only bill) and the CLI's environment for it."""
    emulator = RunpodEmulator(api_key=KEY)
    emulator.provisioning_s = emulator.starting_s = 0
    with serve_emulator(emulator):
        monkeypatch.setenv("FTDESK_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("FTDESK_RUNPOD_API_URL", emulator.url)
        monkeypatch.setenv("FTDESK_RUNPOD_API_KEY", KEY)
        yield emulator
    assert emulator.mismatches == []


def stored_job(
    store: JobStore, demo_dir: Path, job_id: str, pod_id: str, *states: JobState
) -> None:
    """A RunPod job in the store whose handle names `pod_id`, moved through `states`."""
    job = Job(
        id=job_id,
        name=job_id,
        provider="runpod",
        config=load_config(demo_dir / "config.json"),
        job_dir=demo_dir,
        handle=ProviderHandle(provider="runpod", pod_id=pod_id),
    )
    store.add_job(job, "created")
    for state in states:
        job = store.transition(job, state, "a test's history")


def test_pods_lists_orphans_with_their_price_and_deletes_only_them(
    emulator: RunpodEmulator,
    demo_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    live = emulator.add_pod(f"ftdesk-{LIVE}")
    done = emulator.add_pod(f"ftdesk-{DONE}")
    unknown = emulator.add_pod(f"ftdesk-{UNKNOWN}", gpu_id="NVIDIA A100 80GB PCIe")
    foreign = emulator.add_pod("my-notebook")
    store = JobStore(tmp_path / "home" / "ftdesk.sqlite3")
    stored_job(store, demo_dir, LIVE, live.id, JobState.STARTING, JobState.TRAINING)
    stored_job(
        store, demo_dir, DONE, done.id, JobState.STARTING, JobState.TRAINING, JobState.COMPLETED
    )
    store.close()

    assert main(["pods", "--json"]) == 0
    listed = {o["pod_id"]: o for o in json.loads(capsys.readouterr().out)}
    assert set(listed) == {done.id, unknown.id}, "a live job's pod or a foreign pod was listed"
    assert listed[done.id]["job_id"] == DONE and "completed" in listed[done.id]["why"]
    assert (
        listed[unknown.id]["job_id"] == UNKNOWN
        and "not in the job list" in (listed[unknown.id]["why"])
    )
    assert float(listed[unknown.id]["cost_per_hour"]) == pytest.approx(unknown.price_per_gpu_hour)

    assert main(["pods"]) == 0
    table = capsys.readouterr().out
    assert done.id in table and f"{unknown.price_per_gpu_hour:.2f}" in table
    assert "--delete-orphans" in table
    assert [p.id for p in emulator.live_pods()] == [live.id, done.id, unknown.id, foreign.id]

    # The app's ledger knew the finished job's pod as still running (the app was gone when
    # it ended): after the sweep deleted it, the month's spend stops counting it.
    from datetime import UTC, datetime
    from decimal import Decimal

    from desktop.providers.runpod.spend import Ledger

    ledger = Ledger(tmp_path / "home")
    ledger.created(
        pod_id=done.id, name=f"ftdesk-{DONE}", job_id=DONE, gpu_id="NVIDIA GeForce RTX 4090",
        cost_per_hour=Decimal("0.69"), budget_usd=Decimal(5), created_at=datetime.now(UTC),
    )  # fmt: skip
    assert "deleted_at" not in ledger.entries()[done.id]
    assert main(["pods", "--delete-orphans"]) == 0
    said = capsys.readouterr().out
    assert f"deleted pod {done.id}" in said and f"deleted pod {unknown.id}" in said
    assert sorted(p.id for p in emulator.live_pods()) == sorted([live.id, foreign.id])
    assert "deleted_at" in ledger.entries()[done.id], "the ledger still counts a deleted pod"

    assert main(["pods"]) == 0
    assert "no orphaned pods" in capsys.readouterr().out


def _job_with_record(
    tmp_path: Path, demo_dir: Path, job_id: str, pod_id: str, *states: JobState
) -> Path:
    """A RunPod job stored through `states` whose own folder holds a pod.json naming `pod_id`."""
    from desktop.providers.runpod.pod_files import PodRecord, save_record

    job_dir = tmp_path / "home" / "jobs" / job_id
    job_dir.mkdir(parents=True)
    save_record(
        job_dir,
        PodRecord(
            pod_id=pod_id,
            name=f"ftdesk-{job_id}",
            token="job-token-0123456789",
            gpu_id="NVIDIA GeForce RTX 4090",
            cost_per_hour="0.69",
            budget_usd="10",
            max_runtime_s=3600,
            created_at="2026-12-01T12:00:00Z",
            deleted=True,
            final_state="failed",
            final_reason="the app lost the pod",
        ),
    )
    store = JobStore(tmp_path / "home" / "ftdesk.sqlite3")
    job = Job(
        id=job_id,
        name=job_id,
        provider="runpod",
        config=load_config(demo_dir / "config.json"),
        job_dir=job_dir,
        handle=ProviderHandle(provider="runpod", pod_id=pod_id),
    )
    store.add_job(job, "created")
    for state in states:
        job = store.transition(job, state, "a test's history")
    store.close()
    return job_dir


def test_adopt_relinks_an_unknown_job_to_its_running_pod(
    emulator: RunpodEmulator,
    demo_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from desktop.providers.runpod.pod_files import load_record

    pod = emulator.add_pod(f"ftdesk-{LIVE}")
    job_dir = _job_with_record(
        tmp_path, demo_dir, LIVE, "pod-lost-earlier", JobState.STARTING, JobState.UNKNOWN
    )
    assert main(["pods", "--json"]) == 0
    assert [o["pod_id"] for o in json.loads(capsys.readouterr().out)] == [pod.id]

    assert main(["pods", "--adopt", pod.id]) == 0
    said = capsys.readouterr().out
    assert f"adopted pod {pod.id}" in said and LIVE in said, said
    store = JobStore(tmp_path / "home" / "ftdesk.sqlite3")
    job = store.get_job(LIVE)
    store.close()
    assert job.handle is not None and job.handle.pod_id == pod.id
    assert job.state is JobState.UNKNOWN  # the provider's next poll settles it
    record = load_record(job_dir)
    assert record is not None and record.pod_id == pod.id
    assert not record.deleted and record.final_state is None
    assert record.token == "job-token-0123456789", "the agent's token was lost"

    assert main(["pods"]) == 0
    assert "no orphaned pods" in capsys.readouterr().out
    assert [p.id for p in emulator.live_pods()] == [pod.id]


def test_adopt_refuses_a_failed_job_and_a_job_not_in_the_store(
    emulator: RunpodEmulator,
    demo_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failed = emulator.add_pod(f"ftdesk-{DONE}")
    stranger = emulator.add_pod(f"ftdesk-{UNKNOWN}")
    job_dir = _job_with_record(
        tmp_path, demo_dir, DONE, "pod-lost-earlier", JobState.STARTING, JobState.FAILED
    )
    before = (job_dir / "pod.json").read_bytes()

    assert main(["pods", "--adopt", failed.id]) != 0
    err = capsys.readouterr().err
    assert f"job {DONE} is failed" in err and "--delete-orphans" in err, err
    assert (job_dir / "pod.json").read_bytes() == before

    assert main(["pods", "--adopt", stranger.id]) != 0
    err = capsys.readouterr().err
    assert "job folder is not here" in err and "--delete-orphans" in err, err

    assert main(["pods", "--adopt", "no-such-pod"]) != 0
    assert "no-such-pod" in capsys.readouterr().err
    assert sorted(p.id for p in emulator.live_pods()) == sorted([failed.id, stranger.id])
