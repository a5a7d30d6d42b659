"""A loopback emulator of RunPod's REST v2 (pods, logs, GPU catalog, pod billing, auth).

`runpod_http.serve_emulator` serves it on 127.0.0.1 on a free port in a thread, so the client
talks real HTTP. Time is a
`VirtualClock` the test advances: a pod is PROVISIONING, then STARTING, then RUNNING as the clock
passes its delays, and the `Date` header reads the same clock. Every request's query and body are
validated against RunPod's official OpenAPI file; a mismatch is answered 422 as RunPod does and
recorded in `mismatches`, which the test fixture checks at teardown. The emulator's own JSON
answers are validated too, so it cannot drift from the file unnoticed.

Faults are knobs on the emulator (`fault`, `no_capacity`, `low_balance`, `provisioning_s`,
`drop_logs_after`, `restart_container`, `stop_container`, `billing_forbidden`). A pod runner
(`runpod_pods`, which starts a local process as the pod's container) plugs in through
`PodRunner`: it is called on create with the pod and the container's env (including
`RUNPOD_POD_ID` and a pod-scoped `RUNPOD_API_KEY`), on a restart, and on terminate; it may
publish its agent's local URL in `EmulatedPod.proxy`. `GET /v2/billing/pods` bills each pod,
deleted ones too, its price times its time alive on the virtual clock.
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from runpod_emulator.runpod_openapi import OpenApiContract

NO_CAPACITY_DETAIL = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)
HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_CONTRACT: OpenApiContract | None = None


def contract() -> OpenApiContract:
    """The OpenAPI file, loaded once per test process."""
    global _CONTRACT
    if _CONTRACT is None:
        _CONTRACT = OpenApiContract()
    return _CONTRACT


class VirtualClock:
    """RunPod's clock, as far as the emulator is concerned: it moves only when told to, and
    with `speed` > 0 also by itself, `speed` virtual seconds per real second (1: real speed,
    as `bench/pod_overhead.py` runs it)."""

    def __init__(self, start: datetime | None = None, speed: float = 0.0) -> None:
        self._now = start or datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
        self._speed = speed
        self._since = time.monotonic()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The current virtual time (aware, UTC)."""
        with self._lock:
            if self._speed:
                moment = time.monotonic()
                self._now += timedelta(seconds=(moment - self._since) * self._speed)
                self._since = moment
            return self._now

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward and return the new time."""
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now


@dataclass
class EmulatedPod:
    """One pod the emulator holds; its status follows from the virtual clock."""

    id: str
    name: str
    body: dict[str, Any]
    created_at: datetime
    price_per_gpu_hour: float
    pod_key: str
    provisioning_s: float
    starting_s: float
    container_started_at: datetime | None = None
    restarts: int = 0
    stopped: bool = False
    logs: list[tuple[int, datetime, str, str]] = field(default_factory=list)
    proxy: dict[int, str] = field(default_factory=dict)

    @property
    def gpu_id(self) -> str:
        """The GPU type it was created with."""
        return str(self.body.get("gpu", {}).get("id", ""))

    @property
    def gpu_count(self) -> int:
        """How many GPUs it has."""
        return int(self.body.get("gpu", {}).get("count", 1))

    def running_since(self) -> datetime | None:
        """When the container first starts (creation + provisioning + starting); None if never."""
        delay = self.provisioning_s + self.starting_s
        return None if math.isinf(delay) else self.created_at + timedelta(seconds=delay)

    def status(self, now: datetime) -> str:
        """PROVISIONING, STARTING, RUNNING or EXITED at `now`."""
        if self.stopped:
            return "EXITED"
        age = (now - self.created_at).total_seconds()
        if age < self.provisioning_s:
            return "PROVISIONING"
        if age < self.provisioning_s + self.starting_s:
            return "STARTING"
        return "RUNNING"


class PodRunner(Protocol):
    """The seam for a runner that plays the pod's container (`runpod_pods.LocalPodRunner`)."""

    def on_create(self, pod: EmulatedPod, env: dict[str, str]) -> None:
        """The pod was created; `env` is what its container would see."""

    def on_terminate(self, pod: EmulatedPod) -> None:
        """The pod was deleted or terminated; stop its container."""

    # Optional: `attach(emulator)` (told the emulator it serves, for the pod's log stream) and
    # `on_restart(pod, start)` (the container exited: stop it, and with `start` run it again).


