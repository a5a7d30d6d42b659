"""The RunPod provider against the loopback emulator, its pods running the real bootstrap.

The whole job: create → upload → the demo model trains in the "pod" (a local process with a
sandbox workspace) → events and logs reach the store → artifacts pulled and verified → pod
deleted. Then the GPU fallback, the all-fail message, the budget and the provisioning limit.
Every test ends with zero pods, and every request validated against RunPod's OpenAPI file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from runpod_emulator import RunpodEmulator, serve_emulator
from runpod_emulator.runpod_pods import LocalPodRunner

from desktop.core.errors import AuthError, ProviderError
from desktop.core.ingest import ingest
from desktop.core.runtime import TrainerRuntime
from desktop.core.store import JobStore
from desktop.models import Job, JobState, RunpodOptions, Settings
from desktop.providers.base import Capability, ProviderContext, get_provider_factory
from desktop.providers.runpod.pod_files import load_record
from desktop.providers.runpod.provider import RunpodProvider
from trainer.config import load_config

RTX = "NVIDIA GeForce RTX 4090"
A100 = "NVIDIA A100 80GB PCIe"
H100 = "NVIDIA H100 80GB HBM3"
SENTINEL = "rp-SENTINEL-account-key-0123456789"
DEADLINE_S = 240.0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RunpodEmulator, LocalPodRunner]]:
    """An emulator whose pods run as local processes, with a sentinel account key; no pod, no
    process and no OpenAPI mismatch may be left at the end."""
    runner = LocalPodRunner(
        tmp_path / "pods",
        extra_env={
            "FTDESK_WATCHDOG_INTERVAL_S": "1",
            "FTDESK_CANCEL_GRACE_S": "20",
            "FTDESK_CLOCK_SYNC_S": "1",
        },
    )
    emulator = RunpodEmulator(api_key=SENTINEL, runner=runner)
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


def provider_for(emulator: RunpodEmulator, home: Path, **options: object) -> RunpodProvider:
    """The provider with its options in the settings, reaching the emulator's pods directly."""

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
    return RunpodProvider(context, api_key=SecretStr(SENTINEL), proxy_url=proxy, step_s=0.2)


def demo_job(demo_dir: Path, job_id: str, max_steps: int = 6) -> Job:
    """A job over the demo copy in `demo_dir`, trained for `max_steps` steps."""
    config_path = demo_dir / "config.json"
    data = json.loads(config_path.read_text(encoding="utf-8"))
    data["training"]["max_steps"] = max_steps
    config_path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return Job(
        id=job_id,
        name=job_id,
        provider="runpod",
        config=load_config(config_path),
        job_dir=demo_dir,
    )


async def watch(provider: RunpodProvider, store: JobStore, job: Job) -> Job:
    """Poll and ingest as the service's watcher does, until the job is final."""
    end = time.monotonic() + DEADLINE_S
    while not job.is_final:
        assert time.monotonic() < end, f"job still {job.state} after {DEADLINE_S} s"
        update = await provider.poll(job)
        job = (await asyncio.to_thread(ingest, store, job, update)).job
        await asyncio.sleep(0.3)
    return job


def test_the_registry_builds_it_with_honest_capabilities(tmp_path: Path) -> None:
    import desktop.providers.runpod  # noqa: F401 (registers "runpod")

    built = get_provider_factory("runpod")(ProviderContext(Settings(), tmp_path, TrainerRuntime()))
    assert built.name == "runpod"
    assert built.capabilities == {Capability.GPU, Capability.BILLING, Capability.REATTACH}
    assert Capability.OFFLINE not in built.capabilities


