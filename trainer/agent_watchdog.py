"""The pod agent's watchdog: the pod deletes itself before it can waste money.

Standard library only: it runs inside the pod before anything is installed (see
`trainer.agent`). Every pod gets `RUNPOD_POD_ID` and a pod-scoped `RUNPOD_API_KEY`, so a pod can
delete itself with `DELETE {api}/pods/{RUNPOD_POD_ID}`. The watchdog does so when, in this order:

1. `budget reached`: hourly cost x time since the pod's creation reaches the budget;
2. `max runtime reached`: the time since creation passes the maximum runtime;
3. `artifacts confirmed`: training has ended and the app confirmed it pulled the artifacts;
4. `keep-alive passed`: training ended and the keep-alive passed without that confirmation;
5. `heartbeat lost`: the app's heartbeat has been gone past the lease while nothing trains (a
   late heartbeat never stops a running training: budget and runtime still guard it).

Time comes from RunPod's clock: every API response's `Date` header sets the offset between the
local clock and RunPod's, so spend and runtime agree with RunPod's bill whatever the local
clock says. The pod's `createdAt` (and its `cost` when no hourly cost was given) come from
`GET /pods/{id}`. Before deleting on budget or runtime the watchdog cancels the trainer (it
checkpoints within its grace period) and writes its reason to `<job>/agent.json`
(`{"final": true, "reason", "spent_usd", "at", ...}`) so the app can read why. A delete that
fails is retried with backoff; 404 means the pod is already gone. All time and sleeping goes
through an injectable `Clock`, so tests drive `tick()` with a fake clock and never wait.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DEFAULT_API_URL",
    "ApiReply",
    "Clock",
    "JobView",
    "PodApi",
    "SystemClock",
    "Watchdog",
    "WatchdogLimits",
    "limits_from_env",
    "number_from_env",
    "parse_time",
    "write_final_record",
]

DEFAULT_API_URL = "https://api.runpod.io/v2"
AGENT_RECORD = "agent.json"
_BACKOFF_START_S = 5.0
_BACKOFF_MAX_S = 300.0


class Clock(Protocol):
    """Where the watchdog reads the local time (epoch seconds) and sleeps."""

    def now(self) -> float:
        """The local wall clock, in seconds since the epoch."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """`time.time()`."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """`time.sleep(seconds)`."""
        time.sleep(seconds)


def parse_time(value: str) -> float:
    """Epoch seconds from an ISO 8601 time (RunPod's `createdAt`) or a number of seconds.

    Raises:
        ValueError: naming the value when it is neither.
    """
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not a time: give ISO 8601 or epoch seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # noqa: UP017 - pods may run 3.10
    return parsed.timestamp()


@dataclass(frozen=True)
class WatchdogLimits:
    """What the watchdog guards. `None` switches a limit off."""

    budget_usd: float | None = None
    cost_per_hour: float | None = None
    created_at: float | None = None
    max_runtime_s: float | None = None
    keepalive_s: float = 1800.0
    lease_s: float | None = None
    cancel_grace_s: float = 120.0
    clock_sync_s: float = 600.0


@dataclass(frozen=True)
class ApiReply:
    """One answer of RunPod's API: HTTP status (0 when unreachable), `Date`, JSON body."""

    status: int
    date: float | None = None
    body: Any = None


class PodApi:
    """The two calls the watchdog makes on its own pod, with the pod-scoped key."""

    def __init__(self, base_url: str, pod_id: str, api_key: str, timeout_s: float = 20.0):
        self._url = f"{base_url.rstrip('/')}/pods/{pod_id}"
        self._key = api_key
        self._timeout = timeout_s

    def get_pod(self) -> ApiReply:
        """`GET /pods/{id}`: the pod (createdAt, cost) and RunPod's clock."""
        return self._call("GET")

    def delete_pod(self) -> ApiReply:
        """`DELETE /pods/{id}`."""
        return self._call("DELETE")

    def _call(self, method: str) -> ApiReply:
        request = urllib.request.Request(self._url, method=method)
        request.add_header("Authorization", f"Bearer {self._key}")
        request.add_header("Accept", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return ApiReply(response.status, _date(response.headers), _json(response.read()))
        except urllib.error.HTTPError as exc:
            return ApiReply(exc.code, _date(exc.headers), _json(exc.read()))
        except (OSError, ValueError):
            return ApiReply(0)


def _date(headers: Any) -> float | None:
    raw = headers.get("Date") if headers is not None else None
    if not raw:
        return None
    try:
        return email.utils.parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError):
        return None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


class JobView(Protocol):
    """What the watchdog asks of the agent about the job."""

    def training_running(self) -> bool:
        """The trainer process is alive."""
        ...

    def ended_at(self) -> float | None:
        """Local time training was seen to end (None while it has not run or still runs)."""
        ...

    def artifacts_confirmed(self) -> bool:
        """The app said it pulled the artifacts."""
        ...

    def last_heartbeat(self) -> float:
        """Local time of the app's last heartbeat (the agent's start before the first)."""
        ...

    def cancel_training(self) -> bool:
        """SIGTERM to the trainer: it checkpoints and stops (False when nothing ran)."""
        ...


def write_final_record(job_dir: Path, record: dict[str, Any]) -> None:
    """Write `<job>/agent.json` atomically (temp file + rename)."""
    path = job_dir / AGENT_RECORD
    temp = path.with_name(f".{AGENT_RECORD}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, path)


def _iso(epoch: float) -> str:
    utc = timezone.utc  # noqa: UP017 - pods may run Python 3.10, which has no datetime.UTC
    return datetime.fromtimestamp(epoch, tz=utc).isoformat(timespec="seconds")


class Watchdog:
    """Decides when the pod must go, writes why, and deletes it (see the module docstring)."""

    def __init__(
        self,
        limits: WatchdogLimits,
        job: JobView,
        job_dir: Path,
        api: PodApi | None,
        clock: Clock | None = None,
    ):
        self.limits = limits
        self._job = job
        self._job_dir = job_dir
        self._api = api
        self._clock = clock or SystemClock()
        self._offset: float | None = None  # RunPod's clock minus the local one
        self._created_at = limits.created_at
        self._cost = limits.cost_per_hour
        self._started_local = self._clock.now()
        self._next_sync = self._started_local
        self._cancel_sent_at: float | None = None
        self._next_delete = 0.0
        self._backoff = _BACKOFF_START_S
        self._wake = threading.Event()
        self.reason: str | None = None
        self.deleted = False
        self.delete_attempts = 0

    def server_now(self) -> float:
        """Now on RunPod's clock (the local clock until RunPod's first answer)."""
        return self._clock.now() + (self._offset or 0.0)

    def _created(self) -> float:
        # Without createdAt the agent's own start is the best lower bound we have.
        if self._created_at is not None:
            return self._created_at
        return self._started_local + (self._offset or 0.0)

    def elapsed_s(self) -> float:
        """Seconds since the pod was created, on RunPod's clock."""
        return max(0.0, self.server_now() - self._created())

    def spent_usd(self) -> float:
        """Hourly cost x time since creation."""
        return (self._cost or 0.0) * self.elapsed_s() / 3600.0

    def wake(self) -> None:
        """Make a running `run` loop tick now (the app just confirmed its artifacts)."""
        self._wake.set()

    def _learn(self, reply: ApiReply, sent_local: float) -> None:
        if reply.date is not None:
            # The Date header has a one-second resolution; half a second is its midpoint.
            self._offset = reply.date + 0.5 - sent_local
        if isinstance(reply.body, dict):
            created = reply.body.get("createdAt")
            if self._created_at is None and isinstance(created, str):
                with contextlib.suppress(ValueError):
                    self._created_at = parse_time(created)
            cost = reply.body.get("cost")
            if self._cost is None and isinstance(cost, int | float) and cost > 0:
                self._cost = float(cost)

    def _sync(self, now: float) -> None:
        if self._api is None or now < self._next_sync:
            return
        self._next_sync = now + self.limits.clock_sync_s
        self._learn(self._api.get_pod(), now)

    def _why(self, now: float) -> str | None:
        limits = self.limits
        if limits.budget_usd is not None and self.spent_usd() >= limits.budget_usd:
            return "budget reached"
        if limits.max_runtime_s is not None and self.elapsed_s() >= limits.max_runtime_s:
            return "max runtime reached"
        if self._job.training_running():
            return None
        ended = self._job.ended_at()
        if ended is not None and self._job.artifacts_confirmed():
            return "artifacts confirmed"
        if ended is not None and now - ended >= limits.keepalive_s:
            return "keep-alive passed"
        if limits.lease_s is not None and now - self._job.last_heartbeat() > limits.lease_s:
            return "heartbeat lost"
        return None

    def tick(self) -> None:
        """Look once: decide, cancel the trainer, record and delete as needed. Never blocks
        beyond one API call."""
        if self.deleted:
            return
        now = self._clock.now()
        self._sync(now)
        if self.reason is None:
            self.reason = self._why(now)
            if self.reason is None:
                return
        if self.reason in ("budget reached", "max runtime reached") and (
            self._job.training_running()
        ):
            if self._cancel_sent_at is None:
                self._cancel_sent_at = now
                self._job.cancel_training()
            if now - self._cancel_sent_at < self.limits.cancel_grace_s:
                return  # let the trainer write its checkpoint first
        if not (self._job_dir / AGENT_RECORD).exists():
            self._record()
        if now >= self._next_delete:
            self._delete(now)

    def _record(self) -> None:
        try:
            self._write_record()
        except OSError as exc:
            # The pod must go even when its record cannot be written: money comes first.
            print(f"watchdog: cannot write {AGENT_RECORD}: {exc}", file=sys.stderr, flush=True)

    def _write_record(self) -> None:
        write_final_record(
            self._job_dir,
            {
                "version": 1,
                "final": True,
                "reason": self.reason,
                "spent_usd": round(self.spent_usd(), 4),
                "elapsed_s": round(self.elapsed_s(), 1),
                "at": _iso(self.server_now()),
                "pod_deleted": self.deleted,
            },
        )

    def _delete(self, now: float) -> None:
        if self._api is None:
            return  # not on RunPod (a lab server): the record says why it would have gone
        self.delete_attempts += 1
        reply = self._api.delete_pod()
        self._learn(reply, now)
        if 200 <= reply.status < 300 or reply.status == 404:
            self.deleted = True
            self._record()
            return
        self._next_delete = now + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Tick every `interval_s` until `stop` is set or the pod is deleted (a thread's body)."""
        while not stop.is_set() and not self.deleted:
            try:
                self.tick()
            except Exception:  # a bug in one tick must not end the guard for good
                traceback.print_exc()
            self._wake.wait(interval_s)
            self._wake.clear()


def number_from_env(env: dict[str, str], name: str, default: float | None = None) -> float | None:
    """A number from `env[name]` (`default` when unset); a bad value exits naming it."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(
            f"agent: {name}={raw!r} is not a number; give seconds or dollars"
        ) from None


def limits_from_env(env: dict[str, str]) -> WatchdogLimits:
    """The watchdog's limits from the environment; a bad value exits naming the variable."""
    created = env.get("FTDESK_POD_CREATED_AT", "").strip()
    try:
        created_at = parse_time(created) if created else None
    except ValueError as exc:
        raise SystemExit(f"agent: FTDESK_POD_CREATED_AT: {exc}") from None
    return WatchdogLimits(
        budget_usd=number_from_env(env, "FTDESK_BUDGET_USD"),
        cost_per_hour=number_from_env(env, "FTDESK_COST_PER_HOUR"),
        created_at=created_at,
        max_runtime_s=number_from_env(env, "FTDESK_MAX_RUNTIME_S"),
        keepalive_s=number_from_env(env, "FTDESK_KEEPALIVE_S", 1800.0) or 0.0,
        lease_s=number_from_env(env, "FTDESK_LEASE_S"),
        cancel_grace_s=number_from_env(env, "FTDESK_CANCEL_GRACE_S", 120.0) or 0.0,
        clock_sync_s=number_from_env(env, "FTDESK_CLOCK_SYNC_S", 600.0) or 600.0,
    )
