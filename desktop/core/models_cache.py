"""Models ahead of the run: pull a Hub model into the local cache, list it, remove it.

A run that names a Hub model (`org/name`) downloads it when it starts; pulling it first makes
the cost visible (how much, will it fit), survivable (a cut connection, a cancel or a crash
resumes from the bytes on disk instead of starting over) and puts the files where the trainer
looks for them: the Hugging Face cache (`$HF_HUB_CACHE`, else huggingface_hub's default), so
`model.name_or_path: org/name` then loads offline.

`plan_pull` asks the Hub for the commit and the file sizes and compares what is missing with
the free space; `pull` fetches the missing files one by one into huggingface_hub's cache layout
(`blobs/<etag>`, linked from `snapshots/<commit>/`), each through `blobs/<etag>.incomplete`
which a later try continues with a `Range` request, reports bytes to `progress` and stops at
the next chunk when `cancel` is set. Both refuse in offline mode before any request. A gated or
private model answered 401/403 becomes one sentence: accept the licence on the model's page,
store the token.

Qt-free and blocking (network and disk): the window calls it from a worker thread.
huggingface_hub is imported only inside these functions (it is torch-free, but not needed to
start the app). The file bodies are fetched here rather than by `hf_hub_download`, whose
partial files (2.x) are private to one process and deleted on failure: a pull could then never
resume after a cancel or a crash.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from desktop.core.errors import (
    AuthError,
    ConfigError,
    DiskFullError,
    FtdeskError,
    OfflineError,
    UnreachableError,
)

__all__ = [
    "CachedModel",
    "PullCancelledError",
    "PullFile",
    "PullPlan",
    "cache_dir",
    "check_repo_id",
    "gated_sentence",
    "hub_endpoint",
    "list_cached",
    "plan_pull",
    "pull",
    "remove_cached",
    "stored_hf_token",
]

DEFAULT_ENDPOINT = "https://huggingface.co"
# The Hub's own rule for a repo id (huggingface_hub's validate_repo_id, plus the org part).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
# Room kept free beyond the files themselves (the cache's small files, the filesystem).
HEADROOM_BYTES = 50 * 1024 * 1024

Progress = Callable[[int, int], None]  # (bytes done, bytes to do)


class PullCancelledError(FtdeskError):
    """The pull was cancelled; complete files stay in the cache, the next pull skips them."""

    exit_code = 130


@dataclass(frozen=True)
class PullFile:
    """One file of the repo at the planned commit."""

    name: str
    size: int
    cached: bool


@dataclass(frozen=True)
class PullPlan:
    """What a pull will fetch, before it fetches anything.

    Attributes:
        repo_id: `org/name`.
        revision: the branch, tag or commit asked for.
        commit: the commit it resolves to on the Hub.
        files: every file of the repo at that commit.
        cache: the Hugging Face cache folder it goes into.
        free_bytes: the free space on that drive now.
    """

    repo_id: str
    revision: str
    commit: str
    files: tuple[PullFile, ...]
    cache: Path
    free_bytes: int

    @property
    def need_bytes(self) -> int:
        """Bytes still to download (files not already cached)."""
        return sum(f.size for f in self.files if not f.cached)

    @property
    def fits(self) -> bool:
        """Whether the missing files fit in the free space, with headroom."""
        return self.need_bytes + HEADROOM_BYTES <= self.free_bytes

    def describe(self) -> str:
        """One line: what is needed and what is free."""
        missing = sum(1 for f in self.files if not f.cached)
        return (
            f"{self.repo_id}@{self.revision} ({self.commit[:10]}): {missing} of "
            f"{len(self.files)} files to download, {human_bytes(self.need_bytes)} needed, "
            f"{human_bytes(self.free_bytes)} free in {self.cache}"
        )


@dataclass(frozen=True)
class CachedModel:
    """A model in the local Hugging Face cache."""

    repo_id: str
    size_bytes: int
    revisions: tuple[str, ...]
    path: Path


def human_bytes(n: int) -> str:
    """`n` bytes for a person: 512 B, 3.4 MB, 1.20 GB."""
    if n < 1000:
        return f"{n} B"
    if n < 1000**2:
        return f"{n / 1000:.1f} KB"
    if n < 1000**3:
        return f"{n / 1000**2:.1f} MB"
    return f"{n / 1000**3:.2f} GB"


def hub_endpoint() -> str:
    """The Hub's base URL: `$HF_ENDPOINT` (read now, not at import), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def cache_dir() -> Path:
    """The Hugging Face hub cache the trainer reads: `$HF_HUB_CACHE`, `$HF_HOME/hub`, or
    huggingface_hub's default (read now, so a changed environment is honoured)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def check_repo_id(repo_id: str, *, what: str = "model") -> str:
    """`repo_id` stripped, when it is a valid Hub `org/name`.

    Raises:
        ConfigError: it is not; the sentence shows the value and the rule.
    """
    value = repo_id.strip()
    if not _REPO_ID.match(value) or ".." in value or "--" in value or value.endswith((".", "-")):
        raise ConfigError(
            f"{what} {repo_id!r} is not a Hub repository name: give org/name (letters, digits, "
            "'-', '_', '.', at most 96 characters each, no '--' or '..')"
        )
    return value


def gated_sentence(repo_id: str) -> str:
    """What to do about a gated or private model the Hub refused (401/403)."""
    return (
        f"{repo_id} is gated or private and the Hub refused access: accept its licence on "
        f"{DEFAULT_ENDPOINT}/{repo_id} while logged in, then store your token with "
        "`finetune-desk keys set hf_token` (or Settings → Keys) and pull again"
    )


def stored_hf_token() -> str | None:
    """The Hugging Face token from the secret store (keychain, or `$FTDESK_HF_TOKEN`), or None.

    A machine without a usable keychain pulls public models all the same; a gated one then
    gets the sentence that says how to store the token.
    """
    from desktop.core.errors import SecretStoreError
    from desktop.core.secrets import SecretStore

    try:
        value = SecretStore().get("hf_token")
    except SecretStoreError:
        return None
    return value.get_secret_value() if value is not None else None


def _refuse_offline(offline: bool, repo_id: str) -> None:
    if offline:
        raise OfflineError(
            f"offline mode is on: {repo_id} cannot be pulled; turn offline mode off (Settings, "
            "or drop --offline) to download it"
        )


def _translate(exc: Exception, repo_id: str, revision: str) -> FtdeskError:
    """A huggingface_hub or network error as one of ours, one sentence each."""
    import httpx
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, OfflineModeIsEnabled):
        return OfflineError(
            f"HF_HUB_OFFLINE is set in this environment, so {repo_id} cannot be pulled: unset "
            "it (and turn offline mode off) to download it"
        )
    if isinstance(exc, GatedRepoError):
        return AuthError(gated_sentence(repo_id))
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HfHubHTTPError) and status in (401, 403):
        return AuthError(gated_sentence(repo_id))
    if isinstance(exc, RevisionNotFoundError):
        return ConfigError(f"{repo_id} has no revision {revision!r} on the Hub: check the name")
    if isinstance(exc, RepositoryNotFoundError):
        return ConfigError(
            f"{repo_id} is not on the Hub ({hub_endpoint()}): check the name (a private model "
            "also needs your token: `finetune-desk keys set hf_token`)"
        )
    if isinstance(exc, httpx.HTTPError | ConnectionError):
        return UnreachableError(
            f"cannot reach the Hub at {hub_endpoint()} to pull {repo_id}: {exc}; check the "
            "connection and pull again (complete files are kept)"
        )
    if isinstance(exc, HfHubHTTPError):
        return UnreachableError(f"the Hub refused pulling {repo_id}: {str(exc).splitlines()[0]}")
    raise exc


def _api(token: str | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), token=token or False)


def plan_pull(
    repo_id: str,
    revision: str | None = None,
    *,
    token: str | None = None,
    offline: bool = False,
    free_space: Callable[[Path], int] | None = None,
) -> PullPlan:
    """Ask the Hub what pulling `repo_id` at `revision` means: commit, files, sizes, space.

    Args:
        repo_id: `org/name`.
        revision: branch, tag or commit; None: `main`.
        token: the Hugging Face token, or None.
        offline: refuse before any request.
        free_space: bytes free on the drive holding a folder (default: `shutil.disk_usage`).

    Raises:
        OfflineError, ConfigError, AuthError, UnreachableError: one sentence each.
    """
    repo_id = check_repo_id(repo_id)
    rev = (revision or "").strip() or "main"
    _refuse_offline(offline, repo_id)
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.hf_api import RepoFile

    api = _api(token)
    try:
        info = api.model_info(repo_id, revision=rev)
        commit = str(info.sha)
        entries = [
            f
            for f in api.list_repo_tree(repo_id, revision=commit, recursive=True)
            if isinstance(f, RepoFile)
        ]
    except Exception as exc:  # translated to one sentence, or re-raised as a bug
        raise _translate(exc, repo_id, rev) from exc
    cache = cache_dir()
    files = tuple(
        PullFile(
            f.path,
            int(f.size),
            isinstance(
                try_to_load_from_cache(repo_id, f.path, cache_dir=cache, revision=commit), str
            ),
        )
        for f in entries
    )
    probe = cache
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = (free_space or (lambda p: shutil.disk_usage(p).free))(probe)
    return PullPlan(repo_id, rev, commit, files, cache, int(free))


# A cut transfer is retried this many times in one pull (each from the bytes already on disk).
RETRIES = 3
CHUNK_BYTES = 256 * 1024


def _storage(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def _fetch_file(
    plan: PullPlan,
    name: str,
    *,
    token: str | None,
    sink: Callable[[int], None],
    stop: threading.Event,
) -> Path:
    """Download one file into the cache layout huggingface_hub reads (`blobs/<etag>`, linked
    from `snapshots/<commit>/<name>`), resuming a `blobs/<etag>.incomplete` left by an earlier
    cut, cancel or crash with a `Range` request from its size."""
    import httpx
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils._headers import build_hf_headers

    url = hf_hub_url(plan.repo_id, name, revision=plan.commit, endpoint=hub_endpoint())
    meta = get_hf_file_metadata(url, token=token or False, endpoint=hub_endpoint())
    if not meta.etag:
        raise UnreachableError(f"the Hub sent no ETag for {plan.repo_id}/{name}; pull again later")
    storage = _storage(plan.cache, plan.repo_id)
    blob = storage / "blobs" / meta.etag
    partial = blob.with_name(blob.name + ".incomplete")
    blob.parent.mkdir(parents=True, exist_ok=True)
    target = meta.location or url
    same_host = urlsplit(target).netloc == urlsplit(hub_endpoint()).netloc
    # The token is for the Hub only, never for the storage host a large file redirects to.
    headers = build_hf_headers(token=(token or False) if same_host else False)
    headers["Accept-Encoding"] = "identity"  # byte offsets must be offsets of the file itself
    attempts = 0
    while not blob.exists():
        have = partial.stat().st_size if partial.exists() else 0
        if have:
            sink(have)
        request_headers = {**headers, **({"Range": f"bytes={have}-"} if have else {})}
        try:
            with httpx.stream(
                "GET",
                target,
                headers=request_headers,
                follow_redirects=True,
                timeout=httpx.Timeout(60.0, connect=15.0),
            ) as response:
                if response.status_code == 416 and have:  # the partial file is already whole
                    pass
                else:
                    response.raise_for_status()
                    if have and response.status_code != 206:
                        sink(-have)  # the server ignored the Range: start the file over
                        have = 0
                    # Raw reads as they arrive: every byte received before a cut reaches the
                    # disk (a buffered reader would drop its last partial chunk).
                    encoded = response.headers.get("Content-Encoding", "identity") != "identity"
                    chunks = response.iter_bytes(CHUNK_BYTES) if encoded else response.iter_raw()
                    with open(partial, "ab" if have else "wb") as out:
                        for chunk in chunks:
                            out.write(chunk)
                            sink(len(chunk))
                            if stop.is_set():
                                raise PullCancelledError(
                                    f"the pull of {plan.repo_id} was cancelled; pull again to "
                                    "finish it (what arrived is kept)"
                                )
        except httpx.TransportError as exc:
            attempts += 1
            got = (partial.stat().st_size if partial.exists() else 0) - have
            sink(-(have + got))  # re-counted from the file on disk at the next try
            if attempts > RETRIES:
                raise UnreachableError(
                    f"the download of {plan.repo_id}/{name} broke {attempts} times ({exc}); "
                    "pull again to resume it from where it stopped"
                ) from exc
            continue
        size = partial.stat().st_size
        if meta.size is not None and size != meta.size:
            partial.unlink()
            raise UnreachableError(
                f"{plan.repo_id}/{name} arrived with {size} bytes instead of {meta.size}; "
                "pull again"
            )
        os.replace(partial, blob)
        return blob
    sink(blob.stat().st_size)  # another pull finished this blob meanwhile
    return blob


def _link(blob: Path, target: Path) -> None:
    """`target` (in `snapshots/<commit>/`) pointing at `blob`, as huggingface_hub links them
    (relative symlinks; a copy where the system refuses symlinks)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        target.symlink_to(os.path.relpath(blob, target.parent))
    except OSError:
        shutil.copyfile(blob, target)