@pytest.mark.slow
def test_a_whole_job_trains_on_a_pod_and_the_pod_is_deleted(
    served: tuple[RunpodEmulator, LocalPodRunner], demo_dir: Path, tmp_path: Path
) -> None:
    emulator, runner = served
    home = tmp_path / "home"
    store = JobStore(home / "ftdesk.sqlite3")
    job = demo_job(demo_dir, "20261201-120000-whol")
    store.add_job(job, "created")
    provider = provider_for(emulator, home)
    # A 429 storm on the way: creates and reads are told to wait, and they do.
    creates_limited = emulator.fault("POST", "/v2/pods", status=429, retry_after=1, times=2)
    reads_limited = emulator.fault("GET", "/v2/pods/[^/]+", status=429, retry_after=1, times=3)

    async def scenario() -> Job:
        handle = await provider.launch(job)
        assert handle.pod_id in emulator.pods
        launched = store.get_job(job.id).model_copy(update={"handle": handle})
        # Watched by a provider built afresh (the app restarted): pod.json is all it needs.
        return await watch(provider_for(emulator, home), store, launched)

    done = asyncio.run(scenario())
    assert done.state is JobState.COMPLETED, done.state_reason
    # Events reached the store: the loss of every logged step.
    points = store.series_columns(job.id)
    assert points, "no metric reached the store"
    # The artifacts are home and match what the pod hashed.
    record = load_record(demo_dir)
    assert record is not None and record.deleted
    pod_job = runner.root / record.pod_id / "workspace" / job.id
    outputs = sorted(p for p in (demo_dir / "output").rglob("*") if p.is_file())
    assert outputs, "no artifact was pulled"
    for local in outputs:
        remote = pod_job / local.relative_to(demo_dir)
        assert (
            hashlib.sha256(local.read_bytes()).digest()
            == hashlib.sha256(remote.read_bytes()).digest()
        )
    # The pod's whole log is in the job's train.log, and the pod is gone.
    log = (demo_dir / "train.log").read_text(encoding="utf-8")
    assert "[pod-boot]" in log and "completed" in log.lower()
    assert emulator.live_pods() == []
    assert creates_limited.seen == 2 and reads_limited.seen == 3
    assert sum(1 for r in emulator.requests if (r.method, r.path) == ("POST", "/v2/pods")) == 3
    assert len(runner.created) == 1, "one job, one pod"
    # The user's key went nowhere: not in the pod's env, not in any file of the job.
    create = next(r for r in emulator.requests if (r.method, r.path) == ("POST", "/v2/pods"))
    assert SENTINEL not in json.dumps(create.body)
    for path in [*home.rglob("*"), *demo_dir.rglob("*")]:
        if path.is_file():
            assert SENTINEL.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_no_capacity_on_the_first_two_gpu_types_uses_the_third(
    served: tuple[RunpodEmulator, LocalPodRunner], demo_dir: Path, tmp_path: Path
) -> None:
    emulator, _ = served
    emulator.gpus[2]["availability"] = "HIGH"  # the H100 is in stock ...
    emulator.no_capacity(RTX, A100)  # ... the first two fail at create,
    emulator.stale_catalog = True  # though the catalog still shows them available
    job = demo_job(demo_dir, "20261201-120000-capa")
    provider = provider_for(emulator, tmp_path / "home", gpu_ids=(RTX, A100, H100))

    async def scenario() -> None:
        handle = await provider.launch(job)
        assert handle.extra["gpu"] == H100
        assert [p.gpu_id for p in emulator.live_pods()] == [H100]
        await provider.cancel(job)

    asyncio.run(scenario())
    assert emulator.live_pods() == []


def test_when_every_gpu_type_fails_the_error_names_each_and_no_pod_exists(
    served: tuple[RunpodEmulator, LocalPodRunner], demo_dir: Path, tmp_path: Path
) -> None:
    emulator, _ = served
    emulator.no_capacity(RTX, A100)
    emulator.stale_catalog = True
    job = demo_job(demo_dir, "20261201-120000-none")
    provider = provider_for(emulator, tmp_path / "home", gpu_ids=(RTX, A100, H100, "NVIDIA B9"))

    with pytest.raises(ProviderError) as caught:
        asyncio.run(provider.launch(job))
    message = str(caught.value)
    assert f"{RTX}: no capacity" in message
    assert f"{A100}: no capacity" in message
    assert f"{H100}: the catalog shows none available" in message
    assert "NVIDIA B9: not in RunPod's GPU catalog" in message
    assert emulator.live_pods() == []
    creates = [r.body["gpu"]["id"] for r in emulator.requests if r.method == "POST"]
    assert creates == [RTX, A100], "a GPU the catalog shows unavailable was tried"


