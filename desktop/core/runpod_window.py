"""What the window asks of RunPod before and around a launch, Qt-free: the GPU offers, the key's
test, the estimate per chosen GPU, and the orphan sweep with its delete and adopt.

The window runs each through `Operations` (the async ones as tasks, the blocking ones in a worker
thread); the CLI has the same use-cases in `desktop/cli/pods.py` and `desktop/cli/dry_run.py`.
Only `list`/`GET` calls are made, except the Delete and Adopt a person asked for.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from desktop.core.errors import AuthError, ConfigError
from desktop.core.estimate import (
    GpuOffer,
    RunEstimate,
    TokenCount,
    dataset_tokens,
    estimate_run,
    offers_for,
    pod_installs_bitsandbytes,
)
from desktop.models import data_home

if TYPE_CHECKING:
    from desktop.core.runtime import TrainerRuntime
    from desktop.core.service import JobService
    from desktop.models import Job, RunpodOptions
    from desktop.providers.runpod.sweep import Orphan
    from trainer.config import TrainingConfig

__all__ = [
    "GpuChoice",
    "adopt_orphan",
    "delete_orphan_pods",
    "estimate_offers",
    "find_orphan_pods",
    "gpu_offers",
    "runpod_key",
    "test_runpod_key",
]

_KEY_HINT = "save the RunPod API key in Settings, or set FTDESK_RUNPOD_API_KEY for this session"


def runpod_key(store: Any) -> SecretStr:
    """The account key from the secret store (blocking: the keychain).

    Raises:
        AuthError: no key saved.
    """
    key = store.get("runpod_api_key")
    if key is None or not key.get_secret_value().strip():
        raise AuthError(f"no RunPod API key: {_KEY_HINT}")
    return key  # type: ignore[no-any-return]


@dataclass(frozen=True)
class GpuChoice:
    """One GPU type as the window lists it: both clouds' prices per GPU-hour and the stock."""

    gpu_id: str
    name: str
    memory_gb: float | None
    secure: Decimal | None
    community: Decimal | None
    availability: str | None

    def offer(self, cloud: str) -> GpuOffer:
        """The offer in `cloud` ("secure" or "community"), for the estimate."""
        price = self.secure if cloud == "secure" else self.community
        return GpuOffer(self.gpu_id, self.name, self.memory_gb, price, self.availability)


async def gpu_offers(store: Any, options: RunpodOptions) -> list[GpuChoice]:
    """Every GPU type of the live catalog: the chosen ones first, in the user's order, then the
    rest by secure price.

    Raises:
        AuthError, UnreachableError, ...: the key is missing or refused, RunPod unreachable.
    """
    from desktop.providers.runpod.catalog import load_catalog

    key = await asyncio.to_thread(runpod_key, store)
    catalog = await load_catalog(key, options.api_url)
    order = {gpu: i for i, gpu in enumerate(options.gpu_ids)}
    secure = {o.gpu_id: o for o in offers_for(catalog, tuple(g.id for g in catalog), "secure")}
    choices = [
        GpuChoice(
            g.id,
            secure[g.id].name,
            secure[g.id].memory_gb,
            g.price.secure,
            g.price.community,
            secure[g.id].availability,
        )
        for g in catalog
    ]
    choices.sort(
        key=lambda c: (order.get(c.gpu_id, len(order)), c.secure is None, c.secure or 0, c.gpu_id)
    )
    return choices


async def test_runpod_key(store: Any, api_url: str | None) -> str:
    """One sentence: the key works, is refused (401), or RunPod cannot be reached."""
    from desktop.providers.runpod.catalog import check_connection

    try:
        key = await asyncio.to_thread(runpod_key, store)
    except AuthError as exc:
        return f"{str(exc)[0].upper()}{str(exc)[1:]}."
    return await check_connection(key, api_url)


test_runpod_key.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# The last token count, by what it depends on: a budget or GPU change re-estimates without
# running the trainer's check-data again.
_TOKENS: dict[tuple[object, ...], TokenCount] = {}


