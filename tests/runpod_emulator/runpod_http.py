"""The emulator's HTTP side: a real loopback server, one thread per connection.

Each request is recorded, checked against the OpenAPI file (a mismatch is answered 422 and
recorded), authorised, put through the planned faults, then answered from `RunpodEmulator`'s
state; the pod log is streamed as server-sent events. `serve_emulator` runs it for a test.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from runpod_emulator.runpod_server import (
    HTML_502,
    Answer,
    Fault,
    RecordedRequest,
    RunpodEmulator,
    iso,
    problem,
)

_PROXIED_REQUEST = ("authorization", "content-type", "content-length")


class _Handler(BaseHTTPRequestHandler):
    """One HTTP exchange with the emulator (a thread per connection)."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test's own assertions say what went wrong."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header, from the virtual clock (what RunPod's clock says)."""
        return email.utils.format_datetime(self.server.emulator.clock.now(), usegmt=True)

    def do_GET(self) -> None:
        """Handle a GET."""
        self._handle("GET")

    def do_POST(self) -> None:
        """Handle a POST."""
        self._handle("POST")

    def do_DELETE(self) -> None:
        """Handle a DELETE."""
        self._handle("DELETE")

    def do_PUT(self) -> None:
        """Handle a PUT (only the pod proxy takes one: the agent's uploads)."""
        self._handle("PUT")

    def do_PATCH(self) -> None:
        """Handle a PATCH."""
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        try:
            self._exchange(method)
        except Exception as exc:
            # An emulator bug must fail the test, not look like a flaky network.
            self._record(f"emulator error on {method} {self.path}: {exc!r}")
            raise

    def _exchange(self, method: str) -> None:
        emulator = self.server.emulator
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query, keep_blank_values=True)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path.startswith("/proxy/"):
            return self._proxy(method, path, split.query, raw)
        if path.startswith("/web/"):
            return self._web_file(method, path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with emulator.lock:
            emulator.requests.append(
                RecordedRequest(method, path, query, body, self.headers.get("Last-Event-ID"))
            )
        op = emulator.contract.find(method, path)
        if op is None:
            self._record(f"{method} {path}: no such operation in the OpenAPI file")
            return self._send(problem(404, "Not Found", f"no route {method} {path}"))
        denied = emulator.authorised(self.headers.get("Authorization"), path)
        if denied is not None:
            return self._send(denied)
        problems = emulator.contract.request_errors(op, query, body, bool(raw))
        if problems:
            for item in problems:
                self._record(f"{op.operation_id} ({method} {path}): {item}")
            return self._send(problem(422, "Unprocessable Entity", "invalid request", problems))
        planned = emulator.next_fault(method, path)
        if planned is not None and planned.delay_s:
            emulator.closing.wait(planned.delay_s)
        if planned is not None and (planned.status or planned.hang):
            if planned.after:
                emulator.answer(method, path, body)
            if planned.hang:
                emulator.closing.wait()
                self.close_connection = True
                return None
            return self._send(self._fault_answer(planned, body))
        if op.operation_id == "getPodLogs":
            return self._stream_logs(path.split("/")[3], query)
        if op.operation_id == "listPodBilling":
            result = emulator.pod_billing(query)
        else:
            result = emulator.answer(method, path, body)
        if 200 <= result.status < 300 and result.body is not None:
            for item in emulator.contract.response_errors(op, result.status, result.body):
                self._record(f"emulator answer to {op.operation_id}: {item}")
        return self._send(result)

    def _proxy(self, method: str, path: str, query: str, raw: bytes) -> None:
        """RunPod's HTTP proxy: `/proxy/<pod id>/<port>/<rest>` reaches the pod's port (what
        `https://<pod id>-<port>.proxy.runpod.net/<rest>` does); not an API call, not recorded."""
        _, _, pod_id, port, *rest = path.split("/")
        with self.server.emulator.lock:
            pod = self.server.emulator.pods.get(pod_id)
            target = pod.proxy.get(int(port)) if pod is not None and port.isdigit() else None
        if target is None:
            return self._send(Answer(404, text="404 page not found", content_type="text/plain"))
        url = urlsplit(target)
        connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=90)
        headers = {k: v for k, v in self.headers.items() if k.lower() in _PROXIED_REQUEST}
        try:
            connection.request(
                method, "/" + "/".join(rest) + (f"?{query}" if query else ""), raw or None, headers
            )
            response = connection.getresponse()
            payload = response.read()
        except OSError:
            # What RunPod's proxy answers while the container's port does not listen yet.
            return self._send(Answer(502, text=HTML_502, content_type="text/html"))
        finally:
            connection.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("content-length", "connection", "date", "server"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        return None

    def _web_file(self, method: str, path: str) -> None:
        """A file on "the web" (`RunpodEmulator.web_files`), for datasets a pod fetches; not an
        API call: noted in `web_gets`, not checked against the OpenAPI file."""
        emulator = self.server.emulator
        with emulator.lock:
            data = emulator.web_files.get(path.removeprefix("/web/"))
            emulator.web_gets.append(path)
        if method != "GET" or data is None:
            return self._send(Answer(404, text="no such file\n", content_type="text/plain"))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, mismatch: str) -> None:
        with self.server.emulator.lock:
            self.server.emulator.mismatches.append(mismatch)

    def _fault_answer(self, planned: Fault, body: Any = None) -> Answer:
        status = planned.status or 500
        if planned.echo_body:
            env = body.get("env", {}) if isinstance(body, dict) else {}
            errors = [f"body $.env.{k}: {v!r} is not allowed" for k, v in env.items()]
            return problem(status, "Unprocessable Entity", f"rejected {json.dumps(body)}", errors)
        if planned.html:
            return Answer(status, text=HTML_502, content_type="text/html")
        headers = {}
        if planned.retry_after is not None:
            headers["Retry-After"] = str(planned.retry_after)
        titles = {429: "Too Many Requests", 500: "Internal Server Error", 503: "Unavailable"}
        answer = problem(status, titles.get(status, "Error"), f"emulated fault {status}")
        answer.headers.update(headers)
        return answer

    def _send(self, answer: Answer) -> None:
        if answer.text is not None:
            payload = answer.text.encode()
        elif answer.body is not None:
            payload = json.dumps(answer.body).encode()
        else:
            payload = b""
        self.send_response(answer.status)
        if payload:
            self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _stream_logs(self, pod_id: str, query: dict[str, list[str]]) -> None:
        """SSE frames of the pod's log; stays open until the client leaves or the pod goes."""
        emulator = self.server.emulator
        with emulator.lock:
            pod = emulator.pods.get(pod_id)
            drop_after = emulator.log_drops.pop(0) if emulator.log_drops else None
        if pod is None:
            return self._send(problem(404, "Not Found", "pod not found"))
        source = query.get("source", ["container"])[-1]
        resume = self.headers.get("Last-Event-ID")
        if resume:
            after = int(resume.rsplit("/", 1)[-1])
        else:
            tail = int(query.get("tail", ["100"])[-1])
            after = max(0, len(pod.logs) - tail)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        sent = 0
        while not emulator.closing.is_set():
            with emulator.lock:
                fresh = [e for e in pod.logs if e[0] > after and e[2] == source]
                gone = pod_id not in emulator.pods
            for seq, ts, src, line in fresh:
                data = json.dumps({"ts": iso(ts), "source": src, "line": line})
                frame = f"id: {iso(ts)}/{seq:012d}\ndata: {data}\n\n"
                try:
                    self.wfile.write(frame.encode())
                    self.wfile.flush()
                except OSError:
                    return None
                after, sent = seq, sent + 1
                if drop_after is not None and sent >= drop_after:
                    return None  # the connection drops right after this frame
            if gone or self._client_left():
                return None
            with emulator.lock:
                emulator.lock.wait(0.05)
        return None

    def _client_left(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: RunpodEmulator


@contextmanager
def serve_emulator(emulator: RunpodEmulator | None = None) -> Iterator[RunpodEmulator]:
    """Serve an emulator on 127.0.0.1 (a free port) for the duration; `emulator.url` is its base.

    On exit every hanging answer is released and the server stops.
    """
    emulator = emulator or RunpodEmulator()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.emulator = emulator
    host, port = server.server_address[:2]
    emulator.url = f"http://{host}:{port}/v2"
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="runpod-emulator",
        daemon=True,
    )
    thread.start()
    try:
        yield emulator
    finally:
        emulator.closing.set()
        with emulator.lock:
            emulator.lock.notify_all()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