@pytest.mark.slow
def test_crossing_the_budget_deletes_the_pod_within_one_poll(
    served: tuple[RunpodEmulator, LocalPodRunner], demo_dir: Path, tmp_path: Path
) -> None:
    emulator, _ = served
    home = tmp_path / "home"
    store = JobStore(home / "ftdesk.sqlite3")
    job = demo_job(demo_dir, "20261201-120000-budg", max_steps=100000)
    store.add_job(job, "created")
    provider = provider_for(emulator, home, budget_usd=Decimal("1.00"))

    async def scenario() -> Job:
        handle = await provider.launch(job)
        current = store.get_job(job.id).model_copy(update={"handle": handle})
        update = await provider.poll(current)
        current = (await asyncio.to_thread(ingest, store, current, update)).job
        assert not current.is_final and emulator.live_pods()
        emulator.clock.advance(2 * 3600)  # $0.69/h for 2 h: $1.38, past the $1.00 budget
        update = await provider.poll(current)
        assert emulator.live_pods() == [], "the pod outlived the poll that crossed the budget"
        return (await asyncio.to_thread(ingest, store, current, update)).job

    done = asyncio.run(scenario())
    assert done.state is JobState.CANCELLED
    assert "budget reached ($1.38 spent" in done.state_reason


def test_a_pod_stuck_provisioning_is_deleted_at_the_limit(
    served: tuple[RunpodEmulator, LocalPodRunner], demo_dir: Path, tmp_path: Path
) -> None:
    emulator, _ = served
    emulator.provisioning_s = float("inf")
    job = demo_job(demo_dir, "20261201-120000-stuk")
    provider = provider_for(emulator, tmp_path / "home", provisioning_limit_s=600)

    async def advance(seconds: float) -> None:
        emulator.clock.advance(60)  # each check of the pod is a virtual minute later

    provider._sleep = advance
    with pytest.raises(ProviderError, match=r"still PROVISIONING after 6\d\d s .*deleted"):
        asyncio.run(provider.launch(job))
    assert emulator.live_pods() == []
    assert any(r.method == "DELETE" for r in emulator.requests)


