"""Datasets the pod fetches itself (`POST /files/data/<name>/fetch` on the agent).

Standard library only, like the rest of the agent: it runs before anything is installed. A
config whose dataset is a URL pinned by its sha256 (`https://host/train.jsonl#sha256=<hex>`, see
`trainer.config.DatasetConfig.path`) is not uploaded by the app: the pod downloads it, which is
faster for big files and never passes the data through the user's machine.

The rules, enforced here because the pod is what connects:

- https only; plain http only to a loopback host (the tests' emulator serves files there), so
  the data cannot be swapped on the way without the pin noticing anyway, and a typo'd `http://`
  is an error rather than a silent downgrade. A redirect to plain http is refused the same way.
- The pod's Hugging Face token (`HF_TOKEN`) is sent only to huggingface.co over https, and
  never along a redirect to another host (the Hub redirects file downloads to its CDN, whose
  signed URL needs no token).
- The bytes stream into the upload's part file, hashed on the way. The count must be what
  `Content-Length` announced (a dropped connection is retried, from the start, twice) and the
  sha256 must be the pinned one; otherwise the part file is deleted and the fetch fails with a
  sentence naming the URL, what came and what the config pins. A good file is committed exactly
  as an upload is (size and sha256 checked again, renamed atomically).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import re
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.client import HTTPMessage, HTTPResponse
from pathlib import Path
from typing import IO, Any

__all__ = ["HF_HOSTS", "Fetcher", "auth_headers", "url_problem"]

HF_HOSTS = ("huggingface.co", "hf.co")
CHUNK = 1024 * 1024
ATTEMPTS = 3
TIMEOUT_S = 60.0
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def url_problem(url: str) -> str | None:
    """Why the pod refuses to fetch `url` (one sentence saying what to give), or None."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host and _loopback(host):
        return None
    if parts.scheme == "http":
        return (
            f"{url}: plain http is accepted only from this machine (a loopback host); "
            "give an https URL"
        )
    return f"{url}: the pod fetches only https URLs; give an https URL"


