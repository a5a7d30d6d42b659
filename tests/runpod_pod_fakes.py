"""Edges for the pod-side tests (`tests/test_runpod_agent.py`, `tests/test_runpod_bootstrap.py`).

`FakeRunPodApi` is a tiny local HTTP server standing in for RunPod's REST API: it records every
request with its `Authorization`, answers `GET /pods/{id}` with the pod's `createdAt` and cost,
`DELETE /pods/{id}` with 204 then 404, and stamps every answer with a `Date` that can be far from
the local clock. `AgentProcess` runs the real agent (`python -m trainer.agent`) on a free port.
"""

from __future__ import annotations

import email.utils
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

POD_ID = "pod-abc123"
POD_KEY = "pod-scoped-key-0123456789"
JOB_TOKEN = "job-token-s3cret-value"
DEADLINE_S = 60.0


@dataclass
class Recorded:
    """One request the fake API received."""

    method: str
    path: str
    authorization: str


@dataclass
class FakeRunPodApi:
    """RunPod's API on loopback (see the module docstring)."""

    created_at: str = "2026-01-01T00:00:00Z"
    cost: float = 1.0
    server_time: float | None = None  # epoch seconds for the Date header; None: local clock
    fail_deletes: int = 0  # answer this many DELETEs with 500 first
    requests: list[Recorded] = field(default_factory=list)
    _deleted: bool = False

    def __post_init__(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def date_time_string(self, timestamp: float | None = None) -> str:
                """The `Date` header: RunPod's clock, which may be far from the local one."""
                stamp = api.server_time if api.server_time is not None else time.time()
                return email.utils.formatdate(stamp, usegmt=True)

            def _answer(self, status: int, body: Any = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                api.requests.append(Recorded("GET", self.path, self.headers["Authorization"]))
                if self.path == f"/v2/pods/{POD_ID}" and not api._deleted:
                    pod = {"id": POD_ID, "createdAt": api.created_at, "cost": api.cost}
                    self._answer(200, pod)
                else:
                    self._answer(404, {"title": "Not Found", "status": 404})

            def do_DELETE(self) -> None:
                api.requests.append(Recorded("DELETE", self.path, self.headers["Authorization"]))
                if api.fail_deletes > 0:
                    api.fail_deletes -= 1
                    self._answer(500, {"title": "Internal", "status": 500})
                elif self.path == f"/v2/pods/{POD_ID}" and not api._deleted:
                    api._deleted = True
                    self._answer(204)
                else:
                    self._answer(404, {"title": "Not Found", "status": 404})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The API base, as `FTDESK_RUNPOD_API_URL` takes it."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v2"

    def deletes(self) -> list[Recorded]:
        """The DELETE requests received so far."""
        return [r for r in self.requests if r.method == "DELETE"]

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def agent_env(
    workspace: Path, job_id: str, api: FakeRunPodApi | None, **extra: str
) -> dict[str, str]:
    """The environment a pod gives the agent, pointed at a sandbox workspace and the fake API."""
    env = dict(os.environ)
    env.update(
        FTDESK_POD_WORKSPACE=str(workspace),
        FTDESK_JOB_ID=job_id,
        FTDESK_JOB_TOKEN=JOB_TOKEN,
        FTDESK_AGENT_PORT="0",
        FTDESK_AGENT_HOST="127.0.0.1",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    if api is not None:
        env.update(RUNPOD_POD_ID=POD_ID, RUNPOD_API_KEY=POD_KEY, FTDESK_RUNPOD_API_URL=api.url)
    env.update(extra)
    return env


class AgentProcess:
    """The real agent as a child process; `request` talks to it with the job token."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.process = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.port = 0
        self.lines: list[str] = []
        for raw in self.process.stdout:  # the agent prints its port once it listens
            line = raw.decode(errors="replace")
            self.lines.append(line)
            if " on port " in line:
                self.port = int(line.split(" on port ")[1].split()[0])
                break
        assert self.port, "".join(self.lines)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace"))

    def request(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        token: str | None = JOB_TOKEN,
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request; returns (status, body, headers). `token=None` sends no Authorization."""
        import http.client

        data = json.dumps(body).encode() if isinstance(body, dict) else body
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        result = response.status, response.read(), dict(response.getheaders())
        connection.close()
        return result

    def json(self, method: str, path: str, body: Any = None) -> Any:
        """A request that must succeed; its JSON body."""
        status, data, _ = self.request(method, path, body)
        assert status == 200, (status, data)
        return json.loads(data)

    def stop(self) -> None:
        """End the agent's whole process group (the trainer it started has its own)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def start_agent(env: dict[str, str]) -> AgentProcess:
    """`python -m trainer.agent` with `env`."""
    return AgentProcess([sys.executable, "-m", "trainer.agent"], env)


def wait_until(condition: Any, what: str, deadline_s: float = DEADLINE_S) -> None:
    """Poll `condition()` until true, failing with `what` after a generous deadline."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def read_url(url: str) -> bytes:
    """GET a URL (used where the test is the client of a plain server)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        return bytes(exc.read())
