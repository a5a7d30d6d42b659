"""When the pod's agent is gone, the pod's log comes from RunPod's own log stream into the job's
`train.log` before the pod is deleted: once, and without the lines already there."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from runpod_emulator import RunpodEmulator, serve_emulator
from runpod_emulator.runpod_pods import LocalPodRunner
from test_runpod_provider import SENTINEL, demo_job, poll_once, provider_for, served

from desktop.core.store import JobStore
from desktop.models import Job, JobState
from desktop.providers.runpod.api import RunpodApi
from desktop.providers.runpod.pod_files import PodRecord, load_record, save_record
from desktop.providers.runpod.pod_logs import HEADING, keep_runpod_log

__all__ = ["served"]  # the fixture, shared with the provider's tests

CUDA = "RuntimeError: CUDA error: an illegal memory access was encountered"


def test_the_stream_fills_in_what_train_log_lacks_once(tmp_path: Path) -> None:
    emulator = RunpodEmulator(api_key=SENTINEL)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    # The mirror had these (a line it holds once, the stream twice: one of them is new).
    (job_dir / "train.log").write_text("booting\nstep 1\nsaving", encoding="utf-8")

    async def scenario() -> list[str]:
        async with httpx.AsyncClient(timeout=30) as http:
            api = RunpodApi(http, SecretStr(SENTINEL), base_url=emulator.url)
            pod = emulator.add_pod("ftdesk-20261201-120000-logs")
            for line in ("booting", "step 1", "step 1", CUDA):
                emulator.append_log(pod.id, line)
            emulator.append_log(pod.id, "OOM killer: container", source="system")
            record = PodRecord(
                pod_id=pod.id, name=pod.name, token="t", gpu_id="g",
                cost_per_hour=Decimal("0.69"), budget_usd=Decimal(1), max_runtime_s=3600,
                created_at=pod.created_at.isoformat(),
            )  # fmt: skip
            save_record(job_dir, record)
            record = await keep_runpod_log(api, job_dir, record, idle_s=0.5)
            first = (job_dir / "train.log").read_text(encoding="utf-8")
            again = await keep_runpod_log(api, job_dir, record, idle_s=0.5)
            second = (job_dir / "train.log").read_text(encoding="utf-8")
            emulator.append_log(pod.id, "a last word")
            await keep_runpod_log(api, job_dir, again, idle_s=0.5)
            third = (job_dir / "train.log").read_text(encoding="utf-8")
            saved = load_record(job_dir)
            assert saved is not None and set(saved.runpod_log_cursors) == {"container", "system"}
            return [first, second, third]

    with serve_emulator(emulator):
        first, second, third = asyncio.run(scenario())
    assert first == (
        f"booting\nstep 1\nsaving\n{HEADING}\nstep 1\n{CUDA}\n[runpod system] OOM killer: "
        "container\n"
    )
    assert second == first  # read once: the cursors in pod.json
    assert third == first + f"{HEADING}\na last word\n"
    assert emulator.mismatches == []


@pytest.mark.slow
def test_a_pod_whose_agent_is_gone_is_deleted_at_the_budget_with_runpods_log_kept(
    served: tuple[RunpodEmulator, LocalPodRunner], demo_dir: Path, tmp_path: Path
) -> None:
    """The container crashed (nothing answers on its port, so no watchdog either): the app's
    next poll past the budget deletes the pod, and what only RunPod still holds of its log
    reaches train.log, the lines the mirror already had not repeated."""
    emulator, _ = served
    home = tmp_path / "home"
    store = JobStore(home / "ftdesk.sqlite3")
    job = demo_job(demo_dir, "20261201-120000-gone", max_steps=100000)
    store.add_job(job, "created")
    provider = provider_for(emulator, home, budget_usd=Decimal("1.00"))
    log = demo_dir / "train.log"

    async def scenario() -> tuple[Job, Counter[str]]:
        handle = await provider.launch(job)
        assert handle.pod_id is not None
        current = await poll_once(
            provider, store, store.get_job(job.id).model_copy(update={"handle": handle})
        )
        before = Counter(log.read_text(encoding="utf-8").splitlines())
        emulator.restart_container(handle.pod_id, start=False)  # crashed; not started again
        emulator.append_log(handle.pod_id, CUDA)
        emulator.clock.advance(2 * 3600)  # $0.69/h for 2 h: past the $1.00 budget
        current = await poll_once(provider, store, current)
        assert emulator.live_pods() == [], "the pod outlived the poll that crossed the budget"
        return current, before

    done, before = asyncio.run(scenario())
    assert done.state is JobState.CANCELLED
    assert "budget reached ($1.38 spent" in done.state_reason
    after = Counter(log.read_text(encoding="utf-8").splitlines())
    assert after[HEADING] == 1 and after[CUDA] == 1
    assert after["[runpod system] container restarted (1)"] == 1
    streamed = [line for line in before if line.startswith(("agent 1.0", "[pod-boot]"))]
    assert streamed, "the mirror had none of the container's own lines"
    for line in streamed:  # in the mirror and in RunPod's stream: kept once, as before
        assert after[line] == before[line], line