def pull(
    plan: PullPlan,
    *,
    token: str | None = None,
    offline: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Download what `plan` found missing; returns the snapshot folder (what the trainer loads).

    Files land in the Hugging Face cache layout. A transfer cut in the middle continues with a
    `Range` request from the bytes already on disk, in this pull (up to `RETRIES` times) or the
    next one (after a cancel, a crash or a lost connection). The revision is recorded in the
    cache's `refs/` so `org/name` at that revision then loads offline.

    Raises:
        DiskFullError: the missing files do not fit (figures in the sentence); nothing fetched.
        PullCancelledError: `cancel` was set; what arrived is kept for the next pull.
        OfflineError, AuthError, ConfigError, UnreachableError: one sentence each.
    """
    _refuse_offline(offline, plan.repo_id)
    if not plan.fits:
        raise DiskFullError(
            f"{plan.repo_id} needs {human_bytes(plan.need_bytes)} (plus "
            f"{human_bytes(HEADROOM_BYTES)} headroom) but only {human_bytes(plan.free_bytes)} is "
            f"free in {plan.cache}: free some space, or point HF_HUB_CACHE at a larger drive"
        )
    stop = cancel or threading.Event()
    total = plan.need_bytes
    done = 0

    def sink(n: int) -> None:  # one report per network read (at most 64 KiB)
        nonlocal done
        done += n
        if progress is not None:
            progress(max(0, min(done, total)), total)

    storage = _storage(plan.cache, plan.repo_id)
    snapshot = storage / "snapshots" / plan.commit
    if progress is not None:
        progress(0, total)
    for item in plan.files:
        if item.cached:
            continue
        if stop.is_set():
            raise PullCancelledError(
                f"the pull of {plan.repo_id} was cancelled; pull again to finish it"
            )
        before = done
        try:
            blob = _fetch_file(plan, item.name, token=token, sink=sink, stop=stop)
        except FtdeskError:
            raise
        except Exception as exc:  # translated to one sentence, or re-raised as a bug
            raise _translate(exc, plan.repo_id, plan.revision) from exc
        _link(blob, snapshot / item.name)
        done = before + item.size
    if progress is not None:
        progress(total, total)
    if plan.revision != plan.commit:
        refs = storage / "refs" / plan.revision
        refs.parent.mkdir(parents=True, exist_ok=True)
        tmp = refs.with_name(refs.name + ".tmp")
        tmp.write_text(plan.commit, encoding="utf-8")
        os.replace(tmp, refs)
    snapshot.mkdir(parents=True, exist_ok=True)  # a repo of no files is still pulled
    return snapshot


def list_cached() -> list[CachedModel]:
    """The models in the cache, largest first (no network)."""
    folder = cache_dir()
    if not folder.is_dir():
        return []
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(folder)
    models = [
        CachedModel(
            repo.repo_id,
            int(repo.size_on_disk),
            tuple(
                sorted(ref for rev in repo.revisions for ref in rev.refs)
                or sorted(rev.commit_hash[:10] for rev in repo.revisions)
            ),
            Path(repo.repo_path),
        )
        for repo in info.repos
        if repo.repo_type == "model"
    ]
    return sorted(models, key=lambda m: (-m.size_bytes, m.repo_id))


def remove_cached(repo_id: str) -> int:
    """Delete `repo_id` from the cache; returns the bytes freed.

    Raises:
        ConfigError: it is not cached (the sentence says how to list what is).
    """
    repo_id = check_repo_id(repo_id)
    for model in list_cached():
        if model.repo_id == repo_id:
            shutil.rmtree(model.path)
            return model.size_bytes
    raise ConfigError(
        f"{repo_id} is not in the model cache ({cache_dir()}); `finetune-desk models list` "
        "shows what is"
    )
