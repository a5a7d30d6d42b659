"""The emulator's pods as local processes: the real bootstrap runs, its agent answers through
the pod's proxy, and terminating the pod ends the whole process tree."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import psutil
import pytest
from pydantic import SecretStr
from runpod_emulator import RunpodEmulator, serve_emulator
from runpod_emulator.runpod_pods import AGENT_PORT, LocalPodRunner
from runpod_pod_fakes import wait_until

from desktop.providers.runpod.api import RunpodApi
from desktop.providers.runpod.bootstrap import (
    container_args,
    default_requirements,
    pod_env,
    render_script,
)
from desktop.providers.runpod.models import CreatePodRequest, GpuRequest

JOB = "20261201-120000-pods"
TOKEN = "job-token-for-the-runner-test"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RunpodEmulator, LocalPodRunner]]:
    """An emulator whose pods run as local processes; none may be left at the end."""
    runner = LocalPodRunner(tmp_path / "pods")
    emulator = RunpodEmulator(runner=runner)
    with serve_emulator(emulator):
        runner.api_url = emulator.url
        try:
            yield emulator, runner
        finally:
            runner.close()
    assert emulator.mismatches == []


def health(url: str) -> dict[str, object] | None:
    request = urllib.request.Request(f"{url}/health", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return dict(json.loads(response.read()))
    except OSError:
        return None


def test_a_created_pod_runs_the_real_bootstrap_and_dies_with_the_pod(
    served: tuple[RunpodEmulator, LocalPodRunner],
) -> None:
    emulator, runner = served
    env = pod_env(JOB, TOKEN, budget_usd=Decimal("5"), max_runtime_s=3600)
    request = CreatePodRequest(
        name=f"ftdesk-{JOB}",
        image="runpod/pytorch",
        gpu=GpuRequest(id="NVIDIA GeForce RTX 4090"),
        ports=(f"{AGENT_PORT}/http",),
        env={k: SecretStr(v) for k, v in env.items()},
        args=container_args(render_script(JOB, default_requirements())),
    )

    async def create() -> str:
        async with httpx.AsyncClient(timeout=30) as http:
            api = RunpodApi(http, SecretStr(emulator.api_key), base_url=emulator.url)
            return (await api.create_pod(request)).id

    pod_id = asyncio.run(create())
    pod = emulator.pods[pod_id]
    url = pod.proxy[AGENT_PORT]
    wait_until(lambda: health(url) is not None, "the pod's agent to answer")
    answer = health(url)
    assert answer is not None and answer["job_id"] == JOB
    local = runner.pods[pod_id]
    assert local.env["RUNPOD_POD_ID"] == pod_id
    assert local.env["RUNPOD_API_KEY"] == pod.pod_key != emulator.api_key
    assert local.env["FTDESK_RUNPOD_API_URL"] == emulator.url
    assert (local.workspace / JOB / "train.log").is_file()
    family = psutil.Process(local.process.pid).children(recursive=True)
    assert family, "the bootstrap started nothing"

    async def delete() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            api = RunpodApi(http, SecretStr(emulator.api_key), base_url=emulator.url)
            assert await api.delete_pod(pod_id)

    asyncio.run(delete())
    assert emulator.live_pods() == []
    runner.join()
    assert local.process.poll() is not None
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert health(url) is None
