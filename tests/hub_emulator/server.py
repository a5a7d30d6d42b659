"""A loopback Hugging Face Hub: the endpoints `huggingface_hub` 2.x calls for a snapshot
download and for a repo create plus a folder upload, and nothing else.

Download (`snapshot_download`): `GET /api/models/{repo}/revision/{rev}` (the commit and the file
names), `GET /api/models/{repo}/tree/{commit}?recursive=true` (paths and sizes), then per file
`HEAD /{repo}/resolve/{commit}/{path}` (ETag, X-Repo-Commit, Content-Length) and `GET` of the
same URL, honouring `Range: bytes=N-` with a 206.

Upload (`create_repo`, `upload_folder` with `HF_HUB_DISABLE_XET=1`):
`POST /api/repos/create`, `POST /api/validate-yaml` (a README.md's metadata: accepted),
`POST /api/models/{repo}/preupload/{rev}` (every file is "regular":
no LFS, no Xet), `POST /api/models/{repo}/commit/{rev}` (NDJSON: a header, then base64 files),
which stores the files in the repo as a new commit.

Every request is recorded (`requests`) with its method, path and headers, so a test can prove
what was asked (a `Range` from the cut offset) and what was not (nothing at all offline).
Faults are planted per test: `gated` repos answer 403 with `X-Error-Code: GatedRepo` unless
the request carries an accepted token, `private` ones 401 without one, and `cut_once` makes
the first full download of a file send half of it and drop the connection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["HubEmulator", "HubRepo", "HubRequest"]

_REVISION = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/(.+))?$")
_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_PREUPLOAD = re.compile(r"^/api/models/([^/]+/[^/]+)/preupload/(.+)$")
_COMMIT = re.compile(r"^/api/models/([^/]+/[^/]+)/commit/(.+)$")


@dataclass(frozen=True)
class HubRequest:
    """One request the emulator received."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case


@dataclass
class HubRepo:
    """A model repo: its files at its one commit, and who may read it."""

    files: dict[str, bytes]
    commit: str
    gated: bool = False
    private: bool = False
    commits: int = 0

    @staticmethod
    def commit_of(files: dict[str, bytes]) -> str:
        digest = hashlib.sha1()
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha1(files[name]).digest())
        return digest.hexdigest()


