"""Orphaned pods: pods of the account named with our prefix that no live job owns.

A pod is ours when its name starts with `ftdesk-`; it is owned when a job of the store is
active (not final) and its handle names that pod (or has no pod yet: the launch is creating
it). Everything else with our prefix bills for nothing: a pod named for a final job, for a job
this store does not know, or a second pod named for a live job. Pods without our prefix are
never listed, so never deleted. Qt-free: the CLI's `pods` command (and later the window) use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from desktop.models import Job
from desktop.providers.runpod.api import RunpodApi
from desktop.providers.runpod.models import Pod
from desktop.providers.runpod.provider import NAME_PREFIX

__all__ = ["Orphan", "delete_orphans", "find_orphans", "orphans_among"]


@dataclass(frozen=True)
class Orphan:
    """A pod of ours that no live job owns, and why it counts as orphaned."""

    pod_id: str
    name: str
    cost_per_hour: Decimal
    status: str
    job_id: str | None
    why: str

    def to_json(self) -> dict[str, Any]:
        """The orphan as JSON-ready values (the cost as a string, exact)."""
        data = asdict(self)
        data["cost_per_hour"] = str(self.cost_per_hour)
        return data


def _owned(job: Job, pod: Pod) -> bool:
    if job.is_final:
        return False
    pod_id = job.handle.pod_id if job.handle is not None else None
    return pod_id is None or pod_id == pod.id


def orphans_among(pods: Iterable[Pod], jobs: Iterable[Job]) -> list[Orphan]:
    """The pods of `pods` with our prefix that no job of `jobs` owns (see the module docstring)."""
    by_id = {job.id: job for job in jobs if job.provider == "runpod"}
    found: list[Orphan] = []
    for pod in pods:
        if not pod.name.startswith(NAME_PREFIX):
            continue
        job_id = pod.name.removeprefix(NAME_PREFIX) or None
        job = by_id.get(job_id) if job_id is not None else None
        if job is None:
            why = f"job {job_id} is not in the job list"
        elif job.is_final:
            why = f"job {job_id} is {job.state.value}"
        elif _owned(job, pod):
            continue
        else:
            owner = job.handle.pod_id if job.handle is not None else None
            why = f"job {job_id} runs on pod {owner}, not this one"
        found.append(
            Orphan(
                pod_id=pod.id,
                name=pod.name,
                cost_per_hour=pod.cost,
                status=pod.status.value,
                job_id=job_id,
                why=why,
            )
        )
    return found


async def find_orphans(api: RunpodApi, jobs: Iterable[Job]) -> list[Orphan]:
    """The account's orphaned pods, given every job of the store."""
    return orphans_among(await api.list_pods(), jobs)


async def delete_orphans(api: RunpodApi, jobs: Iterable[Job]) -> list[Orphan]:
    """Delete the orphaned pods (listed afresh, so a pod a job adopted meanwhile is kept);
    returns those deleted."""
    orphans = await find_orphans(api, jobs)
    for orphan in orphans:
        await api.delete_pod(orphan.pod_id)
    return orphans
