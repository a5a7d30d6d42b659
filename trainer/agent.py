"""The pod agent: `python -m trainer.agent`, the app's one door into a pod.

Standard library only: it starts before anything is installed (the bootstrap,
`desktop/providers/runpod/bootstrap.py`, carries it into the pod and starts it first, because
the trainer bundle itself arrives through it). Its watchdog (`trainer.agent_watchdog`) deletes
the pod when money or time runs out.

Environment: `FTDESK_JOB_ID` and `FTDESK_JOB_TOKEN` (required), `FTDESK_POD_WORKSPACE`
(default `/workspace`; the job folder is `<workspace>/<job id>`), `FTDESK_AGENT_PORT` (8000),
`FTDESK_AGENT_HOST` (0.0.0.0), the watchdog's `FTDESK_BUDGET_USD`, `FTDESK_COST_PER_HOUR`,
`FTDESK_POD_CREATED_AT`, `FTDESK_MAX_RUNTIME_S`, `FTDESK_KEEPALIVE_S` (1800), `FTDESK_LEASE_S`,
`FTDESK_CANCEL_GRACE_S` (120), `FTDESK_WATCHDOG_INTERVAL_S` (10), `FTDESK_CLOCK_SYNC_S` (600: how
often RunPod's clock is read again), and RunPod's `RUNPOD_POD_ID`,
`RUNPOD_API_KEY`, `FTDESK_RUNPOD_API_URL` (default `https://api.runpod.io/v2`).

Protocol, version 1. Every request carries `Authorization: Bearer <job token>` (compared in
constant time) or gets 401 with no detail. Bodies are JSON unless said; errors are
`{"error": "<sentence>"}` with 400 (bad input), 404, 409 (wrong moment) or 413.

- `GET /health`: `{"protocol", "agent_version", "job_id", "state", "trainer_pid",
  "trainer_alive", "exit_code", "last_seq", "heartbeat_age_s", "runtime", "watchdog"}`; state
  is `waiting`, `training`, `ended` or `recovery` (the container restarted after training
  began: training never starts twice).
- `GET /files/<name>`: `{"name", "offset", "committed"}`, where an interrupted upload resumes.
- `PUT /files/<name>?offset=N`: the body is the chunk at byte N (the current offset; 0 starts
  over); `{"offset"}`.
- `POST /files/<name>/commit` `{"sha256", "size"}`: verifies, renames atomically; a mismatch
  deletes the partial file. Uploads are refused (409) once training started.
- `POST /files/data/<name>/fetch` `{"url", "sha256"}`: the pod downloads the file itself
  (`trainer.agent_fetch`: https, size and sha256 checked, then committed as an upload);
  `GET /files/<name>` then also carries `"fetch": {"url", "state", "bytes", "error"}`, state
  `running`, `done` or `failed`. `/start` waits (409) while a fetch runs.
- `POST /start`: `python -m trainer run --job-dir <job>` (the bundle unpacked first), with the
  environment minus `RUNPOD_API_KEY` and the job token, stdout and stderr appended to
  `<job>/train.log`; `{"started", "pid"}`.
- `GET /events?since_seq=N`: `{"events", "last_seq", "more"}`, whole lines of `events.jsonl`
  after seq N, at most 1 MB.
- `GET /log?offset=N`: at most 256 KB of `train.log` from N (octet-stream); headers
  `X-Next-Offset`, `X-Log-Size`.
- `GET /artifacts`: `{"files": [{"path", "size", "sha256"}], "pending"}` for `output/` and
  `checkpoints/`; sha256 is null while a thread hashes it.
- `GET /artifacts/<path>?offset=N&length=M`: the bytes (at most 8 MB); header `X-File-Size`.
- `POST /cancel`: SIGTERM to the trainer's process group (it checkpoints); `{"cancelled"}`.
- `POST /heartbeat`: renews the app's lease; `{"ok", "lease_s"}`.
- `POST /artifacts/confirm`: the app has the artifacts; the watchdog deletes the pod at once
  (409 before training ended).

Upload names: `config.json`, `trainer-bundle.tar.gz` and `data/<file>` (letters, digits,
`.`, `_`, `-`); anything else (`..`, absolute paths, symlinks out of the job folder) is 400.
No request blocks: hashing big artifacts runs in a thread, every answer is bounded.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from trainer.agent_fetch import Fetcher
from trainer.agent_files import (
    artifact_files,
    inside,
    last_event_seq,
    read_events,
    sha256_file,
    unpack,
)
from trainer.agent_watchdog import (
    DEFAULT_API_URL,
    Clock,
    PodApi,
    SystemClock,
    Watchdog,
    limits_from_env,
    number_from_env,
)

__all__ = ["AGENT_VERSION", "PROTOCOL_VERSION", "Agent", "AgentError", "main", "serve"]

AGENT_VERSION = "1.0"
PROTOCOL_VERSION = 1
BUNDLE = "trainer-bundle.tar.gz"
TRAINING_STARTED = ".training-started"
RUNTIME_FILE = ".runtime.json"
HIDDEN_FROM_TRAINER = ("RUNPOD_API_KEY", "FTDESK_RUNPOD_API_KEY", "FTDESK_JOB_TOKEN")
MAX_CHUNK = 16 * 1024 * 1024
MAX_EVENTS_BYTES = 1024 * 1024
MAX_LOG_BYTES = 256 * 1024
MAX_DOWNLOAD = 8 * 1024 * 1024
_DATA_NAME = re.compile(r"data/[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A local model folder's files (the app uploads them when the config names a local folder).
_MODEL_NAME = re.compile(r"model(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){1,8}")


class AgentError(Exception):
    """A request the agent refuses: HTTP status and one sentence saying what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Agent:
    """The job's state inside the pod: uploads, the trainer process, heartbeats, artifacts."""

    def __init__(
        self,
        job_dir: Path,
        env: dict[str, str],
        clock: Clock | None = None,
        *,
        recovery: bool = False,
    ):
        self.job_dir = job_dir
        self.env = env
        self.clock = clock or SystemClock()
        self.recovery = recovery
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._ended_at: float | None = None
        self._confirmed = False
        self._heartbeat = self.clock.now()
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._hashing: set[str] = set()
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / ".uploads").mkdir(exist_ok=True)
        self.fetcher = Fetcher(job_dir, env, self._part, self.commit)
        if recovery or (job_dir / "status.json").exists():
            # Whatever ran here before this container ended; the keep-alive counts from now.
            self._ended_at = self.clock.now()

    # --- the watchdog's view -------------------------------------------------------------
    def training_running(self) -> bool:
        """The trainer process is alive."""
        process = self._process
        return process is not None and process.poll() is None

    def ended_at(self) -> float | None:
        """Local time the trainer was seen to end."""
        return self._ended_at

    def artifacts_confirmed(self) -> bool:
        """The app confirmed it pulled the artifacts."""
        return self._confirmed

    def last_heartbeat(self) -> float:
        """Local time of the last heartbeat."""
        return self._heartbeat

    def cancel_training(self) -> bool:
        """SIGTERM to the trainer's process group; False when nothing runs."""
        process = self._process
        if process is None or process.poll() is not None:
            return False
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    # --- uploads -------------------------------------------------------------------------
    def upload_path(self, name: str) -> Path:
        """The target of an upload name, or AgentError 400 naming the name and the rule."""
        allowed = name in ("config.json", BUNDLE) or any(
            rule.fullmatch(name) is not None for rule in (_DATA_NAME, _MODEL_NAME)
        )
        if not allowed or ".." in name.split("/"):
            raise AgentError(
                400,
                f"file name {name!r} is not allowed: upload config.json, {BUNDLE}, "
                "data/<name> or model/<path> (letters, digits, '.', '_', '-')",
            )
        target = self.job_dir / name
        if target.is_symlink() or not inside(self.job_dir, target.parent):
            raise AgentError(400, f"file name {name!r} leads out of the job folder")
        return target

    def _refuse_after_start(self) -> None:
        # A running (or finished) training read these files: changing them would make the
        # job's record lie about what it trained on.
        if self.recovery or (self.job_dir / TRAINING_STARTED).exists():
            raise AgentError(409, "training started: its files are fixed; upload to a new job")

    def _part(self, name: str) -> Path:
        return self.job_dir / ".uploads" / (name.replace("/", "__") + ".part")

    def upload_state(self, name: str) -> dict[str, Any]:
        """Where the upload of `name` stands."""
        target = self.upload_path(name)
        part = self._part(name)
        # Unlocked, so a poll never waits on a commit's hashing: the part may be renamed into
        # place (or removed) by a commit at any moment, so its size is read once, not after
        # an exists() that a commit can make stale.
        state = {"name": name, "offset": _size(part), "committed": target.is_file()}
        fetch = self.fetcher.state(name)
        return state if fetch is None else {**state, "fetch": fetch}

    def fetch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Have the pod download `data/<name>` itself (see `trainer.agent_fetch`)."""
        if not name.startswith("data/"):
            raise AgentError(400, f"only data/<name> can be fetched, not {name!r}")
        self.upload_path(name)
        with self._lock:
            self._refuse_after_start()
        try:
            return self.fetcher.start(name, body)
        except ValueError as exc:
            raise AgentError(400, str(exc)) from None
        except RuntimeError as exc:
            raise AgentError(409, str(exc)) from None

    def upload_chunk(self, name: str, offset: int, data: bytes) -> dict[str, Any]:
        """Append a chunk at `offset` (the current size; 0 starts over)."""
        self.upload_path(name)
        part = self._part(name)
        with self._lock:
            self._refuse_after_start()
            current = _size(part)
            if offset not in (current, 0):
                raise AgentError(
                    409,
                    f"{name}: offset {offset} is not where the upload stands "
                    f"({current}); resume from {current}",
                )
            with open(part, "r+b" if part.exists() else "wb") as handle:
                handle.truncate(offset)
                handle.seek(offset)
                handle.write(data)
            return {"offset": offset + len(data)}

    def commit(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Verify the partial file's size and sha256, then rename it into place."""
        target = self.upload_path(name)
        sha, size = body.get("sha256"), body.get("size")
        if not isinstance(sha, str) or not isinstance(size, int) or isinstance(size, bool):
            raise AgentError(400, 'commit needs {"sha256": "<hex>", "size": <bytes>}')
        part = self._part(name)
        with self._lock:
            self._refuse_after_start()
            if not part.exists():
                raise AgentError(409, f"{name}: nothing uploaded; PUT the chunks first")
            actual_size, actual = part.stat().st_size, sha256_file(part)
            if actual_size != size or not hmac.compare_digest(actual, sha.lower()):
                part.unlink()
                raise AgentError(
                    400,
                    f"{name}: got {actual_size} bytes with sha256 {actual}, "
                    f"expected {size} bytes with sha256 {sha}; upload it again",
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
        return {"name": name, "size": size, "sha256": actual}

    # --- the trainer ---------------------------------------------------------------------
    def runtime(self) -> dict[str, Any]:
        """What the bootstrap wrote about the trainer's Python (`ready` when none did)."""
        try:
            data = json.loads((self.job_dir / RUNTIME_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"state": "ready", "python": self.env.get("FTDESK_TRAINER_PYTHON")}
        return data if isinstance(data, dict) else {"state": "ready"}

    def state(self) -> str:
        """`recovery`, `training`, `ended` or `waiting`."""
        if self.recovery:
            return "recovery"
        if self.training_running():
            return "training"
        return "ended" if self._ended_at is not None else "waiting"

    def start(self) -> dict[str, Any]:
        """Start the trainer once; never twice, not even after a container restart."""
        with self._lock:
            if self.recovery or (self.job_dir / TRAINING_STARTED).exists():
                raise AgentError(
                    409,
                    "training already started in this job; it never starts "
                    "twice: read the log and artifacts, then resume as a new run",
                )
            if self.fetcher.running():
                raise AgentError(409, f"still fetching {', '.join(self.fetcher.running())}")
            if not (self.job_dir / "config.json").is_file():
                raise AgentError(409, "config.json is not uploaded yet; upload and commit it")
            runtime = self.runtime()
            if runtime.get("state") != "ready":
                raise AgentError(
                    409,
                    f"the trainer's requirements are {runtime.get('state')}: "
                    f"{runtime.get('error', 'try again shortly')}",
                )
            env = {k: v for k, v in self.env.items() if k not in HIDDEN_FROM_TRAINER}
            # The boot copy holds only the agent: the trainer comes from the bundle (or the
            # image), so the boot folder leaves the trainer's import path.
            boot = env.pop("FTDESK_BOOT_DIR", None)
            real_boot = os.path.realpath(boot) if boot else None
            paths = [
                p
                for p in env.get("PYTHONPATH", "").split(os.pathsep)
                if p and os.path.realpath(p) != real_boot
            ]
            if (self.job_dir / BUNDLE).is_file():
                try:
                    unpack(self.job_dir / BUNDLE, self.job_dir / "code")
                except (ValueError, OSError, tarfile.TarError) as exc:
                    raise AgentError(400, str(exc)) from None
                paths.insert(0, str(self.job_dir / "code"))
            env["PYTHONPATH"] = os.pathsep.join(paths)
            python = runtime.get("python") or sys.executable
            (self.job_dir / TRAINING_STARTED).write_text(f"{self.clock.now()}\n")
            with open(self.job_dir / "train.log", "ab") as log:
                self._process = subprocess.Popen(
                    [python, "-m", "trainer", "run", "--job-dir", str(self.job_dir)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.job_dir,
                    start_new_session=True,
                )
            threading.Thread(target=self._reap, name="trainer-reaper", daemon=True).start()
            return {"started": True, "pid": self._process.pid}

    def _reap(self) -> None:
        process = self._process
        if process is not None:
            process.wait()
            self._ended_at = self.clock.now()

    # --- reading back --------------------------------------------------------------------
    def events(self, since_seq: int) -> dict[str, Any]:
        """Whole `events.jsonl` lines after `since_seq`, at most MAX_EVENTS_BYTES."""
        return read_events(self.job_dir / "events.jsonl", since_seq, MAX_EVENTS_BYTES)

    def last_seq(self) -> int | None:
        """The seq of the last whole event line."""
        return last_event_seq(self.job_dir / "events.jsonl")

    def log(self, offset: int) -> tuple[bytes, int]:
        """`train.log` bytes from `offset` (at most MAX_LOG_BYTES) and its size."""
        try:
            handle = open(self.job_dir / "train.log", "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return b"", 0
        with handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(min(offset, size))
            return handle.read(MAX_LOG_BYTES), size

    def artifacts(self) -> dict[str, Any]:
        """Files of `output/` and `checkpoints/` with size and sha256 (null while hashing)."""
        files, todo = [], []
        for path in artifact_files(self.job_dir):
            try:
                stat = path.stat()
            except FileNotFoundError:  # a checkpoint rotated away (save_total_limit) meanwhile
                continue
            rel = path.relative_to(self.job_dir).as_posix()
            digest = self._hashes.get((rel, stat.st_size, stat.st_mtime_ns))
            if digest is None:
                todo.append((rel, path))
            files.append({"path": rel, "size": stat.st_size, "sha256": digest})
        if todo:
            threading.Thread(target=self._hash, args=(todo,), daemon=True).start()
        return {"files": files, "pending": len(todo)}

    def _hash(self, todo: list[tuple[str, Path]]) -> None:
        for rel, path in todo:
            with self._lock:
                if rel in self._hashing:
                    continue
                self._hashing.add(rel)
            try:
                stat = path.stat()
                self._hashes[(rel, stat.st_size, stat.st_mtime_ns)] = sha256_file(path)
            except OSError:
                pass
            finally:
                with self._lock:
                    self._hashing.discard(rel)

    def artifact_chunk(self, rel: str, offset: int, length: int) -> tuple[bytes, int]:
        """Bytes of one artifact; AgentError for a path outside output/ and checkpoints/."""
        parts = rel.split("/")
        path = self.job_dir / rel
        # Resolved, the path must be exactly where it says: no component may be a symlink.
        if (
            parts[0] not in ("output", "checkpoints")
            or ".." in parts
            or rel.startswith("/")
            or path.resolve() != self.job_dir.resolve() / rel
        ):
            raise AgentError(400, f"artifact path {rel!r} is not inside output/ or checkpoints/")
        if path.is_symlink() or not path.is_file():
            raise AgentError(404, f"no artifact {rel!r}")
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(min(offset, size))
            return handle.read(max(0, min(length, MAX_DOWNLOAD))), size

    def heartbeat(self) -> None:
        """Renew the app's lease."""
        self._heartbeat = self.clock.now()

    def confirm(self) -> None:
        """The app has the artifacts (only once training ended)."""
        if self.training_running() or self._ended_at is None:
            raise AgentError(409, "training has not ended; confirm the artifacts after it ends")
        self._confirmed = True


class _Handler(BaseHTTPRequestHandler):
    server_version = f"ftdesk-agent/{AGENT_VERSION}"
    agent: Agent
    watchdog: Watchdog
    token: str

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: polling every few seconds would drown the job's log."""

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", headers or {})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_CHUNK:
            raise AgentError(413, f"a request body is at most {MAX_CHUNK} bytes; send chunks")
        return self.rfile.read(length) if length else b""

    def _authorised(self) -> bool:
        sent = self.headers.get("Authorization", "")
        expected = f"Bearer {self.token}"
        return hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode())

    def _handle(self, method: str) -> None:
        if not self._authorised():
            self._body_discard()
            self._json(401, {"error": "unauthorized"}, {"WWW-Authenticate": "Bearer"})
            return
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            self._route(method, path, query)
        except AgentError as exc:
            self._json(exc.status, {"error": str(exc)})
        except (ValueError, OSError) as exc:
            self._json(400, {"error": f"{method} {path}: {exc}"})

    def _body_discard(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_CHUNK:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        agent = self.agent
        if method == "GET" and path == "/health":
            self._json(200, self._health())
        elif path.startswith("/files/") and path.endswith("/commit") and method == "POST":
            body = json.loads(self._body() or b"{}")
            self._json(200, agent.commit(path[len("/files/") : -len("/commit")], body))
        elif path.startswith("/files/") and path.endswith("/fetch") and method == "POST":
            body = json.loads(self._body() or b"{}")
            self._json(200, agent.fetch(path[len("/files/") : -len("/fetch")], body))
        elif path.startswith("/files/") and method == "GET":
            self._json(200, agent.upload_state(path[len("/files/") :]))
        elif path.startswith("/files/") and method == "PUT":
            name = path[len("/files/") :]
            agent.upload_path(name)
            self._json(200, agent.upload_chunk(name, int(query.get("offset", "0")), self._body()))
        elif method == "POST" and path == "/start":
            self._json(200, agent.start())
        elif method == "GET" and path == "/events":
            self._json(200, agent.events(int(query.get("since_seq", "-1"))))
        elif method == "GET" and path == "/log":
            data, size = agent.log(int(query.get("offset", "0")))
            nxt = min(int(query.get("offset", "0")), size) + len(data)
            headers = {"X-Next-Offset": str(nxt), "X-Log-Size": str(size)}
            self._send(200, data, "application/octet-stream", headers)
        elif method == "GET" and path == "/artifacts":
            self._json(200, agent.artifacts())
        elif method == "POST" and path == "/artifacts/confirm":
            agent.confirm()
            self.watchdog.wake()
            self._json(200, {"confirmed": True})
        elif method == "GET" and path.startswith("/artifacts/"):
            offset, length = int(query.get("offset", "0")), int(query.get("length", MAX_DOWNLOAD))
            data, size = agent.artifact_chunk(path[len("/artifacts/") :], offset, length)
            self._send(200, data, "application/octet-stream", {"X-File-Size": str(size)})
        elif method == "POST" and path == "/cancel":
            self._json(200, {"cancelled": agent.cancel_training()})
        elif method == "POST" and path == "/heartbeat":
            agent.heartbeat()
            self._json(200, {"ok": True, "lease_s": self.watchdog.limits.lease_s})
        else:
            raise AgentError(404, f"no endpoint {method} {path}; see trainer/agent.py")

    def _health(self) -> dict[str, Any]:
        agent, watchdog = self.agent, self.watchdog
        process = agent._process
        return {
            "protocol": PROTOCOL_VERSION,
            "agent_version": AGENT_VERSION,
            "job_id": agent.job_dir.name,
            "state": agent.state(),
            "trainer_pid": process.pid if process else None,
            "trainer_alive": agent.training_running(),
            "exit_code": process.poll() if process else None,
            "last_seq": agent.last_seq(),
            "heartbeat_age_s": round(agent.clock.now() - agent.last_heartbeat(), 3),
            "runtime": agent.runtime().get("state"),
            "watchdog": {
                "reason": watchdog.reason,
                "spent_usd": round(watchdog.spent_usd(), 4),
                "elapsed_s": round(watchdog.elapsed_s(), 1),
                "deleted": watchdog.deleted,
            },
        }

    def do_GET(self) -> None:
        """Dispatch a GET."""
        self._handle("GET")

    def do_PUT(self) -> None:
        """Dispatch a PUT."""
        self._handle("PUT")

    def do_POST(self) -> None:
        """Dispatch a POST."""
        self._handle("POST")

    def do_DELETE(self) -> None:
        """No DELETE endpoint: still 401 without the token, else 404."""
        self._handle("DELETE")


def serve(env: dict[str, str]) -> int:
    """Run the agent and its watchdog until interrupted; returns the exit code."""
    for name in ("FTDESK_JOB_ID", "FTDESK_JOB_TOKEN"):
        if not env.get(name):
            print(f"agent: {name} is not set; the bootstrap sets it", file=sys.stderr)
            return 2
    job_dir = Path(env.get("FTDESK_POD_WORKSPACE") or "/workspace") / env["FTDESK_JOB_ID"]
    agent = Agent(job_dir, env, recovery=env.get("FTDESK_AGENT_RECOVERY") == "1")
    api = None
    if env.get("RUNPOD_POD_ID") and env.get("RUNPOD_API_KEY"):
        base = env.get("FTDESK_RUNPOD_API_URL") or DEFAULT_API_URL
        api = PodApi(base, env["RUNPOD_POD_ID"], env["RUNPOD_API_KEY"])
    watchdog = Watchdog(limits_from_env(env), agent, job_dir, api)
    handler = type(
        "Handler",
        (_Handler,),
        {"agent": agent, "watchdog": watchdog, "token": env["FTDESK_JOB_TOKEN"]},
    )
    # Unset: 8000 (RunPod's exposed port); 0: any free port (a test's sandbox pod).
    port = int(number_from_env(env, "FTDESK_AGENT_PORT", 8000) or 0)
    server = ThreadingHTTPServer((env.get("FTDESK_AGENT_HOST") or "0.0.0.0", port), handler)
    server.daemon_threads = True
    stop = threading.Event()
    interval = number_from_env(env, "FTDESK_WATCHDOG_INTERVAL_S", 10.0) or 10.0
    threading.Thread(target=watchdog.run, args=(stop, interval), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    bound = server.server_address[1]  # the real port when FTDESK_AGENT_PORT is 0
    print(
        f"agent {AGENT_VERSION}: job {job_dir.name} on port {bound} ({agent.state()})", flush=True
    )
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
    return 0


def main() -> int:
    """`python -m trainer.agent`: serve with this process's environment."""
    return serve(dict(os.environ))


def _size(path: Path) -> int:
    """The size of `path`, 0 when it is not there (read once: no exists() to go stale)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
