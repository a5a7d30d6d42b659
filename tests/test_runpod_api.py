"""The RunPod REST v2 client against the loopback emulator: money-safe creates, retries, errors.

Every request the client sends is validated against RunPod's official OpenAPI file by the
emulator; the `emulator` fixture fails a test at teardown on any mismatch it did not expect.
Sleeps between retries go through a recorder that advances the emulator's virtual clock, so no
test waits for real except the timeout cases (bounded by a 0.2 s client timeout).
"""

from __future__ import annotations

import asyncio
import logging
import math
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from datetime import timedelta
from decimal import Decimal
from email.utils import format_datetime, parsedate_to_datetime

import httpx
import pytest
from pydantic import SecretStr
from runpod_emulator import (
    HTML_502,
    OPENAPI_SHA256,
    EmulatedPod,
    OpenApiContract,
    RunpodEmulator,
    serve_emulator,
)
from runpod_emulator.runpod_openapi import file_sha256

from desktop.core.errors import (
    AuthError,
    BalanceError,
    CapacityError,
    InvalidRequestError,
    NotFoundError,
    ProviderError,
    ServerError,
    UnreachableError,
)
from desktop.providers.runpod.api import (
    API_URL_ENV,
    DEFAULT_API_URL,
    RetryPolicy,
    RunpodApi,
    resolve_api_url,
)
from desktop.providers.runpod.models import (
    Availability,
    CreatePodRequest,
    GpuRequest,
    Mounts,
    PersistentMount,
    PodStatus,
)

GPU = "NVIDIA GeForce RTX 4090"


@pytest.fixture
def emulator() -> Iterator[RunpodEmulator]:
    """A served emulator; the test fails at teardown if any request broke the OpenAPI file."""
    with serve_emulator() as served:
        yield served
    assert served.mismatches == [], "requests that break RunPod's OpenAPI file"


class RecordedSleeps:
    """The client's sleep: records each delay and moves RunPod's virtual clock by it."""

    def __init__(self, emulator: RunpodEmulator) -> None:
        self.emulator = emulator
        self.seen: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seen.append(seconds)
        self.emulator.clock.advance(seconds)


@asynccontextmanager
async def client_for(
    emulator: RunpodEmulator,
    *,
    key: str | None = None,
    timeout: float = 10.0,
    retry: RetryPolicy | None = None,
) -> AsyncIterator[tuple[RunpodApi, RecordedSleeps]]:
    sleeps = RecordedSleeps(emulator)
    async with httpx.AsyncClient(timeout=timeout) as http:
        api = RunpodApi(
            http,
            SecretStr(key or emulator.api_key),
            base_url=emulator.url,
            sleep=sleeps,
            retry=retry,
        )
        yield api, sleeps


def pod_request(name: str = "ftdesk-20261201-120000-abcd", **changes: object) -> CreatePodRequest:
    fields: dict[str, object] = {
        "name": name,
        "image": "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404",
        "gpu": GpuRequest(id=GPU),
        "cloud": "SECURE",
        "disk": 30,
        "mounts": Mounts(persistent=PersistentMount(size=20)),
        "ports": ("8000/http",),
        "env": {"FTDESK_JOB_TOKEN": SecretStr("job-token-123")},
        "args": "bash -c 'echo hi'",
    }
    fields.update(changes)
    return CreatePodRequest.model_validate(fields)


def creates(emulator: RunpodEmulator) -> int:
    return sum(1 for r in emulator.requests if (r.method, r.path) == ("POST", "/v2/pods"))


def test_the_openapi_copy_is_runpods_file_byte_for_byte() -> None:
    assert file_sha256() == OPENAPI_SHA256


def test_create_get_list_and_delete_a_pod(emulator: RunpodEmulator) -> None:
    async def scenario() -> None:
        async with client_for(emulator) as (api, _):
            created = await api.create_pod(pod_request())
            assert created.status is PodStatus.PROVISIONING
            assert created.runtime is None
            assert created.cost == 0
            assert created.created_at == emulator.clock.now()

            emulator.clock.advance(60)  # past provisioning (30 s) and starting (20 s)
            running = await api.get_pod(created.id)
            assert api.server_time == emulator.clock.now()  # RunPod's clock, from `Date`
            assert running.status is PodStatus.RUNNING
            assert running.cost == Decimal("0.69")
            assert running.runtime is not None and running.runtime.uptime == 10
            assert [p.id for p in await api.list_pods()] == [created.id]

            assert await api.delete_pod(created.id) is True
            assert await api.list_pods() == []
            with pytest.raises(NotFoundError, match=created.id):
                await api.get_pod(created.id)

    asyncio.run(scenario())

    assert emulator.live_pods() == []
    [body] = [r.body for r in emulator.requests if (r.method, r.path) == ("POST", "/v2/pods")]
    assert body["gpu"] == {"id": GPU, "count": 1}  # the count is always sent
    assert body["env"] == {"FTDESK_JOB_TOKEN": "job-token-123"}


