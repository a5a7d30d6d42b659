"""`finetune-desk models pull ORG/NAME [--revision R] | list | remove ORG/NAME`: the model cache.

`pull` shows what it will download and the free space first, refuses with the figures when it
does not fit, then prints a progress line; a cut connection resumes where it broke, and Ctrl-C
keeps the complete files for the next pull. The token comes from the secret store (the keychain,
or `$FTDESK_HF_TOKEN` for one session). See `desktop.core.models_cache`.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING

from desktop.cli.output import print_json, table
from desktop.core.errors import ConfigError

if TYPE_CHECKING:
    from desktop.cli.commands import Context

__all__ = ["cmd_models"]


class _ProgressLine:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._shown = 0.0
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        from desktop.core.models_cache import human_bytes

        now = time.monotonic()
        if done != total and now - self._shown < 0.1:
            return
        self._shown = now
        percent = 100 if total == 0 else done * 100 // total
        width = 30
        filled = width * percent // 100
        line = (
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {percent:3d}% "
            f"{human_bytes(done)} of {human_bytes(total)}"
        )
        print(line, end="", file=sys.stderr, flush=True)
        if done == total and self._last != total:
            print(file=sys.stderr, flush=True)
        self._last = done


def _pull(ctx: Context) -> int:
    from desktop.core import models_cache as mc

    if not ctx.ns.repo:
        raise ConfigError("models pull: give the model as ORG/NAME")
    token = None if ctx.offline else mc.stored_hf_token()
    plan = mc.plan_pull(ctx.ns.repo, ctx.ns.revision, token=token, offline=ctx.offline)
    print(plan.describe(), file=sys.stderr, flush=True)
    cancel = threading.Event()
    try:
        folder = mc.pull(
            plan,
            token=token,
            offline=ctx.offline,
            progress=_ProgressLine(f"pulling {plan.repo_id}"),
            cancel=cancel,
        )
    except KeyboardInterrupt:
        cancel.set()
        print(
            f"\npull of {plan.repo_id} interrupted; complete files are kept, run the same "
            "command to finish it",
            file=sys.stderr,
        )
        return 130
    if ctx.ns.json:
        print_json({"repo_id": plan.repo_id, "commit": plan.commit, "path": str(folder)})
    else:
        print(f"{plan.repo_id} is ready in {folder}")
    return 0


def cmd_models(ctx: Context) -> int:
    """`models pull|list|remove`: the local Hugging Face model cache."""
    from desktop.core import models_cache as mc

    action = ctx.ns.action
    if action == "pull":
        return _pull(ctx)
    if action == "remove":
        if not ctx.ns.repo:
            raise ConfigError("models remove: give the model as ORG/NAME")
        freed = mc.remove_cached(ctx.ns.repo)
        print(f"removed {ctx.ns.repo.strip()} from the cache, {mc.human_bytes(freed)} freed")
        return 0
    models = mc.list_cached()
    if ctx.ns.json:
        print_json(
            [
                {
                    "repo_id": m.repo_id,
                    "size_bytes": m.size_bytes,
                    "revisions": list(m.revisions),
                    "path": str(m.path),
                }
                for m in models
            ]
        )
        return 0
    if not models:
        print(
            f"no models in the cache ({mc.cache_dir()}); pull one with: "
            "finetune-desk models pull ORG/NAME"
        )
        return 0
    rows = [[m.repo_id, mc.human_bytes(m.size_bytes), ", ".join(m.revisions)] for m in models]
    print(table(rows, ["MODEL", "SIZE", "REVISIONS"]))
    total = sum(m.size_bytes for m in models)
    print(f"{len(models)} model(s), {mc.human_bytes(total)} in {mc.cache_dir()}")
    return 0
