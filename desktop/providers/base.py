"""The provider protocol: one interface for every place a job can run (DESIGN.md, Providers).

Providers know nothing of Qt or the store: they take a `Job` snapshot and return what they
observed. They never invent a state they did not observe.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

from desktop.models import Job, JobUpdate, LogChunk, ProviderHandle

__all__ = [
    "Capability",
    "Provider",
    "ProviderFactory",
    "available_providers",
    "get_provider_factory",
    "register_provider",
]


class Capability(StrEnum):
    """What a provider can do beyond launch/poll/cancel."""

    GPU = "gpu"
    MULTI_GPU = "multi_gpu"
    QUEUE = "queue"
    BILLING = "billing"
    OFFLINE = "offline"
    REATTACH = "reattach"


@runtime_checkable
class Provider(Protocol):
    """Runs the trainer somewhere and reports what happens to it."""

    name: str
    capabilities: frozenset[Capability]

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


ProviderFactory = Callable[..., Provider]
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