def test_a_second_delete_is_a_no_op(emulator: RunpodEmulator) -> None:
    pod = emulator.add_pod("made-elsewhere")

    async def scenario() -> tuple[bool, bool]:
        async with client_for(emulator) as (api, _):
            return await api.delete_pod(pod.id), await api.delete_pod(pod.id)

    assert asyncio.run(scenario()) == (True, False)
    assert emulator.live_pods() == []


@pytest.mark.parametrize("bad_id", ["", "../catalog/gpus", "abc/action", "a b", "x?y=1"])
def test_a_malformed_pod_id_is_refused_before_anything_is_sent(
    emulator: RunpodEmulator, bad_id: str
) -> None:
    # Otherwise `delete_pod("")` or a path-like id could address another resource, and a 404
    # there would read as "already deleted" while the real pod keeps billing.
    async def scenario() -> list[str]:
        messages = []
        async with client_for(emulator) as (api, _):
            for call in (
                api.delete_pod(bad_id),
                api.get_pod(bad_id),
                api.pod_action(bad_id, "terminate"),
            ):
                with pytest.raises(InvalidRequestError) as caught:
                    await call
                messages.append(str(caught.value))
            async with aclosing(api.stream_logs(bad_id)) as stream:
                with pytest.raises(InvalidRequestError):
                    await anext(stream)
        return messages

    messages = asyncio.run(scenario())

    assert all(f"pod id {bad_id!r}" in m for m in messages), messages
    assert emulator.requests == []


def test_a_create_answered_500_after_the_pod_was_made_adopts_that_one_pod(
    emulator: RunpodEmulator,
) -> None:
    emulator.fault("POST", "/v2/pods", status=500, after=True)

    async def scenario() -> str:
        async with client_for(emulator) as (api, _):
            return (await api.create_pod(pod_request("ftdesk-job-500"))).id

    adopted = asyncio.run(scenario())

    assert [p.id for p in emulator.live_pods()] == [adopted]
    assert creates(emulator) == 1


def test_a_create_answered_500_with_no_pod_fails_after_looking_and_never_creates_again(
    emulator: RunpodEmulator,
) -> None:
    emulator.fault("POST", "/v2/pods", status=500)
    retry = RetryPolicy(adopt_looks=3, adopt_delay_s=2.5)

    async def scenario() -> tuple[ServerError, list[float]]:
        async with client_for(emulator, retry=retry) as (api, sleeps):
            with pytest.raises(ServerError) as caught:
                await api.create_pod(pod_request("ftdesk-job-lost"))
            return caught.value, sleeps.seen

    error, slept = asyncio.run(scenario())

    assert creates(emulator) == 1
    assert emulator.live_pods() == []
    assert slept == [2.5, 2.5]  # three looks at the list, spaced for its lag
    assert "HTTP 500" in str(error) and "No pod named ftdesk-job-lost appeared" in str(error)
    assert error.status == 500


def test_a_429_storm_is_waited_out_with_retry_after(emulator: RunpodEmulator) -> None:
    emulator.fault("POST", "/v2/pods", status=429, retry_after=7, times=3)
    emulator.fault("GET", "/v2/pods", status=429, retry_after=2, times=2)

    async def scenario() -> tuple[str, list[str], list[float]]:
        async with client_for(emulator) as (api, sleeps):
            pod = await api.create_pod(pod_request())
            listed = [p.id for p in await api.list_pods()]
            return pod.id, listed, sleeps.seen

    pod_id, listed, slept = asyncio.run(scenario())

    assert slept == [7, 7, 7, 2, 2]
    assert listed == [pod_id]
    assert creates(emulator) == 4  # three refused, one made: a 429 made no pod
    assert len(emulator.live_pods()) == 1


