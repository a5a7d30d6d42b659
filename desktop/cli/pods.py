"""`finetune-desk pods [--json] [--delete-orphans | --adopt POD_ID]`: RunPod pods no live job owns.

Lists the account's pods named `ftdesk-…` that no active job of this store owns (see
`desktop.providers.runpod.sweep`), each with its $/h, and deletes them with `--delete-orphans`.
`--adopt POD_ID` re-links a running pod to the `unknown` job it is named for (see
`sweep.adoption_target`).
The account key comes from the secret store (the keychain, or `$FTDESK_RUNPOD_API_KEY` for one
session), the API base from the settings or `$FTDESK_RUNPOD_API_URL`, as the provider's do.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import TYPE_CHECKING

from desktop.cli.output import print_json, table
from desktop.core.errors import AuthError
from desktop.models import data_home

if TYPE_CHECKING:
    from pydantic import SecretStr

    from desktop.cli.commands import Context
    from desktop.models import Job
    from desktop.providers.runpod.models import Pod
    from desktop.providers.runpod.sweep import Orphan

__all__ = ["cmd_pods"]


def _api_key() -> SecretStr:
    from desktop.core.secrets import SecretStore
    from desktop.providers.runpod.provider import API_KEY_ENV

    value = SecretStore().get("runpod_api_key")
    if value is None or not value.get_secret_value().strip():
        raise AuthError(
            f"no RunPod API key: save it with `finetune-desk keys set runpod_api_key`, or set "
            f"{API_KEY_ENV} for this session"
        )
    return value


def _jobs() -> list[Job]:
    from desktop.core.store import JobStore

    store = JobStore()
    try:
        return store.list_jobs()
    finally:
        store.close()


def _adopt(ctx: Context, key: SecretStr, jobs: list[Job], pod_id: str) -> int:
    """Re-link the unknown job the pod is named for to it, in pod.json and in the store."""
    import httpx

    from desktop.core.store import JobStore
    from desktop.providers.runpod.api import RunpodApi
    from desktop.providers.runpod.sweep import adopt_pod

    async def go() -> tuple[Job, Pod]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=15.0)) as http:
            api = RunpodApi(http, key, base_url=ctx.settings.runpod.api_url)
            return await adopt_pod(api, jobs, pod_id)

    job, pod = asyncio.run(go())
    store = JobStore()
    try:
        store.save_job(job)
    finally:
        store.close()
    print(
        f"adopted pod {pod.id} ({pod.name}, ${pod.cost:.2f}/h) for job {job.id}: it stays "
        "unknown until the app's next poll of the pod settles it"
    )
    return 0


def cmd_pods(ctx: Context) -> int:
    """`pods [--json] [--delete-orphans | --adopt POD_ID]`: orphaned RunPod pods, listed,
    deleted or adopted."""
    import httpx

    from desktop.providers.runpod.api import RunpodApi
    from desktop.providers.runpod.sweep import delete_orphans, find_orphans

    if ctx.offline:
        raise AuthError("`pods` asks RunPod for the account's pods: drop --offline to run it")
    key = _api_key()
    jobs = _jobs()
    if ctx.ns.adopt:
        return _adopt(ctx, key, jobs, ctx.ns.adopt)
    delete = bool(ctx.ns.delete_orphans)

    async def go() -> list[Orphan]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=15.0)) as http:
            api = RunpodApi(http, key, base_url=ctx.settings.runpod.api_url)
            if delete:
                return await delete_orphans(api, jobs, data_home())
            return await find_orphans(api, jobs)

    orphans = asyncio.run(go())
    if ctx.ns.json:
        print_json([o.to_json() for o in orphans])
        return 0
    if delete:
        for o in orphans:
            print(f"deleted pod {o.pod_id} ({o.name}, ${o.cost_per_hour:.2f}/h): {o.why}")
        if not orphans:
            print("no orphaned pods: nothing deleted")
        return 0
    if not orphans:
        print("no orphaned pods: every ftdesk- pod belongs to a live job")
        return 0
    rows = [[o.pod_id, o.name, f"{o.cost_per_hour:.2f}", o.status, o.why] for o in orphans]
    print(table(rows, ["POD", "NAME", "$/H", "STATUS", "WHY"]))
    total = sum((o.cost_per_hour for o in orphans), Decimal(0))
    print(
        f"{len(orphans)} orphaned pod(s) cost ${total:.2f}/h; delete them with: "
        "finetune-desk pods --delete-orphans"
    )
    return 0
