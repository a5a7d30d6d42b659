"""Orphaned pods: pods of the account named with our prefix that no live job owns.

A pod is ours when its name starts with `ftdesk-`; it is owned when a job of the store is
active (not final) and its handle names that pod (or has no pod yet: the launch is creating
it). Everything else with our prefix bills for nothing: a pod named for a final job, for a job
this store does not know, or a second pod named for a live job. Pods without our prefix are
never listed, so never deleted. Qt-free: the CLI's `pods` command (and later the window) use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from desktop.core.errors import JobStateError
from desktop.models import Job, JobState, ProviderHandle
from desktop.providers.runpod.api import RunpodApi
from desktop.providers.runpod.models import Pod
from desktop.providers.runpod.pod_files import load_record, save_record
from desktop.providers.runpod.provider import NAME_PREFIX

__all__ = [
    "Orphan",
    "adopt_pod",
    "adoption_target",
    "delete_orphans",
    "find_orphans",
    "orphans_among",
    "relink",
]


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


async def delete_orphans(
    api: RunpodApi,
    jobs: Iterable[Job],
    home: Path | None = None,
    only: Iterable[str] | None = None,
) -> list[Orphan]:
    """Delete the orphaned pods (listed afresh, so a pod a job adopted meanwhile is kept);
    returns those deleted. With `only` (pod ids: what a person was shown), no other pod is
    deleted, not even one orphaned since. With the data folder `home`, each deletion is written
    to the spend ledger, so the month's spend stops counting the pod."""
    from desktop.providers.runpod.spend import Ledger

    orphans = await find_orphans(api, jobs)
    if only is not None:
        shown = set(only)
        orphans = [orphan for orphan in orphans if orphan.pod_id in shown]
    for orphan in orphans:
        await api.delete_pod(orphan.pod_id)
        if home is not None:
            when = api.server_time or datetime.now(UTC)
            await asyncio.to_thread(Ledger(home).deleted, orphan.pod_id, when)
    return orphans


_DELETE_HINT = "delete it with: finetune-desk pods --delete-orphans"


def adoption_target(pods: Iterable[Pod], jobs: Iterable[Job], pod_id: str) -> tuple[Job, Pod]:
    """The job that may adopt the pod `pod_id`, and the pod.

    Only an `unknown` job may: it is still active, and whatever its provider observes next
    (training, completed, failed) is an allowed move from unknown. A final job cannot go back
    (a failed or cancelled job moves only to queued, which would launch a new pod).

    Raises:
        JobStateError: in one sentence, why this pod cannot be adopted and what to do instead.
    """
    pod = next((p for p in pods if p.id == pod_id), None)
    if pod is None:
        raise JobStateError(
            f"pod {pod_id} is not in this RunPod account; list them: finetune-desk pods"
        )
    if not pod.name.startswith(NAME_PREFIX):
        raise JobStateError(
            f"pod {pod_id} ({pod.name}) was not made by finetune-desk: nothing adopts it"
        )
    job_id = pod.name.removeprefix(NAME_PREFIX)
    job = next((j for j in jobs if j.id == job_id and j.provider == "runpod"), None)
    if job is None:
        raise JobStateError(
            f"pod {pod_id} is named for job {job_id}, whose job folder is not here (not in this "
            f"job list), so nothing can adopt it; {_DELETE_HINT}"
        )
    if job.state is not JobState.UNKNOWN:
        if not job.is_final and job.handle is not None and job.handle.pod_id == pod.id:
            raise JobStateError(f"pod {pod_id} already belongs to job {job.id} ({job.state.value})")
        raise JobStateError(
            f"job {job.id} is {job.state.value}: only an unknown job can be re-linked to its pod "
            f"(a {job.state.value} job can only be resumed on a new pod); {_DELETE_HINT}"
        )
    return job, pod


def relink(job: Job, pod: Pod) -> Job:
    """Point the job's pod.json and handle at `pod` (its token, budget and limits kept); returns
    the job to store. The job stays unknown: the provider's next poll settles its state.

    Raises:
        JobStateError: the job's pod.json (with the pod agent's token) is missing.
    """
    record = load_record(job.job_dir)
    if record is None:
        raise JobStateError(
            f"job {job.id} has no pod.json in {job.job_dir}: without the agent's token the app "
            f"cannot talk to pod {pod.id}; {_DELETE_HINT}"
        )
    save_record(
        job.job_dir,
        record.model_copy(
            update={
                "pod_id": pod.id,
                "name": pod.name,
                "cost_per_hour": pod.cost,
                "deleted": False,
                "final_state": None,
                "final_reason": "",
                "exit_code": None,
            }
        ),
    )
    base = job.handle if job.handle is not None else ProviderHandle(provider="runpod")
    return job.model_copy(update={"handle": base.model_copy(update={"pod_id": pod.id})})


async def adopt_pod(api: RunpodApi, jobs: Iterable[Job], pod_id: str) -> tuple[Job, Pod]:
    """Re-link the unknown job a running pod is named for to that pod (see `adoption_target`,
    `relink`); returns the job to store and the pod."""
    job, pod = adoption_target(await api.list_pods(), jobs, pod_id)
    return relink(job, pod), pod
