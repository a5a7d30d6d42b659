"""Whole RunPod jobs against the emulator, for the tests and `bench/pod_overhead.py`.

`served_pods` serves an emulator whose pods run the real bootstrap as local processes and checks,
on the way out, that no pod process outlived its pod and no request broke RunPod's OpenAPI file.
`provider_for` builds the provider against it, `demo_job` a job over a demo copy, and `watch`
polls and ingests as the service's watcher does until the job is final.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from desktop.core.ingest import ingest
from desktop.core.runtime import TrainerRuntime
from desktop.core.store import JobStore
from desktop.models import Job, RunpodOptions, Settings
from desktop.providers.base import ProviderContext
from desktop.providers.runpod.provider import RunpodProvider
from runpod_emulator.runpod_http import serve_emulator
from runpod_emulator.runpod_pods import LocalPodRunner
from runpod_emulator.runpod_server import RunpodEmulator, VirtualClock
from trainer.config import load_config

RTX = "NVIDIA GeForce RTX 4090"
ACCOUNT_KEY = "rp-test-account-key-for-whole-jobs"
DEADLINE_S = 240.0
FAST_POD_ENV = {
    "FTDESK_WATCHDOG_INTERVAL_S": "1",
    "FTDESK_CANCEL_GRACE_S": "20",
    "FTDESK_CLOCK_SYNC_S": "1",
}


@contextmanager
def served_pods(
    root: Path, clock: VirtualClock | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[RunpodEmulator, LocalPodRunner]]:
    """An emulator (pods RUNNING at once unless told otherwise) whose pods run in `root`.

    Raises:
        AssertionError: on the way out, when a pod process outlived its pod or a request broke
            the OpenAPI contract.
    """
    runner = LocalPodRunner(root, extra_env={**FAST_POD_ENV, **(extra_env or {})})
    emulator = RunpodEmulator(api_key=ACCOUNT_KEY, clock=clock, runner=runner)
    emulator.provisioning_s = 0
    emulator.starting_s = 0
    with serve_emulator(emulator):
        runner.api_url = emulator.url
        try:
            yield emulator, runner
        finally:
            runner.join()
            leftover = runner.running()
            runner.close()
            assert leftover == [], "pod processes outlived their pods"
    assert emulator.mismatches == []


def provider_for(
    emulator: RunpodEmulator, home: Path, step_s: float = 0.2, **options: Any
) -> RunpodProvider:
    """The provider with `options` as its RunPod settings, reaching the emulator's pods."""

    def proxy(pod_id: str, port: int) -> str:
        pod = emulator.pods.get(pod_id)
        return pod.proxy.get(port, "http://127.0.0.1:9") if pod else "http://127.0.0.1:9"

    settings = Settings(
        cancel_grace_s=30,
        runpod=RunpodOptions.model_validate(
            {"gpu_ids": (RTX,), "api_url": emulator.url, "provisioning_limit_s": 120, **options}
        ),
    )
    context = ProviderContext(settings, home, TrainerRuntime())
    return RunpodProvider(context, api_key=SecretStr(ACCOUNT_KEY), proxy_url=proxy, step_s=step_s)


def demo_job(demo_dir: Path, job_id: str, max_steps: int = 4, **dataset: Any) -> Job:
    """A RunPod job over the demo copy in `demo_dir`: `max_steps` steps, `dataset` changes."""
    path = demo_dir / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["training"]["max_steps"] = max_steps
    data["dataset"].update(dataset)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    config = load_config(path)
    return Job(id=job_id, name=job_id, provider="runpod", config=config, job_dir=demo_dir)


async def watch(
    provider: RunpodProvider, store: JobStore, job: Job, interval_s: float = 0.3
) -> Job:
    """Poll and ingest as the service's watcher does, until the job is final."""
    end = time.monotonic() + DEADLINE_S
    while not job.is_final:
        assert time.monotonic() < end, f"job still {job.state} after {DEADLINE_S} s"
        update = await provider.poll(job)
        job = (await asyncio.to_thread(ingest, store, job, update)).job
        await asyncio.sleep(interval_s)
    return job