def test_the_account_key_comes_from_the_secret_store(
    served: tuple[RunpodEmulator, LocalPodRunner],
    demo_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No key injected: the provider reads `runpod_api_key` from the keychain (here a memory
    keyring at the system's edge); RunPod accepts it, so the launch gets as far as the GPUs."""
    from test_secrets import MemoryKeyring

    from desktop.core.secrets import SecretStore

    emulator, _ = served
    monkeypatch.delenv("FTDESK_RUNPOD_API_KEY", raising=False)
    keyring = MemoryKeyring()
    store = SecretStore(backend=keyring, environ={})
    store.set("runpod_api_key", SENTINEL)
    job = demo_job(demo_dir, "20261201-120000-keys")
    with_key = provider_for(emulator, tmp_path / "home", gpu_ids=("NVIDIA B9",))
    keyed = RunpodProvider(with_key._context, secret_store=lambda: store, step_s=0.2)
    with pytest.raises(ProviderError, match="NVIDIA B9: not in RunPod's GPU catalog"):
        asyncio.run(keyed.launch(job))
    assert any(r.path == "/v2/catalog/gpus" for r in emulator.requests)

    keyring.items.clear()
    with pytest.raises(AuthError, match="no RunPod API key: save it in Settings"):
        asyncio.run(keyed.launch(job))
    assert emulator.live_pods() == []


@pytest.mark.slow
def test_with_the_app_away_the_pod_deletes_itself_at_the_budget_and_the_job_says_so(
    served: tuple[RunpodEmulator, LocalPodRunner], demo_dir: Path, tmp_path: Path
) -> None:
    """Nobody polls (the app was killed): the pod's own watchdog deletes it once the budget is
    crossed on RunPod's clock; the app, back, reads `cancelled: budget reached` with dollars."""
    emulator, runner = served
    home = tmp_path / "home"
    store = JobStore(home / "ftdesk.sqlite3")
    job = demo_job(demo_dir, "20261201-120000-away", max_steps=100000)
    store.add_job(job, "created")
    provider = provider_for(emulator, home, budget_usd=Decimal("1.00"))
    handle = asyncio.run(provider.launch(job))
    emulator.clock.advance(2 * 3600)  # $0.69/h for 2 h: past the $1.00 budget

    end = time.monotonic() + DEADLINE_S
    while emulator.live_pods():
        assert time.monotonic() < end, "the pod's watchdog never deleted the pod"
        time.sleep(0.2)
    runner.join()
    assert not any(r.method == "DELETE" and r.query for r in emulator.requests)

    async def back() -> Job:
        current = store.get_job(job.id).model_copy(update={"handle": handle})
        update = await provider.poll(current)
        return (await asyncio.to_thread(ingest, store, current, update)).job

    done = asyncio.run(back())
    assert done.state is JobState.CANCELLED, done.state_reason
    assert "budget reached" in done.state_reason and "$1.00" in done.state_reason


@pytest.mark.slow
def test_cancel_stops_the_trainer_keeps_its_log_and_deletes_the_pod(
    served: tuple[RunpodEmulator, LocalPodRunner], demo_dir: Path, tmp_path: Path
) -> None:
    emulator, _ = served
    home = tmp_path / "home"
    store = JobStore(home / "ftdesk.sqlite3")
    job = demo_job(demo_dir, "20261201-120000-canc", max_steps=100000)
    store.add_job(job, "created")
    provider = provider_for(emulator, home)

    async def scenario() -> Job:
        handle = await provider.launch(job)
        current = store.get_job(job.id).model_copy(update={"handle": handle})
        end = time.monotonic() + DEADLINE_S
        while current.state is not JobState.TRAINING:
            assert time.monotonic() < end, f"never training: {current.state}"
            update = await provider.poll(current)
            current = (await asyncio.to_thread(ingest, store, current, update)).job
            await asyncio.sleep(0.3)
        await provider.cancel(current)
        assert emulator.live_pods() == []
        await provider.cancel(current)  # idempotent: nothing left to do
        update = await provider.poll(current)
        return (await asyncio.to_thread(ingest, store, current, update)).job

    done = asyncio.run(scenario())
    assert done.state is JobState.CANCELLED
    assert done.state_reason == "cancelled by the user"
    assert "[pod-boot]" in (demo_dir / "train.log").read_text(encoding="utf-8")
    assert sum(1 for r in emulator.requests if r.method == "DELETE") == 1


async def poll_once(provider: RunpodProvider, store: JobStore, job: Job) -> Job:
    """One poll and its ingest, as one tick of the service's watcher."""
    update = await provider.poll(job)
    return (await asyncio.to_thread(ingest, store, job, update)).job


async def poll_unless_unreachable(provider: RunpodProvider, store: JobStore, job: Job) -> Job:
    """One tick of the watcher, which leaves the job as it was when the pod does not answer."""
    try:
        return await poll_once(provider, store, job)
    except ProviderError:
        return job


@pytest.mark.slow
def test_a_container_that_restarts_twice_fails_the_job_and_the_pod_is_deleted(
    served: tuple[RunpodEmulator, LocalPodRunner], demo_dir: Path, tmp_path: Path
) -> None:
    """RunPod restarts the container (its uptime falls back) twice: the second restart,
    counted across a restarted app through pod.json, fails the job with the reason and deletes
    the pod; the pod's log is kept and the trainer ran once.

    The first restart is a crash loop seen between two starts (nothing listens: the poll finds
    the agent unreachable, as the service's watcher then marks the job, but counts the
    restart); the second really runs the container again."""
    emulator, runner = served
    home = tmp_path / "home"
    store = JobStore(home / "ftdesk.sqlite3")
    job = demo_job(demo_dir, "20261201-120000-rest", max_steps=100000)
    store.add_job(job, "created")

    async def scenario() -> Job:
        provider = provider_for(emulator, home)
        handle = await provider.launch(job)
        assert handle.pod_id is not None
        current = store.get_job(job.id).model_copy(update={"handle": handle})
        current = await poll_once(provider, store, current)
        for start in (False, True):
            emulator.clock.advance(60)
            current = await poll_unless_unreachable(provider, store, current)
            assert not current.is_final, current.state_reason
            emulator.restart_container(handle.pod_id, start=start)
            current = await poll_unless_unreachable(provider, store, current)
            provider = provider_for(emulator, home)  # the app restarted: pod.json counts on
        return current

    done = asyncio.run(scenario())
    assert done.state is JobState.FAILED
    assert "the pod's container restarted 2 times" in done.state_reason
    assert "its log is in train.log" in done.state_reason
    assert emulator.live_pods() == []
    log = (demo_dir / "train.log").read_text(encoding="utf-8")
    assert log.count("container start") == 1, "the trainer's container ran more than once"
    assert len(runner.created) == 1
    # The pod's trainer started once at most (the restarts may come before its first event).
    events = tmp_path / "pods" / runner.created[0] / "workspace" / job.id / "events.jsonl"
    starts = events.read_text(encoding="utf-8") if events.exists() else ""
    assert starts.count('"state":"starting"') <= 1


def test_an_exited_pod_is_deleted_and_the_job_fails_with_the_reason(
    served: tuple[RunpodEmulator, LocalPodRunner], demo_dir: Path, tmp_path: Path
) -> None:
    """The pod stopped (EXITED: no container, the disk still billed): one poll deletes it."""
    emulator, _ = served
    home = tmp_path / "home"
    store = JobStore(home / "ftdesk.sqlite3")
    job = demo_job(demo_dir, "20261201-120000-exit", max_steps=100000)
    store.add_job(job, "created")
    provider = provider_for(emulator, home)

    async def scenario() -> Job:
        handle = await provider.launch(job)
        assert handle.pod_id is not None
        current = store.get_job(job.id).model_copy(update={"handle": handle})
        emulator.stop_container(handle.pod_id)
        return await poll_once(provider, store, current)

    done = asyncio.run(scenario())
    assert emulator.live_pods() == []
    assert done.state is JobState.FAILED
    assert "container stopped (EXITED)" in done.state_reason
    assert "[pod-boot]" in (demo_dir / "train.log").read_text(encoding="utf-8")


def test_the_create_asks_for_the_images_cuda_and_carries_the_job_secrets(
    served: tuple[RunpodEmulator, LocalPodRunner], demo_dir: Path, tmp_path: Path
) -> None:
    """The default image is built for CUDA 12.8: the create asks for hosts with at least that
    (`gpu.minCudaVersion`, as RunPod's OpenAPI file names it, validated by the emulator), and
    the job's HF token and W&B key ride in the pod's env. No capacity: nothing is created."""
    emulator, _ = served
    emulator.no_capacity(RTX)
    emulator.stale_catalog = True  # the catalog shows it available: the create is sent
    job = demo_job(demo_dir, "20261201-120000-cuda")
    provider = provider_for(emulator, tmp_path / "home")
    secrets = {"HF_TOKEN": "hf_sentinel_token", "WANDB_API_KEY": "wandb-sentinel-key"}
    provider._context = ProviderContext(
        provider._context.settings,
        tmp_path / "home",
        TrainerRuntime(),
        secrets=lambda job: secrets,
    )
    with pytest.raises(ProviderError, match="no capacity"):
        asyncio.run(provider.launch(job))
    create = next(r for r in emulator.requests if (r.method, r.path) == ("POST", "/v2/pods"))
    assert create.body["gpu"]["minCudaVersion"] == "12.8"
    assert "allowedCudaVersions" not in create.body["gpu"]  # exclusive with the floor
    for name, value in secrets.items():
        assert create.body["env"][name] == value
    assert emulator.live_pods() == []


@pytest.mark.parametrize(
    ("image", "cuda"),
    [
        ("runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404", "12.8"),
        ("runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04", "12.4"),
        ("pytorch/pytorch:2.1.0-cuda11.8-cudnn8-runtime", "11.8"),
        ("ghcr.io/me/trainer:cu121", "12.1"),
        ("ghcr.io/me/trainer:latest", None),
    ],
)
def test_the_cuda_an_image_needs_is_read_from_its_tag(image: str, cuda: str | None) -> None:
    from desktop.providers.runpod.provider import image_min_cuda

    assert image_min_cuda(image) == cuda
