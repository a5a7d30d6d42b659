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

    assert main(["pods", "--delete-orphans"]) == 0
    said = capsys.readouterr().out
    assert f"deleted pod {done.id}" in said and f"deleted pod {unknown.id}" in said
    assert sorted(p.id for p in emulator.live_pods()) == sorted([live.id, foreign.id])

    assert main(["pods"]) == 0
    assert "no orphaned pods" in capsys.readouterr().out