def auth_headers(url: str, env: dict[str, str]) -> dict[str, str]:
    """The Hugging Face token as a header, only for https URLs on the Hub's own hosts."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    token = env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN")
    on_hub = host in HF_HOSTS or host.endswith(".huggingface.co")
    if token and parts.scheme == "https" and on_hub:
        return {"Authorization": f"Bearer {token}"}
    return {}


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, refusing plain http and keeping the token only on the same host."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        problem = url_problem(newurl)
        if problem is not None:
            raise ValueError(f"redirected to {problem}")  # not retried: it would again
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        # The token is an unredirected header: urllib never copies it; add it back only where
        # the same host answers again over https.
        token = req.unredirected_hdrs.get("Authorization")
        same = (
            urllib.parse.urlsplit(newurl).hostname == urllib.parse.urlsplit(req.full_url).hostname
        )
        if token and same and newurl.startswith("https://"):
            new.add_unredirected_header("Authorization", token)
        return new


class Fetcher:
    """Downloads into the agent's upload part files, one thread per file.

    Args:
        job_dir: The job folder (for the free-space check).
        env: The agent's environment (the HF token).
        part: The part file of an upload name.
        commit: The agent's commit (verifies size and sha256, renames into place).
    """

    def __init__(
        self,
        job_dir: Path,
        env: dict[str, str],
        part: Callable[[str], Path],
        commit: Callable[[str, dict[str, Any]], dict[str, Any]],
    ) -> None:
        self._job_dir = job_dir
        self._env = env
        self._part = part
        self._commit = commit
        self._lock = threading.Lock()
        self._states: dict[str, dict[str, Any]] = {}

    def running(self) -> list[str]:
        """Names still being fetched."""
        with self._lock:
            return [n for n, s in self._states.items() if s["state"] == "running"]

    def state(self, name: str) -> dict[str, Any] | None:
        """`{"url", "state": running|done|failed, "bytes", "error"}`, or None if never asked."""
        with self._lock:
            found = self._states.get(name)
            return dict(found) if found else None

    def start(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Start fetching `body["url"]` into `name`, to be checked against `body["sha256"]`.

        Raises:
            ValueError: a URL the pod refuses or a sha256 that is not 64 hex digits.
            RuntimeError: the same name is already being fetched.
        """
        url, sha = body.get("url"), body.get("sha256")
        if not isinstance(url, str) or not isinstance(sha, str):
            raise ValueError('fetch needs {"url": "<https URL>", "sha256": "<64 hex digits>"}')
        url = url.split("#", 1)[0]
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        if not _SHA256.fullmatch(sha):
            raise ValueError(f"{name}: sha256 {sha!r} is not 64 hex digits (what sha256sum prints)")
        with self._lock:
            if self._states.get(name, {}).get("state") == "running":
                raise RuntimeError(f"{name} is already being fetched; wait for it")
            self._states[name] = {"url": url, "state": "running", "bytes": 0, "error": None}
        threading.Thread(
            target=self._run, args=(name, url, sha.lower()), name=f"fetch-{name}", daemon=True
        ).start()
        return {"name": name, "fetching": True}

    def _set(self, name: str, **changes: Any) -> None:
        with self._lock:
            self._states[name].update(changes)

    def _run(self, name: str, url: str, sha: str) -> None:
        part = self._part(name)
        try:
            size = self._download(name, url, part)
            digest = _sha256(part)
            if digest != sha:
                part.unlink(missing_ok=True)
                raise ValueError(
                    f"{url}: got {size} bytes with sha256 {digest}, but the config pins sha256 "
                    f"{sha}; the file changed or the pin is wrong: check it with sha256sum and "
                    "fix the #sha256= of dataset.path"
                )
            self._commit(name, {"sha256": sha, "size": size})
            self._set(name, state="done", bytes=size)
        except Exception as exc:  # every failure becomes the fetch's state: the app reads it
            self._set(name, state="failed", error=str(exc))

    def _download(self, name: str, url: str, part: Path) -> int:
        """The file at `url` in `part`: its size, as announced; retried from the start."""
        opener = urllib.request.build_opener(_Redirects)
        last = ""
        for attempt in range(ATTEMPTS):
            request = urllib.request.Request(url, headers={"User-Agent": "ftdesk-agent"})
            for key, value in auth_headers(url, self._env).items():
                request.add_unredirected_header(key, value)
            try:
                with opener.open(request, timeout=TIMEOUT_S) as response:
                    return self._save(name, url, response, part)
            except urllib.error.HTTPError as exc:
                if exc.code < 500:  # 404, 401, 403: asking again changes nothing
                    said = f"{url}: the server answered HTTP {exc.code} {exc.reason}"
                    raise ValueError(said) from None
                last = f"HTTP {exc.code} {exc.reason}"
            except (urllib.error.URLError, OSError, http.client.HTTPException, _Truncated) as exc:
                last = str(getattr(exc, "reason", exc))
            time.sleep(2.0 * (attempt + 1))
        part.unlink(missing_ok=True)
        raise ValueError(f"{url}: could not be downloaded after {ATTEMPTS} attempts: {last}")

    def _save(self, name: str, url: str, response: HTTPResponse, part: Path) -> int:
        announced = response.headers.get("Content-Length")
        expected = int(announced) if announced and announced.isdigit() else None
        free = shutil.disk_usage(self._job_dir).free
        if expected is not None and expected > free:
            raise ValueError(
                f"{url} is {expected} bytes but the pod has {free} bytes free; "
                "choose a bigger container disk or volume"
            )
        got = 0
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "wb") as handle:
            while chunk := response.read(CHUNK):
                handle.write(chunk)
                got += len(chunk)
                self._set(name, bytes=got)
        if expected is not None and got != expected:
            raise _Truncated(f"got {got} of the {expected} bytes announced")
        return got


class _Truncated(Exception):
    """The connection ended before the announced size (retried)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
