"""An async client for RunPod's REST v2 API: pods, their log stream, the GPU catalog.

The HTTP client is injected (tests point it at a loopback emulator of the API), and so is the
sleep between retries (tests record the delays instead of waiting). Every failure becomes one of
the provider errors of `desktop.core.errors`, with a sentence that names the call.

Money rules, because a mistake here bills the user:

* reads and deletes are retried on network errors, 5xx and 429, with capped exponential backoff
  (a 429's `Retry-After` wins);
* a create is retried only on 429. After a 5xx, a timeout or a dropped connection the pod may
  exist anyway, so the client lists pods looking for the create's unique name (a few times: the
  list lags) and adopts the match. It never sends a second create for one name;
* a delete that finds no pod (404) is done.

The API key is a `SecretStr`, registered with the log redaction and sent only as the
`Authorization` header: it is in no message, no repr, no log record. RunPod's own words in an
error (a validator may quote a rejected body back) are masked: every secret the app knows, and
a create's env values. Past 600 lines because each call's retry and error rules read best beside
the call itself (the error mapping alone is a tree of what RunPod can refuse).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import httpx
import pydantic
from httpx_sse import SSEError, aconnect_sse
from pydantic import SecretStr

from desktop.core.errors import (
    AuthError,
    BalanceError,
    CapacityError,
    InvalidRequestError,
    NotFoundError,
    ProviderError,
    RateLimitedError,
    ServerError,
    UnreachableError,
)
from desktop.core.redaction import MASK, MIN_SECRET_LENGTH, redact, register_secret
from desktop.providers.runpod.models import CreatePodRequest, GpuType, LogLine, Pod, PodBilling

__all__ = ["API_URL_ENV", "DEFAULT_API_URL", "RetryPolicy", "RunpodApi", "resolve_api_url"]

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.runpod.io/v2"
API_URL_ENV = "FTDESK_RUNPOD_API_URL"
# RunPod's words when a GPU type has no free machine (a 400 whose only content is this text).
_NO_CAPACITY = re.compile(
    r"no longer any instances available|no (gpu )?capacity|not enough (free )?(gpus|instances)"
    r"|no available (gpus|instances|machines)",
    re.IGNORECASE,
)
_BODY_PREVIEW_CHARS = 120
# RunPod's pod ids are short alphanumerics; anything else would address another resource.
_POD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

Sleep = Callable[[float], Awaitable[None]]
_M = TypeVar("_M", bound=pydantic.BaseModel)
PodAction = Literal["start", "stop", "restart", "terminate"]


def resolve_api_url(base_url: str | None = None) -> str:
    """The API base: the given one, else `$FTDESK_RUNPOD_API_URL`, else RunPod's.

    Args:
        base_url: An explicit base (from the settings), or None.

    Returns:
        The base URL without a trailing slash, e.g. `https://api.runpod.io/v2`.
    """
    chosen = base_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL
    return chosen.rstrip("/")


class RetryPolicy(pydantic.BaseModel):
    """How hard the client tries before it gives up (defaults suit RunPod's rate limits).

    Attributes:
        attempts: Tries per read or delete (1 means no retry).
        backoff_s: The first backoff; it doubles per try.
        backoff_cap_s: The longest backoff.
        retry_after_cap_s: The longest `Retry-After` the client will wait.
        adopt_looks: How many times a failed create lists pods looking for its name.
        adopt_delay_s: The wait between those looks (the list lags a few seconds).
        log_reconnects: How many times in a row the log stream reconnects without a new line.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    attempts: int = pydantic.Field(default=5, ge=1)
    backoff_s: float = pydantic.Field(default=1.0, ge=0)
    backoff_cap_s: float = pydantic.Field(default=30.0, ge=0)
    retry_after_cap_s: float = pydantic.Field(default=300.0, ge=0)
    adopt_looks: int = pydantic.Field(default=4, ge=1)
    adopt_delay_s: float = pydantic.Field(default=3.0, ge=0)
    log_reconnects: int = pydantic.Field(default=5, ge=0)

    def backoff(self, attempt: int) -> float:
        """The wait before try `attempt + 1` (attempt counts from 0)."""
        return float(min(self.backoff_cap_s, self.backoff_s * (2**attempt)))


class _Retry(Exception):
    """Internal: this answer may succeed if asked again after `delay_s`."""

    def __init__(self, error: ProviderError, delay_s: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.delay_s = delay_s


class RunpodApi:
    """RunPod's REST v2, async, on an injected `httpx.AsyncClient`.

    Args:
        client: The HTTP client (its timeout bounds every call; the caller closes it).
        api_key: The account's (or a pod's) API key.
        base_url: The API base; None means `$FTDESK_RUNPOD_API_URL` or RunPod's.
        sleep: How to wait between retries (tests pass a recorder).
        retry: How hard to try.
        clock: The local time, used only for a `Retry-After` given as a date.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        api_key: SecretStr,
        *,
        base_url: str | None = None,
        sleep: Sleep = asyncio.sleep,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._key = _checked_key(api_key)
        register_secret(api_key.get_secret_value())
        self.base_url = resolve_api_url(base_url)
        self._sleep = sleep
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._server_time: datetime | None = None

    def __repr__(self) -> str:
        return f"RunpodApi(base_url={self.base_url!r})"

    @property
    def server_time(self) -> datetime | None:
        """RunPod's clock at its latest answer (its `Date` header), or None before any.

        Time and cost of a pod are reckoned from this and the pod's `created_at`, both RunPod's,
        so they agree whatever the local clock says.
        """
        return self._server_time

    # -- pods ----------------------------------------------------------------------------------

    async def create_pod(self, request: CreatePodRequest) -> Pod:
        """Create a pod, or adopt the one a failed create made anyway.

        Retried only on 429. After a 5xx or no answer, pods are listed for `request.name` and the
        match is returned; a second create is never sent.

        Raises:
            CapacityError: No machine with this GPU type is free (try the next candidate).
            BalanceError: The account cannot pay.
            InvalidRequestError: RunPod refused the body.
            ServerError, UnreachableError: It failed and no pod of this name appeared.
        """
        call = f"create pod {request.name}"
        attempt = 0
        while True:
            try:
                response = await self._send("POST", "/pods", body=request.to_body())
            except httpx.TransportError as exc:
                return await self._adopt(request.name, self._transport_error(call, exc))
            if response.status_code == 429 and attempt + 1 < self.retry.attempts:
                await self._sleep(self._retry_after(response, attempt))
                attempt += 1
                continue
            # RunPod's words may quote the body back: its env values (tokens) never show.
            hide = _env_values(request)
            if response.status_code >= 500:
                return await self._adopt(request.name, self._server_error(call, response, hide))
            self._raise_for(call, response, gpu_id=request.gpu.id, hide=hide)
            return self._parse(call, Pod, self._json(call, response))

    async def get_pod(self, pod_id: str) -> Pod:
        """The pod as RunPod sees it now.

        Raises:
            NotFoundError: No such pod (it was deleted).
        """
        call = f"get pod {pod_id}"
        response = await self._idempotent("GET", _pod_path(pod_id), call)
        return self._parse(call, Pod, self._json(call, response))

    async def list_pods(self) -> list[Pod]:
        """Every pod of the account that is not terminated."""
        call = "list pods"
        response = await self._idempotent("GET", "/pods", call)
        body = self._json(call, response)
        if not isinstance(body, dict) or not isinstance(body.get("pods"), list):
            raise ServerError(f"RunPod answered {call} without a pod list", response.status_code)
        return [self._parse(call, Pod, item) for item in body["pods"]]

    async def pod_action(self, pod_id: str, action: PodAction) -> Pod | None:
        """Start, stop, restart or terminate a pod; the updated pod, or None for terminate.

        Not retried on a 5xx: an action is not idempotent (a restart twice restarts twice).
        """
        call = f"{action} pod {pod_id}"
        try:
            response = await self._send(
                "POST", _pod_path(pod_id, "/action"), body={"action": action}
            )
        except httpx.TransportError as exc:
            raise self._transport_error(call, exc) from None
        if action == "terminate" and response.status_code == 404:
            return None
        self._raise_for(call, response)
        if response.status_code == 204 or not response.content:
            return None
        return self._parse(call, Pod, self._json(call, response))

    async def delete_pod(self, pod_id: str) -> bool:
        """Delete (terminate) a pod for good; a pod that is already gone counts as done.

        Returns:
            True when this call deleted it, False when RunPod no longer knew it.
        """
        try:
            await self._idempotent("DELETE", _pod_path(pod_id), f"delete pod {pod_id}")
        except NotFoundError:
            return False
        return True

    # -- catalog -------------------------------------------------------------------------------

    async def gpu_types(self) -> list[GpuType]:
        """The GPU catalog for pods, with prices and current availability."""
        call = "list GPU types"
        response = await self._idempotent(
            "GET", "/catalog/gpus", call, params={"include": "AVAILABILITY", "product": "POD"}
        )
        body = self._json(call, response)
        if not isinstance(body, dict) or not isinstance(body.get("gpus"), list):
            raise ServerError(f"RunPod answered {call} without a GPU list", response.status_code)
        return [self._parse(call, GpuType, item) for item in body["gpus"]]

    # -- billing -------------------------------------------------------------------------------

    async def pod_billing(self, start: datetime, end: datetime) -> list[PodBilling]:
        """What each pod cost in [start, end), in one bucket a month (`GET /v2/billing/pods`).

        Raises:
            AuthError: 401/403, which for a key without billing access means it cannot read it.
        """
        call = "read pod billing"
        params = {"startTime": _rfc3339(start), "endTime": _rfc3339(end), "bucketSize": "month"}
        response = await self._idempotent("GET", "/billing/pods", call, params=params)
        body = self._json(call, response)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise ServerError(f"RunPod answered {call} without records", response.status_code)
        return [self._parse(call, PodBilling, item) for item in body["records"]]

    # -- logs ----------------------------------------------------------------------------------

    async def stream_logs(
        self,
        pod_id: str,
        *,
        source: Literal["container", "system"] = "container",
        tail: int = 100,
        last_event_id: str | None = None,
    ) -> AsyncIterator[LogLine]:
        """The pod's log lines as they come, resuming after a dropped connection.

        RunPod's stream stays open, so an end of stream is a drop: the client reconnects with
        `Last-Event-ID` set to the last line it yielded, so no line is lost or repeated. The
        iteration ends when the pod is gone (404); the caller stops it by leaving the loop.

        Args:
            pod_id: The pod.
            source: The container's output or RunPod's system log.
            tail: How many earlier lines the first connection replays (0..5000).
            last_event_id: Resume after this line's cursor (from an earlier stream).

        Raises:
            UnreachableError: The stream dropped `log_reconnects` times in a row with no new line.
        """
        call = f"stream logs of pod {pod_id}"
        path = _pod_path(pod_id, "/logs")
        cursor = last_event_id
        fruitless = 0
        while True:
            params: dict[str, str | int] = {"source": source}
            if cursor is None:
                params["tail"] = tail
            headers = self._headers()
            if cursor is not None:
                headers["Last-Event-ID"] = cursor
            got_line = False
            try:
                async with aconnect_sse(
                    self._client, "GET", self._url(path),
                    params=params, headers=headers,
                ) as events:  # fmt: skip
                    response = events.response
                    self._observe(response)
                    if response.status_code == 404:
                        return
                    if response.status_code == 429 or response.status_code >= 500:
                        # Worth another try, like a drop; the backoff below spaces them.
                        await response.aread()
                        log.info("%s: %s", call, self._error(call, response))
                    elif response.status_code != 200:
                        await response.aread()
                        self._raise_for(call, response)
                    else:
                        async for event in events.aiter_sse():
                            line = self._log_line(call, event.id, event.data)
                            if line is None:
                                continue
                            cursor = line.cursor
                            got_line = True
                            yield line
            except (httpx.TransportError, SSEError) as exc:
                log.info("%s: the stream dropped (%s); reconnecting", call, type(exc).__name__)
            fruitless = 0 if got_line else fruitless + 1
            if fruitless > self.retry.log_reconnects:
                raise UnreachableError(
                    f"RunPod's log stream for pod {pod_id} dropped {fruitless} times in a row "
                    "without a new line; check the pod in RunPod's console"
                )
            await self._sleep(self.retry.backoff(max(fruitless - 1, 0)))

    # -- plumbing ------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key.get_secret_value()}"}

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One request with the key, its answer's `Date` noted; transport errors propagate."""
        response = await self._client.request(
            method, self._url(path), params=params, json=body, headers=self._headers()
        )
        self._observe(response)
        return response

    def _observe(self, response: httpx.Response) -> None:
        when = _header_date(response)
        if when is not None:
            self._server_time = when

    async def _idempotent(
        self, method: str, path: str, call: str, params: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """A read or delete: retried on network errors, 5xx and 429 with capped backoff."""
        attempt = 0
        while True:
            try:
                try:
                    response = await self._send(method, path, params=params)
                except httpx.TransportError as exc:
                    raise _Retry(self._transport_error(call, exc), None) from None
                if response.status_code == 429:
                    raise _Retry(self._error(call, response), self._retry_after(response, attempt))
                if response.status_code >= 500:
                    raise _Retry(self._error(call, response), None)
            except _Retry as retry:
                if attempt + 1 >= self.retry.attempts:
                    raise retry.error from None
                delay = retry.delay_s if retry.delay_s is not None else self.retry.backoff(attempt)
                log.info("%s: %s; trying again in %.1f s", call, retry.error, delay)
                await self._sleep(delay)
                attempt += 1
                continue
            self._raise_for(call, response)
            return response

    async def _adopt(self, name: str, failure: ServerError | UnreachableError) -> Pod:
        """After a create that may have made a pod: find it by name, or raise `failure`."""
        for look in range(self.retry.adopt_looks):
            if look:
                await self._sleep(self.retry.adopt_delay_s)
            try:
                pods = await self.list_pods()
            except ProviderError as exc:
                log.info("looking for pod %s after a failed create: %s", name, exc)
                continue
            matches = sorted((p for p in pods if p.name == name), key=lambda p: p.created_at)
            if matches:
                if len(matches) > 1:
                    log.warning(
                        "%d pods are named %s (%s); adopting the oldest",
                        len(matches), name, ", ".join(p.id for p in matches),
                    )  # fmt: skip
                log.info("create pod %s failed (%s) but the pod exists: adopted", name, failure)
                return matches[0]
        message = (
            f"{failure} No pod named {name} appeared after {self.retry.adopt_looks} looks; "
            "if one shows up in RunPod's console, delete it there."
        )
        if isinstance(failure, ServerError):
            raise ServerError(message, failure.status) from None
        raise UnreachableError(message) from None

    def _transport_error(self, call: str, exc: httpx.TransportError) -> UnreachableError:
        if isinstance(exc, httpx.TimeoutException):
            return UnreachableError(f"RunPod did not answer {call} in time ({type(exc).__name__}).")
        return UnreachableError(f"RunPod could not be reached for {call} ({type(exc).__name__}).")

    def _retry_after(self, response: httpx.Response, attempt: int) -> float:
        """Seconds to wait after a 429: its `Retry-After` (seconds or a date), capped."""
        value = response.headers.get("Retry-After", "").strip()
        seconds: float | None = None
        if value.isdigit():
            seconds = float(value)
        elif value:
            when = _parse_http_date(value)
            if when is not None:
                # A date is on RunPod's clock: measure it from the answer's own Date.
                now = _header_date(response) or self._clock()
                seconds = max(0.0, (when - now).total_seconds())
        if seconds is None:
            return self.retry.backoff(attempt)
        return min(seconds, self.retry.retry_after_cap_s)

    def _server_error(
        self, call: str, response: httpx.Response, hide: Collection[str] = ()
    ) -> ServerError:
        """The `ServerError` for a 5xx answer, whatever its body."""
        error = self._error(call, response, hide=hide)
        if isinstance(error, ServerError):
            return error
        return ServerError(str(error), response.status_code)

    def _raise_for(
        self,
        call: str,
        response: httpx.Response,
        gpu_id: str | None = None,
        hide: Collection[str] = (),
    ) -> None:
        if response.status_code < 400:
            return
        raise self._error(call, response, gpu_id=gpu_id, hide=hide)

    def _error(
        self,
        call: str,
        response: httpx.Response,
        gpu_id: str | None = None,
        hide: Collection[str] = (),
    ) -> ProviderError:
        """The provider error for a failed answer, with a sentence naming the call.

        RunPod's words (its detail, each error, a page's text) are masked: every secret the app
        knows (`redaction`) and each of `hide` (a create's env values), since a validator may
        quote the rejected body back and the message reaches the CLI and the status bar.
        """
        status = response.status_code
        problem = _problem(response)
        if problem is None:
            return _not_api_body(call, response, hide)
        detail = _masked(str(problem.get("detail") or problem.get("title") or ""), hide)
        errors = tuple(_masked(str(e), hide) for e in problem.get("errors") or () if e)
        said = f": {detail}" if detail else ""
        if status == 401:
            return AuthError(
                f"RunPod refused the API key for {call} (HTTP 401{said}); "
                "check the key in the settings."
            )
        if status == 403:
            return AuthError(
                f"RunPod does not let this API key {call} (HTTP 403{said}); the key lacks the "
                "permission, or the account cannot use this GPU pool."
            )
        if status == 402:
            return BalanceError(
                f"RunPod refused {call}: the account balance is too low{said}. "
                "Add funds in RunPod's console."
            )
        if status == 404:
            return NotFoundError(f"RunPod knows no such resource for {call}{said}.")
        if status == 429:
            return RateLimitedError(f"RunPod asks to slow down ({call}); try again shortly.")
        if status == 400 and _NO_CAPACITY.search(detail or response.text):
            gpu = f" {gpu_id}" if gpu_id else ""
            return CapacityError(
                f"RunPod has no free{gpu} GPU for {call}{said}; pick another GPU type or cloud."
            )
        if status >= 500:
            return ServerError(
                f"RunPod failed on its side for {call} (HTTP {status}{said}).", status
            )
        listed = "; ".join(errors)
        return InvalidRequestError(
            f"RunPod refused {call} (HTTP {status}{said})" + (f": {listed}" if listed else ""),
            errors,
        )

    def _json(self, call: str, response: httpx.Response) -> Any:
        """A successful answer's JSON body; a page or other text is a `ServerError`."""
        try:
            return response.json()
        except ValueError:
            raise _not_api_body(call, response) from None

    def _parse(self, call: str, model: type[_M], data: Any) -> _M:
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the body"
            raise ServerError(
                f"RunPod's answer to {call} is not what its API describes ({where}: "
                f"{first['msg']})."
            ) from None

    def _log_line(self, call: str, cursor: str, data: str) -> LogLine | None:
        if not data:
            return None
        try:
            payload = json.loads(data)
            return LogLine.model_validate({**payload, "cursor": cursor})
        except (ValueError, pydantic.ValidationError):
            log.info("%s: skipped a frame that is not a log line (%r)", call, data[:80])
            return None


def _checked_key(api_key: SecretStr) -> SecretStr:
    """The key without the blanks a paste adds; a missing or broken one refused (never shown)."""
    key = api_key.get_secret_value().strip()
    if not key:
        raise AuthError(
            "No RunPod API key is set; add one in the settings (or FTDESK_RUNPOD_API_KEY)."
        )
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        # An HTTP header cannot carry it, and the transport's error would quote it.
        raise AuthError(
            "The RunPod API key contains a space or line break; paste it again from RunPod's "
            "console (Settings → API Keys)."
        )
    return SecretStr(key)


def _pod_path(pod_id: str, suffix: str = "") -> str:
    """`/pods/<id><suffix>`, after checking that the id is one (never a path or a query)."""
    if not isinstance(pod_id, str) or not _POD_ID.fullmatch(pod_id):
        raise InvalidRequestError(
            f"The pod id {pod_id!r} is not a RunPod pod id (letters, digits, - and _ only); "
            "nothing was sent."
        )
    return f"/pods/{pod_id}{suffix}"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_http_date(value: str) -> datetime | None:
    """An HTTP date (`Wed, 02 Dec 2026 12:00:00 GMT`) as an aware datetime, or None."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else None


def _header_date(response: httpx.Response) -> datetime | None:
    """The answer's `Date` header, or None when absent or unreadable."""
    value = response.headers.get("Date")
    return _parse_http_date(value) if value else None


def _env_values(request: CreatePodRequest) -> tuple[str, ...]:
    """A create's env values as they may be quoted back (raw and JSON-escaped), to mask.

    Values shorter than `MIN_SECRET_LENGTH` are no token and would mask ordinary words.
    """
    values = (v.get_secret_value() for v in request.env.values())
    raw = {v for v in values if len(v) >= MIN_SECRET_LENGTH}
    return tuple(raw | {json.dumps(v)[1:-1] for v in raw})


def _masked(text: str, hide: Collection[str]) -> str:
    """`text` with every secret the app knows and each of `hide` (longest first) masked."""
    text = redact(text)
    for value in sorted(hide, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def _not_api_body(call: str, response: httpx.Response, hide: Collection[str] = ()) -> ServerError:
    """The error for an answer whose body is not RunPod's JSON (an HTML 502 page, say)."""
    preview = _masked(" ".join(response.text[:_BODY_PREVIEW_CHARS].split()), hide)
    return ServerError(
        f"RunPod answered {call} with HTTP {response.status_code} and a body that is not its "
        f"API's (it begins {preview!r}); try again later.",
        response.status_code,
    )


def _problem(response: httpx.Response) -> dict[str, Any] | None:
    """The `application/problem+json` body, or None when the body is not JSON (an HTML page)."""
    if not response.content:
        return {}
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
