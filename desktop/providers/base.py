"""The provider protocol: one interface for every place a job can run (docs/architecture.md).

Providers know nothing of Qt or the store: they take a `Job` snapshot and return what they
observed. They never invent a state they did not observe.

Each provider package builds itself: it registers one factory (`register_provider`) that takes
a `ProviderContext` (the settings, the data folder, the trainer runtime, the job secrets) and
returns a `Provider`. The job service builds providers only through the registry and knows no
provider's internals; what a provider can do beyond the protocol's core is a `Capability`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

from desktop.core.runtime import TrainerRuntime
from desktop.models import Job, JobUpdate, LogChunk, ProviderHandle, Settings

__all__ = [
    "Capability",
    "JobSecrets",
    "Provider",
    "ProviderContext",
    "ProviderFactory",
    "available_providers",
    "get_provider_factory",
    "no_secrets",
    "register_provider",
]


class Capability(StrEnum):
    """What a provider can do beyond launch/poll/cancel; the app offers only what it has.

    Members:
        GPU: it can say which GPUs it hands out (`Provider.gpu_slots`); a config with
            `hardware.device: auto` then runs on the CPU where it has none.
        MULTI_GPU: one job may take several GPUs.
        QUEUE: jobs may wait for a slot (`Provider.queue_position` says where).
        BILLING: it reports `JobUpdate.cost_usd`.
        OFFLINE: it works without the network (offline mode allows only these).
        REATTACH: a job it started survives the app and is watched again after a restart.
    """

    GPU = "gpu"
    MULTI_GPU = "multi_gpu"
    QUEUE = "queue"
    BILLING = "billing"
    OFFLINE = "offline"
    REATTACH = "reattach"


class JobSecrets(Protocol):
    """The secret store as a provider sees it: a job's secrets as environment variables."""

    def __call__(self, job: Job) -> Mapping[str, str]:
        """`{"HF_TOKEN": ...}` for the job's trainer (blocking; call it in a worker thread)."""
        ...


def no_secrets(job: Job) -> Mapping[str, str]:
    """A `JobSecrets` that has none (tests, a context built without a secret store)."""
    return {}


@dataclass(frozen=True)
class ProviderContext:
    """Everything a provider factory may build from; one value, rebuilt when settings change.

    Attributes:
        settings: the app's settings (slots, poll interval, cancel grace, ...).
        home: the app's data folder (`desktop.models.data_home()`).
        runtime: the trainer runtime (its Python, offline mode, child environment).
        secrets: a job's secrets as environment variables, read at launch.
    """

    settings: Settings
    home: Path
    runtime: TrainerRuntime
    secrets: JobSecrets = no_secrets

    @property
    def offline(self) -> bool:
        """Whether offline mode is on (the runtime's mode)."""
        return self.runtime.offline


@runtime_checkable
class Provider(Protocol):
    """Runs the trainer somewhere and reports what happens to it."""

    name: str
    capabilities: frozenset[Capability]

    def apply_context(self, context: ProviderContext) -> None:
        """Use new settings from the next launch on; jobs already running are untouched."""
        ...

    async def launch(self, job: Job) -> ProviderHandle:
        """Start (or queue) the job; returns what reattach needs. The job dir already holds
        config.json."""
        ...

    async def poll(self, job: Job) -> JobUpdate:
        """New events since `job.events_offset` / `events_last_seq`, the observed state, cost."""
        ...

    async def cancel(self, job: Job) -> None:
        """Stop the job (idempotent): the trainer checkpoints within a grace period."""
        ...

    async def logs(self, job: Job, since: int) -> LogChunk:
        """Console output from byte `since`; resumable."""
        ...

    async def fetch_artifacts(self, job: Job, dest: Path) -> None:
        """Bring the job's output to `dest` (a no-op where it is already there)."""
        ...

    async def gpu_slots(self) -> tuple[int, ...]:
        """The GPU indices jobs may get (asked only with `Capability.GPU`)."""
        ...

    def queue_position(self, job_id: str) -> int | None:
        """0-based place of a waiting job (asked only with `Capability.QUEUE`); None: not
        waiting."""
        ...

    async def aclose(self) -> None:
        """Release what the provider holds (clients, connections); jobs keep running."""
        ...


ProviderFactory = Callable[[ProviderContext], Provider]
_REGISTRY: dict[str, ProviderFactory] = {}


def register_provider(name: str, factory: ProviderFactory) -> None:
    """Make a provider available under `name` (e.g. "local", "runpod")."""
    _REGISTRY[name] = factory


def get_provider_factory(name: str) -> ProviderFactory:
    """The factory registered as `name`.

    Raises:
        KeyError: with the names that exist.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown provider {name!r}; available: {known}") from None


def available_providers() -> list[str]:
    """Registered provider names."""
    return sorted(_REGISTRY)