@dataclass
class Fault:
    """A planned misbehaviour for requests matching `method` and `path` (a regex).

    Attributes:
        status: Answer this HTTP status instead (with a problem body, or `html`).
        retry_after: The `Retry-After` of a 429: seconds, or an HTTP date.
        html: Answer an HTML page (a proxy's 502) instead of problem+json.
        after: Do the operation first, then misbehave (create-succeeds-then-500).
        hang: Answer nothing until the emulator stops (the client's timeout must end it).
        delay_s: Wait this long (real seconds) before answering normally: a slow answer.
        echo_body: With `status`, a problem body that quotes the request's body back (in its
            detail, and one error per env value), as a validator that echoes what it rejects.
        times: How many matching requests it affects.
        seen: How many it affected so far.
    """

    method: str
    path: str
    status: int | None = None
    retry_after: int | str | None = None
    html: bool = False
    after: bool = False
    hang: bool = False
    delay_s: float = 0.0
    echo_body: bool = False
    times: int = 1
    seen: int = 0


@dataclass(frozen=True)
class RecordedRequest:
    """One request the emulator received (the `Authorization` header is left out).

    Attributes:
        method: The HTTP method.
        path: The path, e.g. `/v2/pods`.
        query: The query parameters, each with its values.
        body: The JSON body (or its text when not JSON), None when there was none.
        last_event_id: The `Last-Event-ID` header of a log stream's reconnect.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    last_event_id: str | None


@dataclass
class Answer:
    """An HTTP answer: status, JSON body (or raw text), extra headers."""

    status: int
    body: Any = None
    text: str | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def problem(status: int, title: str, detail: str, errors: list[str] | None = None) -> Answer:
    """An `application/problem+json` answer as RunPod sends it."""
    body: dict[str, Any] = {"title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return Answer(status, body, content_type="application/problem+json")


DEFAULT_GPUS: list[dict[str, Any]] = [
    {"id": "NVIDIA GeForce RTX 4090", "name": "RTX 4090", "memory": 24, "secure": 0.69,
     "community": 0.34, "availability": "HIGH"},
    {"id": "NVIDIA A100 80GB PCIe", "name": "A100 PCIe", "memory": 80, "secure": 1.64,
     "community": 1.19, "availability": "LOW"},
    {"id": "NVIDIA H100 80GB HBM3", "name": "H100 SXM", "memory": 80, "secure": 2.99,
     "community": 2.69, "availability": "NONE"},
]  # fmt: skip


class RunpodEmulator:
    """The emulated API and its state; serve it with `runpod_http.serve_emulator()`.

    Args:
        api_key: The account key it accepts (pods also accept their own pod-scoped key).
        clock: The virtual clock (a new one by default).
        runner: What plays a pod's container, if anything.
    """

    def __init__(
        self,
        api_key: str = "rp-test-account-key",
        clock: VirtualClock | None = None,
        runner: PodRunner | None = None,
    ) -> None:
        self.api_key = api_key
        self.clock = clock or VirtualClock()
        self.runner = runner
        attach = getattr(runner, "attach", None)
        if attach is not None:
            attach(self)  # the container's output becomes the pod's log stream
        self.contract = contract()
        self.pods: dict[str, EmulatedPod] = {}
        self.gpus = [dict(g) for g in DEFAULT_GPUS]
        self.requests: list[RecordedRequest] = []
        self.mismatches: list[str] = []
        self.faults: list[Fault] = []
        self.full_gpus: set[str] = set()
        self.low_balance = False
        # RunPod's catalog lags behind its stock: True shows full GPU types as still available.
        self.stale_catalog = False
        self.provisioning_s = 30.0  # of virtual time, for pods created from now on
        self.starting_s = 20.0
        self.list_lag_s = 0.0
        # An account key without billing access: `GET /v2/billing/pods` answers 403.
        self.billing_forbidden = False
        self.ended: dict[str, tuple[EmulatedPod, datetime]] = {}  # deleted pods still bill
        self.log_drops: list[int] = []
        # Files "on the web" at `<url root>/web/<name>` (datasets a pod fetches, on loopback).
        self.web_files: dict[str, bytes] = {}
        self.web_gets: list[str] = []
        self.url = ""
        self.closing = threading.Event()
        self.lock = threading.Condition()
        self._ids = itertools.count(1)

    def web_url(self, name: str) -> str:
        """Where `web_files[name]` is served (plain http on loopback, as a test needs)."""
        return f"{self.url.removesuffix('/v2')}/web/{name}"

    @property
    def proxy_template(self) -> str:
        """The pod proxy URL template (`FTDESK_RUNPOD_PROXY_URL`) that reaches the pods'
        published ports through this emulator."""
        return self.url.removesuffix("/v2") + "/proxy/{pod_id}/{port}"

    # -- knobs ---------------------------------------------------------------------------------

    def fault(self, method: str, path: str, **options: Any) -> Fault:
        """Plan a misbehaviour (see `Fault`) for requests to `method` and `path` (a regex)."""
        planned = Fault(method, path, **options)
        with self.lock:
            self.faults.append(planned)
        return planned

    def no_capacity(self, *gpu_ids: str) -> None:
        """Creates with these GPU types fail as RunPod's do when no machine is free."""
        with self.lock:
            self.full_gpus.update(gpu_ids)

    def drop_logs_after(self, *frame_counts: int) -> None:
        """The next log streams close after these many frames each (a dropped connection)."""
        with self.lock:
            self.log_drops.extend(frame_counts)

    def add_pod(self, name: str, gpu_id: str = "NVIDIA GeForce RTX 4090") -> EmulatedPod:
        """A pod made outside the client (in RunPod's console, say)."""
        return self._create({"name": name, "image": "img", "gpu": {"id": gpu_id, "count": 1}})

    def append_log(self, pod_id: str, line: str, source: str = "container") -> None:
        """The pod's container (or RunPod) printed a line (dropped once the pod is gone)."""
        with self.lock:
            pod = self.pods.get(pod_id)
            if pod is None:
                return
            pod.logs.append((len(pod.logs) + 1, self.clock.now(), source, line))
            self.lock.notify_all()

    def restart_container(self, pod_id: str, start: bool = True) -> None:
        """The container exited and RunPod restarted it: the pod stays RUNNING, uptime resets.

        With a runner, the container's processes are killed and its command runs again (same
        workspace, same env), as RunPod does. `start=False` is a container caught between a
        crash and its next start: nothing runs, nothing listens on its ports (a crash loop, seen
        between two restarts); a later `restart_container` starts it again.
        """
        with self.lock:
            pod = self.pods[pod_id]
            pod.container_started_at = self.clock.now()
            pod.restarts += 1
        # A runner that plays no container (a recording one) has no `on_restart`.
        on_restart = getattr(self.runner, "on_restart", None)
        if on_restart is not None:
            on_restart(pod, start)
        self.append_log(pod_id, f"container restarted ({pod.restarts})", source="system")

    def stop_container(self, pod_id: str) -> None:
        """The pod stopped (EXITED): no GPU, no uptime, but it still exists."""
        with self.lock:
            self.pods[pod_id].stopped = True

    def take_mismatches(self) -> list[str]:
        """The recorded mismatches, cleared (a test that planted them asserts on them)."""
        with self.lock:
            taken, self.mismatches = self.mismatches, []
        return taken

    def live_pods(self) -> list[EmulatedPod]:
        """The pods that exist (what a billing account would be paying for)."""
        with self.lock:
            return list(self.pods.values())

    # -- state ---------------------------------------------------------------------------------

    def _create(self, body: dict[str, Any]) -> EmulatedPod:
        gpu = next((g for g in self.gpus if g["id"] == body["gpu"]["id"]), None)
        cloud = body.get("cloud", "SECURE").lower()
        pod = EmulatedPod(
            id=f"emu{next(self._ids):04d}{secrets.token_hex(3)}",
            name=body["name"],
            body=body,
            created_at=self.clock.now(),
            price_per_gpu_hour=float(gpu[cloud]) if gpu else 1.0,
            pod_key=f"rp-pod-{secrets.token_hex(8)}",
            provisioning_s=self.provisioning_s,
            starting_s=self.starting_s,
        )
        with self.lock:
            self.pods[pod.id] = pod
        if self.runner is not None:
            env = {**body.get("env", {}), "RUNPOD_POD_ID": pod.id, "RUNPOD_API_KEY": pod.pod_key}
            self.runner.on_create(pod, env)
        return pod

    def _terminate(self, pod_id: str) -> bool:
        with self.lock:
            pod = self.pods.pop(pod_id, None)
            if pod is not None:
                self.ended[pod_id] = (pod, self.clock.now())
            self.lock.notify_all()
        if pod is not None and self.runner is not None:
            self.runner.on_terminate(pod)
        return pod is not None

    def pod_json(self, pod: EmulatedPod) -> dict[str, Any]:
        """The pod as `GET /v2/pods/{id}` shows it."""
        now = self.clock.now()
        status = pod.status(now)
        running = status == "RUNNING"
        started = pod.container_started_at or pod.running_since() or now
        body = pod.body
        return {
            "id": pod.id,
            "name": pod.name,
            "image": body.get("image", ""),
            "args": body.get("args", ""),
            "disk": body.get("disk", 20),
            "ports": body.get("ports", []),
            "env": body.get("env", {}),
            "registry": None,
            "status": status,
            "actions": {
                "RUNNING": ["stop", "restart", "terminate"],
                "EXITED": ["start", "terminate"],
            }.get(status, ["stop", "terminate"]),
            "mounts": body.get("mounts", {}),
            "gpu": {"id": pod.gpu_id, "count": pod.gpu_count},
            "cloud": body.get("cloud", "SECURE"),
            "dataCenterId": "EMU-LO-1" if status != "PROVISIONING" else None,
            "cudaVersion": "12.8",
            "ssh": {"proxy": None, "direct": None},
            "template": None,
            "cost": round(pod.price_per_gpu_hour * pod.gpu_count, 4) if running else 0,
            "locked": False,
            "globalNetworking": {"enabled": False},
            "runtime": {
                "uptime": int((now - started).total_seconds()),
                "ports": [],
                "gpus": [{"util": 0, "memoryUtil": 0}] * pod.gpu_count,
            }
            if running
            else None,
            "createdAt": iso(pod.created_at),
            "startedAt": iso(started) if running else None,
        }

    def gpu_json(self, gpu: dict[str, Any]) -> dict[str, Any]:
        """A catalog entry with prices and availability."""
        full = gpu["id"] in self.full_gpus and not self.stale_catalog
        availability = "NONE" if full else gpu["availability"]
        entry = {
            "id": gpu["id"],
            "name": gpu["name"],
            "pool": None,
            "manufacturer": "NVIDIA",
            "memory": gpu["memory"],
            "secure": True,
            "community": True,
            "price": {"secure": gpu["secure"], "community": gpu["community"]},
            "maxCount": {"secure": 8, "community": 4},
            "availability": availability,
        }
        if availability != "NONE":
            entry["dataCenters"] = [
                {"id": "EMU-LO-1", "name": "Emulated Loopback 1", "availability": availability}
            ]
        return entry

    # -- dispatch ------------------------------------------------------------------------------

    def authorised(self, header: str | None, path: str) -> Answer | None:
        """None when the bearer key may call `path`; otherwise the 401/403 answer."""
        key = (header or "").removeprefix("Bearer ").strip()
        if key == self.api_key:
            return None
        with self.lock:
            owner = next((p for p in self.pods.values() if p.pod_key == key), None)
        if owner is None:
            return problem(401, "Unauthorized", "missing or invalid API key")
        if not path.startswith(f"/v2/pods/{owner.id}"):
            return problem(403, "Forbidden", "a pod key may act only on its own pod")
        return None

    def next_fault(self, method: str, path: str) -> Fault | None:
        """The planned fault this request meets, if any (counted as seen)."""
        with self.lock:
            for planned in self.faults:
                if (
                    planned.seen < planned.times
                    and planned.method == method
                    and re.fullmatch(planned.path, path)
                ):
                    planned.seen += 1
                    return planned
        return None

    def answer(self, method: str, path: str, body: Any) -> Answer:
        """The normal answer to a valid, authorised request (logs are streamed elsewhere)."""
        parts = path.strip("/").split("/")
        if path == "/v2/pods" and method == "POST":
            if "gpu" not in body:
                return problem(400, "Bad Request", "exactly one of gpu or cpu must be set")
            if body["gpu"]["id"] in self.full_gpus:
                return problem(400, "Bad Request", NO_CAPACITY_DETAIL)
            if self.low_balance:
                return problem(402, "Payment Required", "insufficient balance to deploy this pod")
            return Answer(201, self.pod_json(self._create(body)))
        if path == "/v2/pods":
            # RunPod's list lags: a pod younger than `list_lag_s` is not in it yet.
            lag = timedelta(seconds=self.list_lag_s)
            now = self.clock.now()
            with self.lock:
                pods = [p for p in self.pods.values() if now - p.created_at >= lag]
            return Answer(200, {"pods": [self.pod_json(p) for p in pods]})
        if path == "/v2/catalog/gpus":
            return Answer(200, {"gpus": [self.gpu_json(g) for g in self.gpus]})
        if len(parts) >= 3 and parts[:2] == ["v2", "pods"]:
            with self.lock:
                pod = self.pods.get(parts[2])
            if pod is None:
                return problem(404, "Not Found", "pod not found")
            if len(parts) == 3 and method == "GET":
                return Answer(200, self.pod_json(pod))
            if len(parts) == 3 and method == "DELETE":
                self._terminate(pod.id)
                return Answer(204)
            if parts[3:] == ["action"]:
                return self._action(pod, body["action"])
        return problem(405, "Method Not Allowed", f"{method} {path} is not emulated")

    def pod_billing(self, query: dict[str, list[str]]) -> Answer:
        """`GET /v2/billing/pods`: per pod, its price × GPUs × time alive from creation (to its
        deletion, or now) within [startTime, endTime), in one bucket for the whole window."""
        if self.billing_forbidden:
            return problem(403, "Forbidden", "this API key has no access to billing")
        now = self.clock.now()
        lo = parse_iso(query.get("startTime", [""])[-1]) or now - timedelta(days=30)
        hi = parse_iso(query.get("endTime", [""])[-1]) or now
        with self.lock:
            alive = [(p, now) for p in self.pods.values()] + list(self.ended.values())
        records = []
        for pod, end in alive:
            seconds = (min(end, hi) - max(pod.created_at, lo)).total_seconds()
            if seconds <= 0:
                continue
            amount = round(pod.price_per_gpu_hour * pod.gpu_count * seconds / 3600, 4)
            records.append(
                {"startTime": iso(lo), "endTime": iso(hi), "podId": pod.id, "totalAmount": amount,
                 "gpuAmount": amount, "cpuAmount": 0, "diskAmount": 0}
            )  # fmt: skip
        total = round(sum(r["totalAmount"] for r in records), 4)
        query_echo = {"startTime": iso(lo), "endTime": iso(hi), "bucketSize": "month",
                      "podId": None}  # fmt: skip
        return Answer(
            200,
            {
                "records": records,
                "metadata": {
                    "query": query_echo, "recordCount": len(records),
                    "uniquePodCount": len(records),
                    "totals": {"totalAmount": total, "gpuAmount": total, "cpuAmount": 0,
                               "diskAmount": 0},
                },
            },
        )  # fmt: skip

    def _action(self, pod: EmulatedPod, action: str) -> Answer:
        allowed = self.pod_json(pod)["actions"]
        if action not in allowed:
            return problem(409, "Conflict", f"cannot {action} a pod in this status")
        if action == "terminate":
            self._terminate(pod.id)
            return Answer(204)
        with self.lock:
            if action == "stop":
                pod.stopped = True
            elif action == "start":
                pod.stopped = False
                pod.container_started_at = self.clock.now()
            elif action == "restart":
                pod.container_started_at = self.clock.now()
                pod.restarts += 1
        return Answer(200, self.pod_json(pod))


def iso(moment: datetime) -> str:
    """A time as RunPod writes it (`2026-06-01T12:00:00Z`)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime | None:
    """An RFC 3339 time from a query, or None when absent."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