@dataclass
class HubEmulator:
    """The loopback Hub. Use as a context manager; `url` is what `HF_ENDPOINT` takes.

    Attributes:
        tokens: the tokens it accepts (a gated or private repo needs one).
        cut_once: `{file path: bytes}`: the first GET of that file without a Range sends this
            many bytes of it, then closes the connection.
        stall: `{file path: (bytes, event)}`: a GET of that file sends this many bytes, then
            waits for the event (at most 60 s) before sending the rest: a transfer caught in
            the middle, as long as the test needs.
        hold_preupload: when set to an event, a preupload request waits for it (at most 60 s)
            before it is answered: an upload caught before its commit.
    """

    tokens: set[str] = field(default_factory=set)
    cut_once: dict[str, int] = field(default_factory=dict)
    stall: dict[str, tuple[int, threading.Event]] = field(default_factory=dict)
    hold_preupload: threading.Event | None = None
    repos: dict[str, HubRepo] = field(default_factory=dict)
    requests: list[HubRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def add_model(
        self, repo_id: str, folder: Path, *, gated: bool = False, private: bool = False
    ) -> HubRepo:
        """Serve every file under `folder` as the model repo `repo_id`."""
        files = {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        repo = HubRepo(files, HubRepo.commit_of(files), gated=gated, private=private)
        self.repos[repo_id] = repo
        return repo

    @property
    def url(self) -> str:
        assert self._server is not None, "start the emulator first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubEmulator:
        """Listen on a free loopback port, in a daemon thread."""
        emulator = self

        class Handler(_Handler):
            hub = emulator

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and wait for the server thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> HubEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, request: HubRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def seen(self, method: str | None = None, contains: str = "") -> list[HubRequest]:
        """The requests received so far, filtered by method and a path fragment."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and contains in r.path
            ]


class _Handler(BaseHTTPRequestHandler):
    hub: HubEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the test reads `requests`, not stderr

    # -- plumbing

    def _start(self) -> str:
        path = unquote(urlsplit(self.path).path)
        self.hub.record(
            HubRequest(self.command, path, {k.lower(): v for k, v in self.headers.items()})
        )
        return path

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: object, headers: dict[str, str] | None = None) -> None:
        self._send(
            status,
            json.dumps(data).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

    def _repo(self, repo_id: str) -> HubRepo | None:
        """The repo, or None after answering the error a real Hub gives."""
        repo = self.hub.repos.get(repo_id)
        allowed = self._token() in self.hub.tokens
        if repo is None or (repo.private and not allowed):
            status = 401 if self._token() is None else 404
            self._json(
                status,
                {"error": "Repository not found"},
                {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            )
            return None
        if repo.gated and not allowed:
            message = f"Access to model {repo_id} is restricted. You must accept the conditions."
            self._json(
                403,
                {"error": message},
                {"X-Error-Code": "GatedRepo", "X-Error-Message": message},
            )
            return None
        return repo

    # -- verbs

    def do_HEAD(self) -> None:
        path = self._start()
        match = _RESOLVE.match(path)
        if not match:
            self._send(404)
            return
        self._resolve(*match.groups())

    def do_GET(self) -> None:
        path = self._start()
        if match := _REVISION.match(path):
            repo_id = match.group(1)
            repo = self._repo(repo_id)
            if repo is not None:
                self._json(
                    200,
                    {
                        "id": repo_id,
                        "modelId": repo_id,
                        "sha": repo.commit,
                        "private": repo.private,
                        "gated": "manual" if repo.gated else False,
                        "siblings": [{"rfilename": name} for name in repo.files],
                        "tags": [],
                    },
                )
        elif match := _TREE.match(path):
            repo = self._repo(match.group(1))
            if repo is not None:
                entries = [
                    {
                        "type": "file",
                        "oid": hashlib.sha1(data).hexdigest(),
                        "size": len(data),
                        "path": name,
                    }
                    for name, data in repo.files.items()
                ]
                self._json(200, entries)
        elif match := _RESOLVE.match(path):
            self._resolve(*match.groups())
        else:
            self._json(404, {"error": f"not emulated: GET {path}"})

    def do_POST(self) -> None:
        path = self._start()
        body = self._body()
        if path == "/api/repos/create":
            self._create(json.loads(body))
        elif path == "/api/validate-yaml":  # a README's metadata, checked before a commit
            self._json(200, {"errors": [], "warnings": []})
        elif match := _PREUPLOAD.match(path):
            if self.hub.hold_preupload is not None:
                self.hub.hold_preupload.wait(60)
            if self._writable(match.group(1)):
                files = json.loads(body).get("files", [])
                self._json(
                    200,
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                            for f in files
                        ]
                    },
                )
        elif match := _COMMIT.match(path):
            repo_id = match.group(1)
            if self._writable(repo_id):
                self._commit(repo_id, body)
        else:
            self._json(404, {"error": f"not emulated: POST {path}"})

    # -- endpoints

    def _resolve(self, repo_id: str, revision: str, name: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        data = repo.files.get(name)
        if data is None or revision not in (repo.commit, "main"):
            self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            return
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        headers = {"ETag": etag, "X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
        if self.command == "HEAD":
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return
        start = 0
        if match := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
            start = int(match.group(1))
        if start >= len(data) > 0:
            self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            return
        cut = self.hub.cut_once.pop(name, None) if start == 0 else None
        if cut is not None:
            # Promise the whole file, send part of it, drop the connection: a network cut.
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if name in self.hub.stall and start == 0:
            pause, go_on = self.hub.stall[name]
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:pause])
            self.wfile.flush()
            go_on.wait(60)
            self.wfile.write(data[pause:])
            return
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._send(206, data[start:], headers)
        else:
            self._send(200, data, headers)

    def _writable(self, repo_id: str) -> bool:
        if self._token() not in self.hub.tokens:
            self._json(401, {"error": "Invalid credentials in Authorization header"})
            return False
        if repo_id not in self.hub.repos:
            self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return False
        return True

    def _create(self, payload: dict[str, Any]) -> None:
        if self._token() not in self.hub.tokens:
            self._json(401, {"error": "Invalid credentials in Authorization header"})
            return
        org = payload.get("organization")
        repo_id = f"{org}/{payload['name']}" if org else str(payload["name"])
        url = f"http://{self.headers.get('Host')}/{repo_id}"
        if repo_id in self.hub.repos:
            self._json(409, {"error": "You already created this model repo", "url": url})
            return
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self.hub.repos[repo_id] = HubRepo({}, HubRepo.commit_of({}), private=private)
        self._json(200, {"url": url, "name": repo_id})

    def _commit(self, repo_id: str, body: bytes) -> None:
        repo = self.hub.repos[repo_id]
        files = dict(repo.files)
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "file":
                value = item["value"]
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] != "header":
                self._json(400, {"error": f"not emulated: commit item {item['key']}"})
                return
        repo.files = files
        repo.commit = HubRepo.commit_of(files)
        repo.commits += 1
        host = self.headers.get("Host")
        self._json(
            200,
            {
                "commitUrl": f"http://{host}/{repo_id}/commit/{repo.commit}",
                "commitOid": repo.commit,
                "pullRequestUrl": None,
            },
        )
