"""Export after the fact: merge a finished job's adapter into its base, push it to the Hub.

The work needs torch and peft, so it runs in the trainer runtime (`python -m trainer export`,
`trainer/export.py`) through the one gateway, `TrainerRuntime.run_json`, which streams its
progress lines and stops it on Cancel. Everything that can be refused without the runtime is
refused here first, each with one sentence and before any process starts or any request is
made: a job that is not completed (unless a checkpoint is chosen), an unknown dtype, a
repository name the Hub would reject, a push in offline mode, a push without a stored token.
The token reaches the child as `HF_TOKEN` in its environment only.

Qt-free and blocking: the window calls it from a worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.core.errors import AuthError, ConfigError, OfflineError, ProviderError
from desktop.core.models_cache import check_repo_id, stored_hf_token
from desktop.models import JobState

if TYPE_CHECKING:
    from desktop.core.runtime import TrainerRuntime
    from desktop.models import Job

__all__ = ["DTYPES", "ExportRequest", "ExportResult", "default_merged_dir", "export_job"]

DTYPES = ("fp32", "bf16", "fp16")
# A merge of a 7B model on a CPU takes minutes; a push of its 15 GB may take an hour.
EXPORT_TIMEOUT_S = 6 * 3600.0


@dataclass(frozen=True)
class ExportRequest:
    """What to export and where.

    Attributes:
        checkpoint: a checkpoint's step instead of the final output.
        merge: merge the adapter into the base model.
        dtype: the merged weights' dtype (fp32, bf16, fp16).
        out: the merged model's folder (default: `default_merged_dir`).
        push: the Hub repository (org/name) to upload to, or None.
        private: create the Hub repository private.
    """

    checkpoint: int | None = None
    merge: bool = False
    dtype: str = "fp32"
    out: Path | None = None
    push: str | None = None
    private: bool = True


@dataclass(frozen=True)
class ExportResult:
    """What the export did: the merged folder, the Hub repository and its URL."""

    out: Path | None
    pushed: str | None
    url: str | None
    files: tuple[str, ...]


def default_merged_dir(job: Job, checkpoint: int | None = None) -> Path:
    """Where a merge goes by default: the job's `output/merged/` (or `merged-checkpoint-N/`)."""
    name = "merged" if checkpoint is None else f"merged-checkpoint-{checkpoint}"
    return Path(job.job_dir) / "output" / name


def _refusals(job: Job, request: ExportRequest, offline: bool) -> str | None:
    if not request.merge and not request.push:
        return "nothing to export: choose a merge, a push to the Hub, or both"
    if request.checkpoint is None and job.state is not JobState.COMPLETED:
        return (
            f"job {job.id} is {job.state.value}, not completed: export a completed job, or "
            "choose one of its checkpoints (--checkpoint N)"
        )
    if request.dtype not in DTYPES:
        return f"dtype {request.dtype!r} is not one of {', '.join(DTYPES)}"
    if request.merge and request.out is not None:
        return _out_refusal(Path(request.out), default_merged_dir(job, request.checkpoint))
    return None


def _out_refusal(out: Path, default: Path) -> str | None:
    """Why a merge must not write to `out`: it replaces the folder it writes (and uses
    `<out>.partial` and `<out>.old` beside it), so only an empty folder, the default one or an
    earlier export of ours (its model card tagged `finetune-desk`) may be replaced."""
    if out.resolve() == default.resolve():
        return None
    ours = out / "README.md"
    if out.exists() and any(out.iterdir()):
        try:
            tagged = "- finetune-desk" in ours.read_text(encoding="utf-8", errors="replace")
        except OSError:
            tagged = False
        if not tagged:
            return (
                f"--out {out}: the folder holds files that are not an earlier export; a merge "
                "replaces the whole folder, so choose a new or empty one (e.g. --out NEW_DIR)"
            )
    for sibling in (out.with_name(out.name + ".partial"), out.with_name(out.name + ".old")):
        if sibling.exists():
            return (
                f"--out {out}: {sibling} exists and a merge would replace it; move it away or "
                "choose another folder"
            )
    return None


def export_job(
    runtime: TrainerRuntime,
    job: Job,
    request: ExportRequest,
    *,
    offline: bool,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    cancel: threading.Event | None = None,
    token: Callable[[], str | None] = stored_hf_token,
) -> ExportResult:
    """Merge and/or push `job` as `request` says, in the trainer runtime.

    Raises:
        ConfigError: the request cannot be done (the sentence says why and what to do).
        OfflineError: a push in offline mode (nothing was started, no request made).
        AuthError: a push without a stored token, or a token the Hub refused.
        ProviderError: the Hub failed the push.
        TrainerCommandCancelledError: `cancel` was set; the child is gone.
        RuntimeNotReadyError: the trainer runtime could not run the export.
    """
    why = _refusals(job, request, offline)
    if why:
        raise ConfigError(why)
    secrets: dict[str, str] = {}
    if request.push:
        repo = check_repo_id(request.push, what="--push repository")
        if offline:
            raise OfflineError(
                f"offline mode is on: nothing was sent to the Hub; turn offline mode off "
                f"(Settings, or drop --offline) to push to {repo}"
            )
        value = token()
        if not value:
            raise AuthError(
                "pushing needs a Hugging Face token with write access: store it with "
                "`finetune-desk keys set hf_token` (or Settings → Keys)"
            )
        secrets["HF_TOKEN"] = value
    args = ["--job-dir", str(job.job_dir), "--dtype", request.dtype]
    if request.checkpoint is not None:
        args += ["--checkpoint", str(request.checkpoint)]
    if request.merge:
        args.append("--merge")
        args += ["--out", str(request.out or default_merged_dir(job, request.checkpoint))]
    if request.push:
        args += ["--push", request.push.strip(), "--private" if request.private else "--public"]
    report = runtime.run_json(
        "export",
        *args,
        timeout_s=EXPORT_TIMEOUT_S,
        accept_codes=(0, 1, 2),
        secrets=secrets,
        on_progress=on_progress or (lambda _p: None),
        cancel=cancel,
    )
    if not report.get("ok"):
        error = str(report.get("error") or "the export failed without saying why")
        if "token" in error and "refused" in error:
            raise AuthError(error)
        if error.startswith("the push failed"):
            raise ProviderError(error)
        raise ConfigError(error)
    out = report.get("out")
    return ExportResult(
        Path(out) if out else None,
        report.get("pushed"),
        report.get("url"),
        tuple(report.get("files") or ()),
    )