def _tokens_key(config: TrainingConfig) -> tuple[object, ...]:
    """What a token count depends on: the dataset settings, the model, the data file's version."""
    path = Path(str(config.dataset.path)).expanduser()
    try:
        stat = path.stat()
        version: tuple[int, int] = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        version = (0, 0)
    return (config.dataset.model_dump_json(), config.model.name_or_path, str(path), version)


def estimate_offers(
    config: TrainingConfig,
    runtime: TrainerRuntime,
    offers: list[GpuOffer],
    options: RunpodOptions,
) -> list[RunEstimate]:
    """The estimate of `config` on each offer (blocking: the trainer's check-data counts the
    tokens, the model's config.json gives its size).

    Raises:
        ConfigError: the dataset is not a local file (no tokens to count before launch).
        DatasetError, RuntimeNotReadyError: as the launch's checks.
    """
    from desktop.core.checks import check_datasets
    from desktop.core.memory_fit import read_model_config

    key = _tokens_key(config)
    tokens = _TOKENS.get(key)
    if tokens is None:
        reports = check_datasets(config, runtime)
        if not reports:
            raise ConfigError(
                f"estimate: dataset {config.dataset.path!r} is not a local file, so its tokens "
                "cannot be counted before launch"
            )
        tokens = dataset_tokens(config, reports[0])
        _TOKENS.clear()  # one config at a time is edited: keep only its count
        _TOKENS[key] = tokens
    try:
        model: dict[str, Any] | None = read_model_config(config.model.name_or_path)
    except ConfigError:
        model = None
    return [
        estimate_run(
            config,
            tokens,
            offer,
            model_config=model,
            gpu_count=options.gpu_count,
            budget_usd=options.budget_usd,
            max_runtime_s=options.max_runtime_s,
            pod_has_bitsandbytes=pod_installs_bitsandbytes(),
        )
        for offer in offers
    ]


async def _with_api(store: Any, options: RunpodOptions, work: Any) -> Any:
    from desktop.providers.runpod.api import RunpodApi

    key = await asyncio.to_thread(runpod_key, store)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0)) as http:
        return await work(RunpodApi(http, key, base_url=options.api_url))


async def find_orphan_pods(store: Any, service: JobService) -> list[tuple[Orphan, bool]]:
    """The account's `ftdesk-` pods no live job owns (`sweep.find_orphans`), each with whether
    it may be adopted (it is named for a job of the store that is `unknown`)."""
    from desktop.models import JobState
    from desktop.providers.runpod.sweep import find_orphans

    jobs = await asyncio.to_thread(service.jobs)
    unknown = {j.id for j in jobs if j.provider == "runpod" and j.state is JobState.UNKNOWN}
    found = await _with_api(store, service.settings.runpod, lambda api: find_orphans(api, jobs))
    return [(o, o.job_id in unknown) for o in found]


async def delete_orphan_pods(
    store: Any, service: JobService, pod_ids: list[str] | None = None
) -> list[Orphan]:
    """Delete the orphaned pods, listed afresh (a pod adopted meanwhile is kept); with
    `pod_ids` (those the banner shows), only those."""
    from desktop.providers.runpod.sweep import delete_orphans

    jobs = await asyncio.to_thread(service.jobs)
    home = data_home()
    return await _with_api(  # type: ignore[no-any-return]
        store, service.settings.runpod, lambda api: delete_orphans(api, jobs, home, pod_ids)
    )


async def adopt_orphan(store: Any, service: JobService, pod_id: str) -> Job:
    """Re-link the unknown job the pod is named for to it, as `pods --adopt` does, store it,
    and let the service watch it again (its next poll settles the state).

    Raises:
        JobStateError, NotFoundError: the pod may not be adopted (the message says why).
    """
    from desktop.providers.runpod.sweep import adopt_pod

    jobs = await asyncio.to_thread(service.jobs)
    options = service.settings.runpod

    async def adopt(api: Any) -> Any:
        return await adopt_pod(api, jobs, pod_id)

    job, _pod = await _with_api(store, options, adopt)
    await asyncio.to_thread(service.store.save_job, job)
    await service.refresh(job.id)
    return job  # type: ignore[no-any-return]
