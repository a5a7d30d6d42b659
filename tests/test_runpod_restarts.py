"""A pod's container restarted by RunPod (the emulator kills its processes and runs its command
again, same workspace and env): the restarted container never trains again, the job is failed
with the reason, the pod's log is kept and the pod is deleted. On the way, the demo's local model
folder is uploaded to the pod through the agent and trained from there.

The pods run the real bootstrap as local processes (see `runpod_emulator.runpod_pods`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest
from runpod_emulator import RunpodEmulator
from runpod_emulator.runpod_pods import LocalPodRunner
from test_runpod_provider import DEADLINE_S, demo_job, provider_for, served

from desktop.core.errors import ProviderError
from desktop.core.ingest import ingest
from desktop.core.store import JobStore
from desktop.models import Job, JobState
from desktop.providers.runpod.provider import RunpodProvider

__all__ = ["served"]  # the fixture, shared with the provider's tests


def digest(path: Path) -> str:
    """A file's sha256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trainer_starts(events: Path) -> int:
    """How many times a trainer started in this events file (its `starting` status events)."""
    if not events.exists():
        return 0
    starts = 0
    for line in events.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed trainer
        starts += event.get("kind") == "status" and event.get("state") == "starting"
    return starts


async def tick(provider: RunpodProvider, store: JobStore, job: Job) -> Job:
    """One tick of the service's watcher: an unreachable pod leaves the job as it was."""
    try:
        update = await provider.poll(job)
    except ProviderError:
        return job
    return (await asyncio.to_thread(ingest, store, job, update)).job


@pytest.mark.slow
def test_a_restart_while_training_never_trains_again_and_the_pod_is_deleted(
    served: tuple[RunpodEmulator, LocalPodRunner], demo_dir: Path, tmp_path: Path
) -> None:
    emulator, runner = served
    home = tmp_path / "home"
    store = JobStore(home / "ftdesk.sqlite3")
    job = demo_job(demo_dir, "20261201-120000-once", max_steps=100000)
    store.add_job(job, "created")

    async def scenario() -> Job:
        provider = provider_for(emulator, home)
        handle = await provider.launch(job)
        assert handle.pod_id is not None
        current = store.get_job(job.id).model_copy(update={"handle": handle})
        end = time.monotonic() + DEADLINE_S
        while not current.step:  # training, not just starting
            assert time.monotonic() < end, f"no step after {DEADLINE_S} s: {current.state}"
            current = await tick(provider, store, current)
            await asyncio.sleep(0.3)
        emulator.clock.advance(60)
        emulator.restart_container(handle.pod_id)
        while not current.is_final:
            assert time.monotonic() < end, f"job still {current.state} after {DEADLINE_S} s"
            current = await tick(provider, store, current)
            await asyncio.sleep(0.3)
        return current

    done = asyncio.run(scenario())
    assert done.state is JobState.FAILED
    assert done.state_reason == "the pod's container restarted during training"
    assert emulator.live_pods() == []
    (pod_id,) = runner.created
    workspace_job = tmp_path / "pods" / pod_id / "workspace" / job.id
    # The container really ran twice; the trainer once, there and in what the app mirrored.
    pod_log = (workspace_job / "train.log").read_text(encoding="utf-8")
    assert pod_log.count("container start") == 2
    assert trainer_starts(workspace_job / "events.jsonl") == 1
    assert trainer_starts(demo_dir / "events.jsonl") == 1
    # The demo's model folder travelled through the agent's sha256-checked upload, and the
    # pod's config trains from that copy (the pod cannot see this machine's folders).
    pod_config = json.loads((workspace_job / "config.json").read_text(encoding="utf-8"))
    assert pod_config["model"]["name_or_path"] == "model"
    sent = sorted(p.relative_to(demo_dir / "model") for p in (demo_dir / "model").rglob("*"))
    assert sent and sent == sorted(
        p.relative_to(workspace_job / "model") for p in (workspace_job / "model").rglob("*")
    )
    for relative in sent:
        local, remote = demo_dir / "model" / relative, workspace_job / "model" / relative
        assert local.is_dir() or digest(local) == digest(remote), relative
    # The restarted container's own words reached the job's log before the pod went.
    log = (demo_dir / "train.log").read_text(encoding="utf-8")
    assert "restarted while training ran: agent only, no training" in log
    assert store.get_job(job.id).state is JobState.FAILED
