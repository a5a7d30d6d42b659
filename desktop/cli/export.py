"""`finetune-desk export JOB [--checkpoint N] [--merge] [--dtype D] [--out DIR] [--push ORG/NAME]
[--private | --public]`: a finished job merged and/or pushed to the Hub, after the fact.

The merge runs in the trainer runtime (see `desktop.core.export`); progress lines go to
stderr, the result to stdout. The merged model goes to DIR, by default the job's
`output/merged/`. A push is private unless `--public`, its token comes from the secret store,
and offline mode refuses it before anything starts.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.cli.output import print_json

if TYPE_CHECKING:
    from desktop.cli.commands import Context

__all__ = ["cmd_export"]


def _show(progress: dict[str, Any]) -> None:
    done, total = int(progress.get("done") or 0), int(progress.get("total") or 0)
    share = f"{done * 100 // total:3d}% " if total else ""
    print(f"{progress.get('stage', '')}: {share}{progress.get('message', '')}", file=sys.stderr)


def cmd_export(ctx: Context) -> int:
    """`export JOB ...`: merge the adapter into the base and/or push to the Hub."""
    from desktop.core.export import ExportRequest, export_job
    from desktop.core.store import JobStore

    store = JobStore()
    try:
        job = store.get_job(ctx.ns.job)
    finally:
        store.close()
    request = ExportRequest(
        checkpoint=ctx.ns.checkpoint,
        merge=bool(ctx.ns.merge),
        dtype=ctx.ns.dtype,
        out=Path(ctx.ns.out).expanduser().resolve() if ctx.ns.out else None,
        push=ctx.ns.push,
        private=bool(ctx.ns.private),
    )
    cancel = threading.Event()
    try:
        result = export_job(
            ctx.runtime, job, request, offline=ctx.offline, on_progress=_show, cancel=cancel
        )
    except KeyboardInterrupt:
        cancel.set()
        print("\nexport interrupted", file=sys.stderr)
        return 130
    if ctx.ns.json:
        print_json(
            {
                "job": job.id,
                "out": None if result.out is None else str(result.out),
                "pushed": result.pushed,
                "url": result.url,
                "files": list(result.files),
            }
        )
        return 0
    if result.out is not None:
        print(f"merged model of job {job.id} in {result.out}")
    if result.pushed:
        print(f"pushed to {result.pushed}: {result.url}")
    return 0
