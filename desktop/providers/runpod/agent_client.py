"""The app's side of the pod agent's protocol, version 1 (see `trainer/agent.py`'s docstring).

Every request carries the job's bearer token. Uploads go in chunks and are committed with their
sha256 (the agent verifies and renames); downloads go in chunks and are verified against the
sha256 the agent computed before they replace anything in the job folder. Every failure is a
`ProviderError` naming the call and what the agent said.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from desktop.core.errors import ProviderError

__all__ = ["AgentClient", "AgentLog", "RemoteFile"]

UPLOAD_CHUNK = 8 * 1024 * 1024
DOWNLOAD_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class AgentLog:
    """A piece of the pod's `train.log`: the bytes, where the next read starts, the file size."""

    data: bytes
    next_offset: int
    size: int


@dataclass(frozen=True)
class RemoteFile:
    """One artifact on the pod: path inside the job folder, size, sha256 (None while hashed)."""

    path: str
    size: int
    sha256: str | None


class AgentClient:
    """The pod agent at `base_url` (the pod's proxy URL for the agent's port).

    Args:
        client: The HTTP client (the caller closes it).
        base_url: e.g. `https://<pod>-8000.proxy.runpod.net`.
        token: The job's bearer token.
    """

    def __init__(self, client: httpx.AsyncClient, base_url: str, token: str) -> None:
        self._client = client
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}

    def __repr__(self) -> str:
        return f"AgentClient(base_url={self.base_url!r})"

    async def _request(
        self,
        method: str,
        path: str,
        call: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        try:
            response = await self._client.request(
                method,
                f"{self.base_url}{path}",
                params=params,
                json=json,
                content=content,
                headers=self._headers,
            )
        except httpx.HTTPError as exc:
            raise ProviderError(f"the pod's agent did not answer {call}: {exc!r}") from exc
        if response.status_code >= 400:
            try:
                said = str(response.json().get("error", ""))
            except ValueError:
                said = response.text[:120]
            raise ProviderError(
                f"the pod's agent refused {call} (HTTP {response.status_code}): {said}"
            )
        return response

    async def _json(self, method: str, path: str, call: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._request(method, path, call, **kwargs)
        try:
            data = response.json()
        except ValueError as exc:
            raise ProviderError(f"the pod's agent answered {call} with no JSON") from exc
        if not isinstance(data, dict):
            raise ProviderError(f"the pod's agent answered {call} with {type(data).__name__}")
        return data

    async def health(self) -> dict[str, Any]:
        """`GET /health`: state, trainer liveness, exit code, last seq."""
        return await self._json("GET", "/health", "health")

    async def upload(self, name: str, data: bytes) -> None:
        """Upload `data` as `name` in chunks, then commit it with its sha256 (verified there)."""
        offset = 0
        while True:
            chunk = data[offset : offset + UPLOAD_CHUNK]
            answer = await self._json(
                "PUT", f"/files/{name}", f"upload {name}", params={"offset": offset}, content=chunk
            )
            offset = int(answer["offset"])
            if offset >= len(data):
                break
        await self._json(
            "POST",
            f"/files/{name}/commit",
            f"commit {name}",
            json={"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
        )

    async def fetch(self, name: str, url: str, sha256: str) -> None:
        """`POST /files/<name>/fetch`: the pod downloads `url` itself, checked against `sha256`."""
        body = {"url": url, "sha256": sha256}
        await self._json("POST", f"/files/{name}/fetch", f"fetch {name}", json=body)

    async def file_state(self, name: str) -> dict[str, Any]:
        """`GET /files/<name>`: committed or not, and how its fetch stands (None: no fetch)."""
        return await self._json("GET", f"/files/{name}", f"the state of {name}")

    async def upload_file(self, name: str, path: Path) -> None:
        """Upload a local file as `name` in chunks read one at a time (a model's weights may
        not fit in memory twice), then commit it with its sha256 (verified there)."""
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as handle:
            while True:
                chunk = await asyncio.to_thread(handle.read, UPLOAD_CHUNK)
                if not chunk and size > 0:
                    break
                answer = await self._json(
                    "PUT", f"/files/{name}", f"upload {name}", params={"offset": size},
                    content=chunk,
                )  # fmt: skip
                digest.update(chunk)
                size = int(answer["offset"])
                if not chunk:
                    break  # an empty file: one empty chunk made it exist
        await self._json(
            "POST", f"/files/{name}/commit", f"commit {name}",
            json={"sha256": digest.hexdigest(), "size": size},
        )  # fmt: skip

    async def start(self) -> dict[str, Any]:
        """`POST /start`: the trainer starts (never twice)."""
        return await self._json("POST", "/start", "start")

    async def events(self, since_seq: int) -> dict[str, Any]:
        """`GET /events?since_seq=N`: whole events after `since_seq`, with `more`."""
        return await self._json("GET", "/events", "events", params={"since_seq": since_seq})

    async def log(self, offset: int) -> AgentLog:
        """`GET /log?offset=N`: the next piece of the pod's `train.log`."""
        response = await self._request("GET", "/log", "log", params={"offset": offset})
        data = response.content
        next_offset = int(response.headers.get("X-Next-Offset", offset + len(data)))
        return AgentLog(data, next_offset, int(response.headers.get("X-Log-Size", next_offset)))

    async def artifacts(self) -> tuple[list[RemoteFile], int]:
        """`GET /artifacts`: the files of `output/` and `checkpoints/`, and how many are still
        being hashed."""
        data = await self._json("GET", "/artifacts", "artifacts")
        files = [RemoteFile(f["path"], int(f["size"]), f.get("sha256")) for f in data["files"]]
        return files, int(data.get("pending", 0))

    async def download(self, remote: RemoteFile, dest: Path) -> None:
        """Download `remote` to `dest`, verified against its sha256 before it replaces `dest`.

        Raises:
            ProviderError: the bytes or their sha256 differ from what the agent listed.
        """
        part = dest.with_name(dest.name + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        offset = 0
        with open(part, "wb") as handle:
            while offset < remote.size:
                response = await self._request(
                    "GET",
                    f"/artifacts/{remote.path}",
                    f"download {remote.path}",
                    params={"offset": offset, "length": DOWNLOAD_CHUNK},
                )
                if not response.content:
                    break
                handle.write(response.content)
                digest.update(response.content)
                offset += len(response.content)
        if offset != remote.size or digest.hexdigest() != remote.sha256:
            part.unlink(missing_ok=True)
            raise ProviderError(
                f"{remote.path}: got {offset} bytes with sha256 {digest.hexdigest()}, the pod "
                f"listed {remote.size} bytes with sha256 {remote.sha256}; download it again"
            )
        os.replace(part, dest)

    async def cancel(self) -> None:
        """`POST /cancel`: SIGTERM to the trainer (it checkpoints)."""
        await self._json("POST", "/cancel", "cancel")

    async def heartbeat(self) -> None:
        """`POST /heartbeat`: the app is still watching (renews the watchdog's lease)."""
        await self._json("POST", "/heartbeat", "heartbeat")

    async def confirm(self) -> None:
        """`POST /artifacts/confirm`: the app has the artifacts; the pod may go."""
        await self._json("POST", "/artifacts/confirm", "confirm the artifacts")