def test_a_retry_after_date_is_measured_on_runpods_clock(emulator: RunpodEmulator) -> None:
    later = emulator.clock.now() + timedelta(seconds=12)
    emulator.fault("GET", "/v2/pods", status=429, retry_after=format_datetime(later, usegmt=True))

    async def scenario() -> list[float]:
        # The local clock is a day off; only RunPod's `Date` and `Retry-After` count.
        skewed = RunpodApi(
            http := httpx.AsyncClient(),
            SecretStr(emulator.api_key),
            base_url=emulator.url,
            sleep=(sleeps := RecordedSleeps(emulator)),
            clock=lambda: later + timedelta(days=1),
        )
        async with http:
            await skewed.list_pods()
        return sleeps.seen

    assert asyncio.run(scenario()) == [12.0]


def test_adoption_looks_again_while_runpods_list_lags(emulator: RunpodEmulator) -> None:
    emulator.list_lag_s = 5  # a new pod shows in the list 5 s (virtual) after its create
    emulator.fault("POST", "/v2/pods", status=500, after=True)
    retry = RetryPolicy(adopt_looks=4, adopt_delay_s=2)

    async def scenario() -> tuple[str, list[float]]:
        async with client_for(emulator, retry=retry) as (api, sleeps):
            return (await api.create_pod(pod_request("ftdesk-job-lag"))).id, sleeps.seen

    adopted, slept = asyncio.run(scenario())

    assert slept == [2, 2, 2]  # found at the fourth look, 6 s after the create
    assert [p.id for p in emulator.live_pods()] == [adopted]
    assert creates(emulator) == 1


def test_no_capacity_is_a_capacity_error_naming_the_gpu(emulator: RunpodEmulator) -> None:
    emulator.no_capacity(GPU)

    async def scenario() -> None:
        async with client_for(emulator) as (api, _):
            with pytest.raises(CapacityError, match=f"no free {GPU} GPU"):
                await api.create_pod(pod_request())

    asyncio.run(scenario())
    assert emulator.live_pods() == []
    assert creates(emulator) == 1


def test_a_low_balance_is_a_balance_error(emulator: RunpodEmulator) -> None:
    emulator.low_balance = True

    async def scenario() -> None:
        async with client_for(emulator) as (api, _):
            with pytest.raises(BalanceError, match=r"balance is too low.*Add funds"):
                await api.create_pod(pod_request())

    asyncio.run(scenario())
    assert emulator.live_pods() == []


def test_a_refused_body_is_an_invalid_request_error_with_runpods_errors(
    emulator: RunpodEmulator,
) -> None:
    # A bare major CUDA version passes our model but not RunPod's pattern: RunPod answers 422.
    request = pod_request(gpu=GpuRequest(id=GPU, allowed_cuda_versions=("12",)))

    async def scenario() -> InvalidRequestError:
        async with client_for(emulator) as (api, sleeps):
            with pytest.raises(InvalidRequestError) as caught:
                await api.create_pod(request)
            assert sleeps.seen == []  # a 422 is never retried
            return caught.value

    error = asyncio.run(scenario())

    # RunPod's own list, passed through (a failed sub-schema also leaves its keys unevaluated).
    assert (
        "body $.gpu.allowedCudaVersions[0]: '12' does not match '^\\\\d+\\\\.\\\\d+$'"
        in error.errors
    )
    assert "HTTP 422" in str(error) and "allowedCudaVersions" in str(error)
    assert [m for m in emulator.take_mismatches() if "allowedCudaVersions" in m]
    assert emulator.live_pods() == []


def test_a_refused_create_that_echoes_its_body_puts_no_env_value_in_the_error(
    emulator: RunpodEmulator,
) -> None:
    """A validator that quotes what it rejected (its detail, each error) must not carry a
    pod's HF token into an error the CLI prints or the status bar shows: RunPod's words pass
    through the app's redaction, and a create's env values are masked whatever it says."""
    token = "hf_sentinel9c1e4b7d2a6f8e0c3b5d"  # never registered as a secret anywhere
    emulator.fault("POST", "/v2/pods", status=422, echo_body=True)
    request = pod_request(env={"HF_TOKEN": SecretStr(token), "FTDESK_JOB_TOKEN": SecretStr("jt")})

    async def scenario() -> InvalidRequestError:
        async with client_for(emulator) as (api, _):
            with pytest.raises(InvalidRequestError) as caught:
                await api.create_pod(request)
            return caught.value

    error = asyncio.run(scenario())
    [sent] = [r for r in emulator.requests if (r.method, r.path) == ("POST", "/v2/pods")]
    assert sent.body["env"]["HF_TOKEN"] == token  # the server did get it, and quoted it back
    assert "HTTP 422" in str(error) and "HF_TOKEN" in str(error), str(error)
    said = " ".join([str(error), repr(error), *error.errors, *map(str, error.args)])
    assert token not in said and token[:12] not in said, said
    assert any("HF_TOKEN" in e for e in error.errors), error.errors
    assert emulator.live_pods() == []


