"""The RunPod provider: a job runs on a pod of its own, under a budget, and the pod always goes.

`launch` tries the GPU types in the user's order (those the catalog shows unavailable are
skipped, a no-capacity answer moves to the next), creates one pod named `ftdesk-<job id>` on a
host whose CUDA is at least what the image's tag names, with the bootstrap as its `args`, the
job's token in its env (never the user's RunPod key) and the job's HF token / W&B key when set;
waits until it runs and its agent answers (a pod stuck past the provisioning limit is deleted
and the job fails), uploads the trainer bundle, the config and the dataset (each verified by
sha256), has the pod fetch a dataset given as a pinned URL (`pod_data`: a failed fetch fails the
launch before training) and starts the trainer. A pod with `gpu_count` GPUs trains with one
process per GPU through the trainer's multi-process launcher, as a local multi-GPU job does.

`poll` mirrors the pod's `events.jsonl` and `train.log` into the job folder through the agent,
then reads the mirrored events exactly as the local provider does (an `EventReader` from the
stored offsets), so `ingest` needs no change. Cost is the pod's hourly cost times the time since
its creation, both on RunPod's clock. Crossing the budget cancels the trainer and deletes the
pod in that same poll. When training ends the artifacts are pulled and verified, the agent is
told so, the whole pod log is in `train.log`, and the pod is deleted. A container that
RunPod restarted (its uptime falls back; counted in `pod.json`) twice, or a pod that EXITED
(no container, still billing), is given up: its log kept, the pod deleted, the job failed with
the reason. Every way out (done, failed, cancelled, budget, stuck, a restart loop, a failed
launch) ends with the pod deleted.

Over 600 lines on purpose: launch, poll and every teardown path share one invariant (the pod is
deleted, its log and artifacts kept first), and keeping them in one class keeps that invariant
readable in one place; the pieces that stand alone already live beside it (`pod_sync`,
`pod_logs`, `pod_data`, `spend`, `sweep`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from pydantic import SecretStr

from desktop.core.errors import AuthError, CapacityError, NotFoundError, ProviderError
from desktop.models import Job, JobState, JobUpdate, LogChunk, ProviderHandle, RunpodOptions
from desktop.providers.base import Capability, ProviderContext
from desktop.providers.mirrored import read_mirrored, trainer_bundle
from desktop.providers.runpod.agent_client import AgentClient
from desktop.providers.runpod.api import DEFAULT_API_URL, RunpodApi, resolve_api_url
from desktop.providers.runpod.bootstrap import (
    container_args,
    default_requirements,
    pod_env,
    render_script,
)
from desktop.providers.runpod.models import (
    Availability,
    CreatePodRequest,
    GpuRequest,
    GpuType,
    Mounts,
    PersistentMount,
    Pod,
    PodStatus,
)
from desktop.providers.runpod.pod_data import dataset_fetches, wait_fetched
from desktop.providers.runpod.pod_files import (
    PodRecord,
    load_record,
    pod_config,
    save_record,
)
from desktop.providers.runpod.pod_logs import keep_runpod_log
from desktop.providers.runpod.pod_sync import final_word, mirror, pull_artifacts
from desktop.providers.runpod.spend import Ledger, check_spend_cap, limit_reached, note_gone

__all__ = [
    "AGENT_PORT",
    "API_KEY_ENV",
    "DEFAULT_PROXY_URL",
    "NAME_PREFIX",
    "PROXY_URL_ENV",
    "RunpodProvider",
    "build_runpod_provider",
    "image_min_cuda",
]

if TYPE_CHECKING:
    from desktop.core.secrets import SecretStore

log = logging.getLogger(__name__)

NAME_PREFIX = "ftdesk-"
AGENT_PORT = 8000
API_KEY_ENV = "FTDESK_RUNPOD_API_KEY"
PROXY_URL_ENV = "FTDESK_RUNPOD_PROXY_URL"
DEFAULT_PROXY_URL = "https://{pod_id}-{port}.proxy.runpod.net"
# Between calls to the pod's own agent (cheap, not RunPod's rate-limited API): a longer pause
# there would sit on the path from RUNNING to the first step (bench/pod_overhead.py).
AGENT_STEP_S = 1.0
MAX_RESTARTS = 2  # container restarts before the pod is given up (a crash loop bills on)
Sleep = Callable[[float], Awaitable[None]]
ProxyUrl = Callable[[str, int], str]


_CUDA_DOTTED = re.compile(r"cuda(\d+)\.(\d+)", re.IGNORECASE)
_CUDA_PACKED = re.compile(r"(?:^|[-:_/.])cu(\d{2})(\d)\d*(?=$|[-_.])", re.IGNORECASE)


def image_min_cuda(image: str) -> str | None:
    """The CUDA version (`major.minor`) an image's tag says it was built for, or None.

    `cuda12.4.1` and `cu1281` (RunPod's and PyTorch's spellings) both count; a host with an
    older driver cannot run such an image, so the create asks for at least this version.
    """
    tag = image.rsplit("/", 1)[-1]
    found = _CUDA_DOTTED.search(tag) or _CUDA_PACKED.search(tag)
    return f"{int(found.group(1))}.{int(found.group(2))}" if found else None


def template_proxy_url(template: str | None) -> ProxyUrl:
    """The agent URL of a pod from a template with `{pod_id}` and `{port}`."""
    chosen = template or os.environ.get(PROXY_URL_ENV) or DEFAULT_PROXY_URL
    return lambda pod_id, port: chosen.format(pod_id=pod_id, port=port)


class RunpodProvider:
    """Jobs on RunPod pods (see the module docstring).

    Args:
        context: Settings (`settings.runpod` holds the launch options) and the job secrets.
        api_key: The account's key; None: `runpod_api_key` from the secret store (the
            keychain, or `$FTDESK_RUNPOD_API_KEY` for one session), read at each call.
        secret_store: Makes the secret store (tests pass one on a memory keyring).
        proxy_url: How a pod's agent is reached; None: the template of the options.
        sleep: How to wait between checks of a starting pod (tests move a virtual clock).
        step_s: Seconds between those checks.
    """

    name = "runpod"
    capabilities = frozenset({Capability.GPU, Capability.BILLING, Capability.REATTACH})

    def __init__(
        self,
        context: ProviderContext,
        *,
        api_key: SecretStr | None = None,
        secret_store: Callable[[], SecretStore] | None = None,
        proxy_url: ProxyUrl | None = None,
        sleep: Sleep = asyncio.sleep,
        step_s: float = 5.0,
    ) -> None:
        self._context = context
        self._api_key = api_key
        self._secret_store = secret_store or _default_secret_store
        self._proxy_override = proxy_url
        self._sleep = sleep
        self._step_s = step_s

    # -- the protocol's small members -----------------------------------------------------------

    def apply_context(self, context: ProviderContext) -> None:
        """New options from the next launch on; running pods keep their limits."""
        self._context = context

    @property
    def options(self) -> RunpodOptions:
        """The launch options now in force."""
        return self._context.settings.runpod

    def _proxy(self, pod_id: str) -> str:
        proxy = self._proxy_override or template_proxy_url(self.options.proxy_url)
        return proxy(pod_id, AGENT_PORT)

    async def _key(self) -> SecretStr:
        """The account key (the keychain is blocking: read in a worker thread)."""
        if self._api_key is not None:
            return self._api_key
        store = self._secret_store()
        value = await asyncio.to_thread(store.get, "runpod_api_key")
        if value is None or not value.get_secret_value().strip():
            raise AuthError(
                f"no RunPod API key: save it in Settings, or set {API_KEY_ENV} for this session"
            )
        return value

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=15.0))

    async def _api(self, http: httpx.AsyncClient) -> RunpodApi:
        return RunpodApi(http, await self._key(), base_url=self.options.api_url)

    async def gpu_slots(self) -> tuple[int, ...]:
        """A pod's GPUs are its own: no local slots are handed out."""
        return ()

    def queue_position(self, job_id: str) -> int | None:
        """RunPod jobs never wait in the local queue."""
        return None

    async def aclose(self) -> None:
        """Nothing is held between calls: each opens and closes its own client."""

    async def logs(self, job: Job, since: int) -> LogChunk:
        """The job's `train.log` (the pod's log, mirrored at each poll) from byte `since`."""

        def read() -> LogChunk:
            path = job.job_dir / "train.log"
            try:
                with open(path, "rb") as handle:
                    handle.seek(since)
                    data = handle.read(1024 * 1024)
            except FileNotFoundError:
                data = b""
            return LogChunk(
                text=data.decode("utf-8", "replace"), offset=since, next_offset=since + len(data)
            )

        return await asyncio.to_thread(read)

    async def fetch_artifacts(self, job: Job, dest: Path) -> None:
        """The artifacts are pulled into the job folder before the pod goes: nothing to do."""

    # -- launch --------------------------------------------------------------------------------

    async def launch(self, job: Job) -> ProviderHandle:
        """Create the job's pod, wait for its agent, upload, start (see the module docstring).

        Raises:
            ProviderError: no GPU type could be had (each named with the reason), the pod was
                stuck past the limit, or an upload failed; no pod is left behind.
        """
        options = self.options
        if not options.gpu_ids:
            raise ProviderError("no RunPod GPU type chosen: pass --gpu ID[,ID...]")
        try:  # a dataset URL the pod could not fetch is refused before any money is spent
            dataset_fetches(job.config)
        except ValueError as exc:
            raise ProviderError(f"job {job.id}: {exc}") from None
        extra = await asyncio.to_thread(self._context.secrets, job)
        await asyncio.to_thread(pod_config, job)  # what cannot travel is refused before a pod
        token = secrets.token_urlsafe(32)
        async with self._http() as http:
            api = await self._api(http)
            ledger = Ledger(self._context.home)
            async with ledger.locked():  # the cap's check and the pod's ledger line: one step
                await check_spend_cap(api, ledger, options.monthly_cap_usd, options.budget_usd)
                pod, gpu, price = await self._create(api, job, token, dict(extra))
                await asyncio.to_thread(
                    ledger.created, pod_id=pod.id, name=pod.name, job_id=job.id, gpu_id=gpu,
                    cost_per_hour=price, budget_usd=options.budget_usd, created_at=pod.created_at,
                )  # fmt: skip
            record = PodRecord(
                pod_id=pod.id,
                name=pod.name,
                token=token,
                gpu_id=gpu,
                cost_per_hour=price,
                budget_usd=options.budget_usd,
                max_runtime_s=options.max_runtime_s,
                created_at=pod.created_at.isoformat(),
            )
            await asyncio.to_thread(save_record, job.job_dir, record)
            try:
                agent = AgentClient(http, self._proxy(pod.id), token)
                await self._wait_running(api, agent, pod)
                await self._upload_and_start(job, agent, options.gpu_count)
            except BaseException as exc:
                # Nothing of the pod's log was mirrored yet: RunPod's stream has it (not kept
                # for a cancelled launch, whose pod goes at once).
                await self._delete(api, job, record, agent_gone=isinstance(exc, Exception))
                raise
        return ProviderHandle(
            provider=self.name,
            pod_id=pod.id,
            extra={
                "gpu": gpu,
                "gpu_count": str(options.gpu_count),
                "cost_per_hour": str(price),
                "budget_usd": str(record.budget_usd),
            },
        )

    async def _create(
        self, api: RunpodApi, job: Job, token: str, extra: dict[str, str]
    ) -> tuple[Pod, str, Decimal]:
        options = self.options
        catalog: dict[str, GpuType] = {g.id: g for g in await api.gpu_types()}
        why: list[str] = []
        api_url = resolve_api_url(options.api_url)
        args = container_args(render_script(job.id, default_requirements()))
        for gpu in options.gpu_ids:
            entry = catalog.get(gpu)
            if entry is None:
                why.append(f"{gpu}: not in RunPod's GPU catalog")
                continue
            if entry.availability is Availability.NONE:
                why.append(f"{gpu}: the catalog shows none available")
                continue
            # RunPod bills per GPU: the pod's hourly cost is the GPU's price times the count.
            price = (getattr(entry.price, options.cloud) or Decimal(0)) * options.gpu_count
            env = pod_env(
                job.id,
                token,
                budget_usd=options.budget_usd,
                max_runtime_s=options.max_runtime_s,
                cost_per_hour=price,
                api_url=api_url if api_url != DEFAULT_API_URL else None,
                port=AGENT_PORT,
                extra=extra,
            )
            request = CreatePodRequest(
                name=f"{NAME_PREFIX}{job.id}",
                image=options.image,
                gpu=GpuRequest(
                    id=gpu,
                    count=options.gpu_count,
                    min_cuda_version=image_min_cuda(options.image),
                ),
                cloud="SECURE" if options.cloud == "secure" else "COMMUNITY",
                disk=options.disk_gb,
                mounts=Mounts(persistent=PersistentMount(size=options.volume_gb)),
                ports=(f"{AGENT_PORT}/http",),
                env={k: SecretStr(v) for k, v in env.items()},
                args=args,
            )
            try:
                return await api.create_pod(request), gpu, price
            except CapacityError:
                why.append(f"{gpu}: no capacity")
        raise ProviderError(
            f"job {job.id}: no pod could be created, no money was spent; "
            + "; ".join(why)
            + ". Choose other GPU types (--gpu) or try again later"
        )

    async def _wait_running(self, api: RunpodApi, agent: AgentClient, pod: Pod) -> None:
        limit = self.options.provisioning_limit_s
        started = time.monotonic()
        status = pod.status
        while True:
            current = await api.get_pod(pod.id)
            status = current.status
            if status is PodStatus.RUNNING:
                try:
                    await agent.health()
                    return
                except ProviderError:
                    pass  # the container is up, its agent not yet
            now = api.server_time or datetime.now(UTC)
            waited = max((now - pod.created_at).total_seconds(), time.monotonic() - started)
            if waited > limit:
                raise ProviderError(
                    f"pod {pod.id} was still {status.value} after {waited:.0f} s (the limit is "
                    f"{limit:.0f} s); it was deleted. Try another GPU type or later"
                )
            running = status is PodStatus.RUNNING  # only the agent is awaited now
            await self._sleep(min(self._step_s, AGENT_STEP_S) if running else self._step_s)

    async def _upload_and_start(self, job: Job, agent: AgentClient, gpu_count: int) -> None:
        cfg, files = pod_config(job, gpu_count)
        fetches = dataset_fetches(job.config)
        for fetch in fetches:  # first: the pod downloads while the bundle uploads
            await agent.fetch(fetch.name, fetch.url, fetch.sha256)
        bundle = await asyncio.to_thread(trainer_bundle)
        await agent.upload("trainer-bundle.tar.gz", bundle)
        for name, path in files.items():
            await agent.upload_file(name, path)
        await agent.upload("config.json", cfg.to_json().encode())
        # Bounded by the maximum runtime, which the pod's watchdog enforces anyway.
        timeout = self.options.max_runtime_s
        step = min(self._step_s, AGENT_STEP_S)
        await wait_fetched(job.id, agent, fetches, self._sleep, step, timeout)
        limit = self.options.provisioning_limit_s
        started = time.monotonic()
        while True:
            try:
                await agent.start()
                return
            except ProviderError as exc:
                # 409 while the pod still installs the trainer's requirements.
                if "requirements" not in str(exc) or time.monotonic() - started > limit:
                    raise
            await self._sleep(step)

    # -- poll, cancel, teardown ----------------------------------------------------------------

    async def poll(self, job: Job) -> JobUpdate:
        """Mirror the pod's events and log, read them as the local provider does, bill, and
        end the pod when training ended or the budget is crossed."""
        record = await asyncio.to_thread(load_record, job.job_dir)
        if record is None:
            return JobUpdate()
        if record.deleted:
            update = await asyncio.to_thread(read_mirrored, job, True)
            return final_word(job, record, update)
        async with self._http() as http:
            api = await self._api(http)
            agent = AgentClient(http, self._proxy(record.pod_id), record.token)
            try:
                pod = await api.get_pod(record.pod_id)
            except NotFoundError:
                record = self._gone(api, record)
                await asyncio.to_thread(save_record, job.job_dir, record)
                await asyncio.to_thread(
                    note_gone, Ledger(self._context.home), record, api.server_time
                )
                update = await asyncio.to_thread(read_mirrored, job, True)
                return final_word(job, record, update)
            cost = self._cost(api, pod, record)
            # The record as saved with the uptime seen: what follows saves it again (the mirror's
            # offsets) and must not put back an older restart count.
            record, broken = await self._broken_container(job, pod, record)
            if broken is not None:
                await self._abandon(api, agent, job, broken)
                record = await asyncio.to_thread(load_record, job.job_dir) or broken
                update = await asyncio.to_thread(read_mirrored, job, True)
                return final_word(job, record, update).model_copy(update={"cost_usd": cost})
            # The limits before the agent: a pod whose agent is gone still bills, and only the
            # app is left to delete it (the agent's watchdog went with the agent).
            limit = limit_reached(record, cost, pod.created_at, api.server_time)
            if limit is not None:
                await self._stop(api, agent, job, record, JobState.CANCELLED, limit)
                record = await asyncio.to_thread(load_record, job.job_dir) or record
                update = await asyncio.to_thread(read_mirrored, job, True)
                return final_word(job, record, update).model_copy(update={"cost_usd": cost})
            health = await agent.health()
            await agent.heartbeat()
            record = await mirror(agent, job.job_dir, record)
            ended = not health.get("trainer_alive") and health.get("state") in (
                "ended",
                "recovery",
            )
            if health.get("state") == "recovery":
                restarted = "the pod's container restarted during training"
                await self._stop(api, agent, job, record, JobState.FAILED, restarted)
            elif ended:
                await self._finish(api, agent, job, record, health.get("exit_code"))
            else:
                update = await asyncio.to_thread(read_mirrored, job, False)
                return update.model_copy(update={"cost_usd": cost})
            record = await asyncio.to_thread(load_record, job.job_dir) or record
            update = await asyncio.to_thread(read_mirrored, job, True)
            return final_word(job, record, update).model_copy(update={"cost_usd": cost})

    async def _broken_container(
        self, job: Job, pod: Pod, record: PodRecord
    ) -> tuple[PodRecord, PodRecord | None]:
        """The record with the uptime seen (saved, so a restarted app keeps counting), and the
        record with the job's failure when the pod's container is beyond saving, else None.

        An EXITED pod no longer runs its container but still bills its disk. A container
        restart shows as `runtime.uptime` falling back; after `MAX_RESTARTS` of them the pod
        is given up rather than left restarting on the user's money.
        """
        if pod.status is PodStatus.EXITED:
            reason = (
                f"pod {pod.id}'s container stopped (EXITED) while the pod still billed; the pod "
                "was deleted and its log is in train.log"
            )
            return record, record.model_copy(
                update={"final_state": JobState.FAILED.value, "final_reason": reason}
            )
        uptime = pod.runtime.uptime if pod.runtime is not None else None
        if uptime is None:
            return record, None
        last = record.uptime_s
        restarted = last is not None and uptime < last
        restarts = record.restarts + (1 if restarted else 0)
        record = record.model_copy(update={"uptime_s": uptime, "restarts": restarts})
        await asyncio.to_thread(save_record, job.job_dir, record)
        if restarted:
            log.info("job %s: pod %s's container restarted (%d)", job.id, pod.id, restarts)
        if restarts < MAX_RESTARTS:
            return record, None
        reason = (
            f"the pod's container restarted {restarts} times (its uptime fell back, last from "
            f"{last} s to {uptime} s); the pod was deleted and its log is in train.log"
        )
        return record, record.model_copy(
            update={"final_state": JobState.FAILED.value, "final_reason": reason}
        )

    async def _abandon(
        self, api: RunpodApi, agent: AgentClient, job: Job, record: PodRecord
    ) -> None:
        """Keep what the agent still serves (its events and log), then delete the pod."""
        await asyncio.to_thread(save_record, job.job_dir, record)
        agent_gone = False
        try:
            record = await mirror(agent, job.job_dir, record)
        except ProviderError as exc:
            log.info("job %s: pod %s's agent no longer answers: %s", job.id, record.pod_id, exc)
            agent_gone = True
        await self._delete(api, job, record, agent_gone=agent_gone)

    def _gone(self, api: RunpodApi, record: PodRecord) -> PodRecord:
        """The pod vanished while nobody watched: say why, as far as RunPod's clock tells.

        Its watchdog deletes it at the budget or the maximum runtime, so a pod gone past
        either was stopped for that (it stopped at the limit: the budget is what was spent).
        """
        state, reason = JobState.FAILED, f"pod {record.pod_id} no longer exists on RunPod"
        now = api.server_time
        if now is not None:
            elapsed = (now - datetime.fromisoformat(record.created_at)).total_seconds()
            cost = record.cost_per_hour * Decimal(max(0.0, elapsed)) / Decimal(3600)
            if cost >= record.budget_usd:
                state = JobState.CANCELLED
                reason = (
                    f"budget reached (${record.budget_usd:.2f} spent); the pod's watchdog "
                    "deleted it"
                )
            elif elapsed >= record.max_runtime_s:
                state = JobState.CANCELLED
                reason = (
                    f"maximum runtime reached ({record.max_runtime_s} s); the pod's watchdog "
                    "deleted it"
                )
        return record.model_copy(
            update={
                "deleted": True,
                "final_state": record.final_state or state.value,
                "final_reason": record.final_reason or reason,
            }
        )

    def _cost(self, api: RunpodApi, pod: Pod, record: PodRecord) -> Decimal:
        hourly = pod.cost if pod.cost > 0 else record.cost_per_hour
        now = api.server_time or datetime.now(UTC)
        seconds = max(0.0, (now - pod.created_at).total_seconds())
        return (hourly * Decimal(seconds) / Decimal(3600)).quantize(Decimal("0.0001"))

    async def _finish(
        self,
        api: RunpodApi,
        agent: AgentClient,
        job: Job,
        record: PodRecord,
        exit_code: object,
    ) -> None:
        """Training ended: artifacts home and verified, the agent told, the pod deleted."""
        code = exit_code if isinstance(exit_code, int) else None
        record = record.model_copy(update={"exit_code": code})
        agent_gone = False
        try:
            await pull_artifacts(agent, job.job_dir, self._sleep)
            # The whole log first: once confirmed, the pod's watchdog deletes the pod at once.
            record = await mirror(agent, job.job_dir, record)
            await agent.confirm()
        except ProviderError as exc:
            record = record.model_copy(
                update={
                    "final_state": JobState.FAILED.value,
                    "final_reason": f"the artifacts could not be fetched: {exc}",
                }
            )
            agent_gone = True
        await self._delete(api, job, record, agent_gone=agent_gone)

    async def _stop(
        self,
        api: RunpodApi,
        agent: AgentClient,
        job: Job,
        record: PodRecord,
        state: JobState,
        reason: str,
    ) -> None:
        """Stop the trainer (it checkpoints within the grace), keep what exists, delete."""
        record = record.model_copy(update={"final_state": state.value, "final_reason": reason})
        await asyncio.to_thread(save_record, job.job_dir, record)
        agent_gone = False
        try:
            await agent.cancel()
            deadline = time.monotonic() + self._context.settings.cancel_grace_s
            while time.monotonic() < deadline:
                health = await agent.health()
                if not health.get("trainer_alive"):
                    break
                await asyncio.sleep(min(1.0, self._step_s))
            record = await mirror(agent, job.job_dir, record)
            await pull_artifacts(agent, job.job_dir, self._sleep)
        except ProviderError as exc:
            log.info("job %s: stopping pod %s: %s", job.id, record.pod_id, exc)
            agent_gone = True
        await self._delete(api, job, record, agent_gone=agent_gone)

    async def _delete(
        self, api: RunpodApi, job: Job, record: PodRecord, *, agent_gone: bool = False
    ) -> None:
        """Delete the pod; when its agent no longer answered, first keep its log from
        RunPod's log stream (`pod_logs`), so the logs outlive the pod all the same."""
        if agent_gone:
            try:
                record = await keep_runpod_log(api, job.job_dir, record)
            except Exception as exc:  # never a reason to keep a pod billing
                log.warning("job %s: could not keep the pod's log (%s); deleting it", job.id, exc)
        await api.delete_pod(record.pod_id)
        when = api.server_time or datetime.now(UTC)
        await asyncio.to_thread(
            Ledger(self._context.home).deleted, record.pod_id, when
        )  # the monthly spend
        await asyncio.to_thread(
            save_record, job.job_dir, record.model_copy(update={"deleted": True})
        )

    async def cancel(self, job: Job) -> None:
        """Cancel the trainer, pull what exists after the grace, delete the pod (idempotent)."""
        record = await asyncio.to_thread(load_record, job.job_dir)
        if record is None or record.deleted:
            return
        async with self._http() as http:
            api = await self._api(http)
            agent = AgentClient(http, self._proxy(record.pod_id), record.token)
            await self._stop(api, agent, job, record, JobState.CANCELLED, "cancelled by the user")


def _default_secret_store() -> SecretStore:
    from desktop.core.secrets import SecretStore

    return SecretStore()


def build_runpod_provider(context: ProviderContext) -> RunpodProvider:
    """The registry's factory: a RunPod provider from the app's context."""
    return RunpodProvider(context)