def test_an_html_502_page_is_a_server_error_with_a_clean_message(
    emulator: RunpodEmulator,
) -> None:
    pod = emulator.add_pod("behind-a-proxy")
    emulator.fault("GET", f"/v2/pods/{pod.id}", status=502, html=True, times=10)

    async def scenario() -> tuple[ServerError, list[float]]:
        async with client_for(emulator, retry=RetryPolicy(attempts=3)) as (api, sleeps):
            with pytest.raises(ServerError) as caught:
                await api.get_pod(pod.id)
            return caught.value, sleeps.seen

    error, slept = asyncio.run(scenario())

    message = str(error)
    assert error.status == 502
    assert f"get pod {pod.id}" in message and "HTTP 502" in message
    assert "502 Bad Gateway" in message and len(message) < 300
    assert "Expecting value" not in message and "JSONDecodeError" not in message
    assert slept == [1.0, 2.0]  # reads retry a 5xx with a doubling backoff
    assert HTML_502.startswith("<html>")


def test_a_success_status_with_a_body_that_is_not_json_is_a_server_error(
    emulator: RunpodEmulator,
) -> None:
    # A captive portal or a misrouted proxy can answer 200 with a page.
    pod = emulator.add_pod("portal")
    emulator.fault("GET", f"/v2/pods/{pod.id}", status=200, html=True)
    emulator.fault("GET", "/v2/pods", status=200, html=True)

    async def scenario() -> list[ServerError]:
        errors = []
        async with client_for(emulator) as (api, _):
            for call in (api.get_pod(pod.id), api.list_pods()):
                with pytest.raises(ServerError) as caught:
                    await call
                errors.append(caught.value)
        return errors

    calls = (f"get pod {pod.id}", "list pods")
    for error, call in zip(asyncio.run(scenario()), calls, strict=True):
        assert f"RunPod answered {call} with HTTP 200" in str(error)
        assert "502 Bad Gateway" in str(error) and "Expecting value" not in str(error)


def test_a_read_retries_a_5xx_and_then_succeeds(emulator: RunpodEmulator) -> None:
    pod = emulator.add_pod("flaky")
    emulator.fault("GET", f"/v2/pods/{pod.id}", status=503, times=2)

    async def scenario() -> tuple[str, list[float]]:
        async with client_for(emulator) as (api, sleeps):
            return (await api.get_pod(pod.id)).name, sleeps.seen

    assert asyncio.run(scenario()) == ("flaky", [1.0, 2.0])


def test_a_hanging_read_ends_in_a_timeout_error_that_names_the_call(
    emulator: RunpodEmulator,
) -> None:
    pod = emulator.add_pod("silent")
    emulator.fault("GET", f"/v2/pods/{pod.id}", hang=True, times=2)

    async def scenario() -> UnreachableError:
        async with client_for(emulator, timeout=0.2, retry=RetryPolicy(attempts=2)) as (api, _):
            with pytest.raises(UnreachableError) as caught:
                await api.get_pod(pod.id)
            return caught.value

    error = asyncio.run(scenario())

    assert f"RunPod did not answer get pod {pod.id} in time" in str(error)


def test_a_hanging_create_looks_for_its_pod_and_adopts_it(emulator: RunpodEmulator) -> None:
    emulator.fault("POST", "/v2/pods", hang=True, after=True)

    async def scenario() -> str:
        # The timeout covers the look that must answer too: not so short that a loaded
        # machine's pause makes it fail.
        async with client_for(emulator, timeout=2.0) as (api, _):
            return (await api.create_pod(pod_request("ftdesk-job-hang"))).id

    adopted = asyncio.run(scenario())

    assert [p.id for p in emulator.live_pods()] == [adopted]
    assert creates(emulator) == 1


def test_a_slow_answer_within_the_timeout_is_simply_awaited(emulator: RunpodEmulator) -> None:
    emulator.fault("GET", "/v2/pods", delay_s=0.05)

    async def scenario() -> tuple[int, list[float]]:
        async with client_for(emulator, timeout=5.0) as (api, sleeps):
            return len(await api.list_pods()), sleeps.seen

    assert asyncio.run(scenario()) == (0, [])


def test_the_log_stream_resumes_after_drops_without_losing_or_repeating_a_line(
    emulator: RunpodEmulator,
) -> None:
    pod = emulator.add_pod("chatty")
    for number in range(1, 11):
        emulator.append_log(pod.id, f"step {number}")
    emulator.drop_logs_after(3, 4)  # the first two connections drop mid-stream

    async def scenario() -> tuple[list[str], list[str]]:
        lines, cursors = [], []
        async with client_for(emulator) as (api, _), aclosing(api.stream_logs(pod.id)) as stream:
            async for line in stream:
                lines.append(line.line)
                cursors.append(line.cursor)
                if len(lines) == 10:
                    break
        return lines, cursors

    lines, cursors = asyncio.run(scenario())

    assert lines == [f"step {n}" for n in range(1, 11)]
    assert cursors == sorted(set(cursors))
    connections = [r for r in emulator.requests if r.path.endswith("/logs")]
    # The first asked for the recent lines; each reconnect resumed after the last line seen.
    assert [(r.query.get("tail"), r.last_event_id) for r in connections] == [
        (["100"], None),
        (None, cursors[2]),
        (None, cursors[6]),
    ]


def test_a_later_log_stream_resumes_after_an_earlier_ones_last_cursor(
    emulator: RunpodEmulator,
) -> None:
    pod = emulator.add_pod("resumable")
    for number in range(1, 7):
        emulator.append_log(pod.id, f"line {number}")

    async def take(api: RunpodApi, count: int, after: str | None) -> list[tuple[str, str]]:
        taken = []
        async with aclosing(api.stream_logs(pod.id, last_event_id=after)) as stream:
            async for line in stream:
                taken.append((line.line, line.cursor))
                if len(taken) == count:
                    break
        return taken

    async def scenario() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        async with client_for(emulator) as (api, _):
            first = await take(api, 2, None)
            emulator.append_log(pod.id, "line 7")  # printed while nobody listened
            second = await take(api, 5, first[-1][1])
        return first, second

    first, second = asyncio.run(scenario())

    assert [line for line, _ in first + second] == [f"line {n}" for n in range(1, 8)]


def test_a_log_stream_that_keeps_failing_gives_up_with_a_clear_error(
    emulator: RunpodEmulator,
) -> None:
    pod = emulator.add_pod("unlucky")
    emulator.fault("GET", f"/v2/pods/{pod.id}/logs", status=503, times=10)

    async def scenario() -> tuple[str, list[float]]:
        retry = RetryPolicy(log_reconnects=2)
        async with client_for(emulator, retry=retry) as (api, sleeps):
            with pytest.raises(UnreachableError) as caught:
                async for _ in api.stream_logs(pod.id):
                    pass
            return str(caught.value), sleeps.seen

    message, slept = asyncio.run(scenario())

    assert f"log stream for pod {pod.id} dropped 3 times in a row" in message
    assert slept == [1.0, 2.0]


def test_the_log_stream_ends_when_the_pod_is_gone(emulator: RunpodEmulator) -> None:
    pod = emulator.add_pod("short-lived")
    emulator.append_log(pod.id, "only line")
    emulator.drop_logs_after(1)

    async def scenario() -> list[str]:
        async with client_for(emulator) as (api, _):
            lines = []
            async for line in api.stream_logs(pod.id):
                lines.append(line.line)
                await api.delete_pod(pod.id)
            return lines

    assert asyncio.run(scenario()) == ["only line"]
    # The drop after the line made it reconnect; the 404 of the deleted pod ended the stream.
    assert len([r for r in emulator.requests if r.path.endswith("/logs")]) == 2


def test_the_gpu_catalog_has_prices_and_availability(emulator: RunpodEmulator) -> None:
    emulator.no_capacity("NVIDIA A100 80GB PCIe")

    async def scenario() -> dict[str, tuple[Decimal | None, Decimal | None, Availability | None]]:
        async with client_for(emulator) as (api, _):
            return {
                g.id: (g.price.secure, g.price.community, g.availability)
                for g in await api.gpu_types()
            }

    catalog = asyncio.run(scenario())

    assert catalog == {
        GPU: (Decimal("0.69"), Decimal("0.34"), Availability.HIGH),
        "NVIDIA A100 80GB PCIe": (Decimal("1.64"), Decimal("1.19"), Availability.NONE),
        "NVIDIA H100 80GB HBM3": (Decimal("2.99"), Decimal("2.69"), Availability.NONE),
    }
    [asked] = [r for r in emulator.requests if r.path == "/v2/catalog/gpus"]
    assert asked.query == {"include": ["AVAILABILITY"], "product": ["POD"]}
    assert asked.body is None


def test_the_api_key_is_in_no_error_text_repr_or_log_record(
    emulator: RunpodEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    sentinel = "rp_SENTINEL_KEY_d41d8cd98f00b204"
    emulator.api_key = sentinel
    pod = emulator.add_pod("watched")
    emulator.fault("GET", f"/v2/pods/{pod.id}", status=502, html=True, times=2)
    emulator.fault("GET", "/v2/pods", hang=True)
    emulator.fault("POST", "/v2/pods", status=500)
    emulator.low_balance = True
    caught: list[BaseException] = []

    async def scenario() -> list[str]:
        texts = []
        retry = RetryPolicy(attempts=2, adopt_looks=2)
        async with client_for(emulator, timeout=2.0, retry=retry) as (api, _):
            texts.append(repr(api))
            texts.append(repr(pod_request()))
            calls = [
                api.get_pod(pod.id),  # 502 twice
                api.list_pods(),  # hangs once, then answers
                api.create_pod(pod_request()),  # 500, no pod: adopt fails
                api.create_pod(pod_request()),  # 402
                api.get_pod("no-such-pod"),  # 404
            ]
            for call in calls:
                try:
                    await call
                except ProviderError as exc:
                    caught.append(exc)
        async with client_for(emulator, key=sentinel[::-1]) as (stranger, _):
            with pytest.raises(AuthError) as refused:
                await stranger.list_pods()
            caught.append(refused.value)
        return texts

    with caplog.at_level(logging.DEBUG):
        texts = asyncio.run(scenario())

    assert len(caught) == 5
    for exc in caught:
        texts += [str(exc), repr(exc), *map(str, exc.args)]
        texts += traceback.format_exception(exc)
        for linked in (exc.__cause__, exc.__context__):
            if linked is not None:
                texts += [str(linked), repr(linked)]
    texts += [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]
    assert caplog.records  # the client did log (retries, adoption)
    assert [t for t in texts if sentinel in t or sentinel[::-1] in t] == []


def test_a_pasted_key_is_trimmed_and_a_blank_or_broken_key_is_refused_without_echoing_it(
    emulator: RunpodEmulator,
) -> None:
    async def scenario() -> tuple[int, list[str]]:
        refused = []
        async with client_for(emulator, key=f"  {emulator.api_key}\n") as (api, sleeps):
            listed = len(await api.list_pods())
            assert sleeps.seen == []
        async with httpx.AsyncClient() as http:
            for bad in ("", "  \n", "rp_half one"):
                with pytest.raises(AuthError) as caught:
                    RunpodApi(http, SecretStr(bad), base_url=emulator.url)
                refused.append(str(caught.value))
        return listed, refused

    listed, refused = asyncio.run(scenario())

    assert listed == 0
    assert refused[0] == refused[1] and "No RunPod API key" in refused[0]
    assert "space or line break" in refused[2] and "rp_half" not in refused[2]


def test_the_emulator_refuses_and_records_a_request_that_breaks_the_openapi_file(
    emulator: RunpodEmulator,
) -> None:
    bad = {"name": "x", "image": "i", "gpu": {"id": GPU, "count": "one"}, "bogus": True}
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    pod = emulator.add_pod("logged")

    with httpx.Client(base_url=emulator.url, headers=headers) as http:
        created = http.post("/pods", json=bad)
        logs = http.get(f"/pods/{pod.id}/logs", params={"tail": 9999, "colour": "red"})

    assert created.status_code == 422 and logs.status_code == 422
    assert created.headers["content-type"] == "application/problem+json"
    mismatches = emulator.take_mismatches()
    assert any("createPod" in m and "'bogus'" in m for m in mismatches), mismatches
    assert any("createPod" in m and "'one' is not of type 'integer'" in m for m in mismatches)
    assert any("getPodLogs" in m and "tail" in m and "5000" in m for m in mismatches)
    assert any("getPodLogs" in m and "unknown parameter 'colour'" in m for m in mismatches)
    assert created.json()["errors"] and [p.name for p in emulator.live_pods()] == ["logged"]


def test_the_emulator_follows_its_virtual_clock_and_exposes_its_hooks(
    emulator: RunpodEmulator,
) -> None:
    class RecordingRunner:
        def __init__(self) -> None:
            self.started: list[tuple[str, dict[str, str]]] = []
            self.stopped: list[str] = []

        def on_create(self, pod: EmulatedPod, env: dict[str, str]) -> None:
            self.started.append((pod.id, env))

        def on_terminate(self, pod: EmulatedPod) -> None:
            self.stopped.append(pod.id)

    runner = RecordingRunner()
    emulator.runner = runner
    emulator.provisioning_s = math.inf

    async def scenario() -> None:
        async with client_for(emulator) as (api, _):
            stuck = await api.create_pod(pod_request("stuck"))
            emulator.clock.advance(86400)
            assert (await api.get_pod(stuck.id)).status is PodStatus.PROVISIONING

            emulator.provisioning_s = 30
            runs = await api.create_pod(pod_request("runs"))
            emulator.clock.advance(100)
            assert (await api.get_pod(runs.id)).runtime.uptime == 50  # type: ignore[union-attr]
            emulator.restart_container(runs.id)
            emulator.clock.advance(5)
            assert (await api.get_pod(runs.id)).runtime.uptime == 5  # type: ignore[union-attr]

            # A pod's own key reaches its pod only.
            _, env = runner.started[1]
            async with client_for(emulator, key=env["RUNPOD_API_KEY"]) as (own, _):
                assert (await own.get_pod(runs.id)).name == "runs"
                with pytest.raises(AuthError, match="HTTP 403"):
                    await own.list_pods()
                assert await own.delete_pod(runs.id) is True
            await api.delete_pod(stuck.id)

    asyncio.run(scenario())

    assert [env["RUNPOD_POD_ID"] for _, env in runner.started] == sorted(runner.stopped)
    assert runner.started[0][1]["FTDESK_JOB_TOKEN"] == "job-token-123"
    with httpx.Client() as http:
        answer = http.get(f"{emulator.url}/pods", headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 401
    assert parsedate_to_datetime(answer.headers["Date"]) == emulator.clock.now()


def test_the_api_base_comes_from_the_argument_then_the_environment_then_runpod(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(API_URL_ENV, raising=False)
    assert resolve_api_url() == DEFAULT_API_URL == "https://api.runpod.io/v2"
    monkeypatch.setenv(API_URL_ENV, "http://127.0.0.1:9/v2/")
    assert resolve_api_url() == "http://127.0.0.1:9/v2"
    assert resolve_api_url("https://example.test/v2") == "https://example.test/v2"


def test_a_create_request_with_every_field_set_matches_runpods_schema() -> None:
    full = pod_request(
        gpu=GpuRequest(id=GPU, count=2, allowed_cuda_versions=("12.8",), min_cuda_version="12.4"),
        cloud="COMMUNITY",
        data_center_ids=("US-KS-2",),
    )
    body = full.to_body()
    schema = OpenApiContract()
    names = {field.alias or name for name, field in CreatePodRequest.model_fields.items()}

    assert set(body) == names  # every field was sent, so every one was checked below
    assert schema.errors("/components/schemas/CreatePodRequest", body) == []
    assert schema.errors("/components/schemas/CreatePodRequest", {**body, "bogus": 1}), (
        "the schema check must refuse an unknown key"
    )


def test_a_create_request_refuses_what_runpod_would_refuse() -> None:
    with pytest.raises(ValueError, match="bogus"):
        CreatePodRequest.model_validate({"name": "x", "image": "i", "gpu": {"id": GPU}, "bogus": 1})
    with pytest.raises(ValueError, match="at most 50"):
        pod_request(env={f"K{i}": SecretStr("v") for i in range(51)})
    assert "job-token-123" not in repr(pod_request())
