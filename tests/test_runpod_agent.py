"""The pod agent (`trainer/agent.py`) and its watchdog, as a pod runs them.

The agent runs as a real child process on a free port with a sandbox workspace; RunPod's API
is a tiny local server (`tests/runpod_pod_fakes.py`) whose `Date` header can be far from the
local clock. The watchdog's decisions are driven with a fake clock and `tick()`, so budget,
runtime and keep-alive take no real time; one test runs its real thread with tiny limits.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from runpod_pod_fakes import (
    JOB_TOKEN,
    POD_ID,
    POD_KEY,
    AgentProcess,
    FakeRunPodApi,
    agent_env,
    start_agent,
    wait_until,
)

from trainer.agent import Agent, AgentError
from trainer.agent_files import artifact_files
from trainer.agent_watchdog import PodApi, Watchdog, WatchdogLimits

JOB = "20260101-000000-abcd"
CREATED = "2026-01-01T00:00:00Z"
CREATED_EPOCH = datetime.fromisoformat("2026-01-01T00:00:00+00:00").timestamp()


class FakeClock:
    """A local clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def api() -> Iterator[FakeRunPodApi]:
    fake = FakeRunPodApi(created_at=CREATED, cost=1.0)
    yield fake
    fake.close()


@pytest.fixture
def agent_proc(tmp_path: Path, api: FakeRunPodApi) -> Iterator[AgentProcess]:
    proc = start_agent(agent_env(tmp_path / "workspace", JOB, api))
    yield proc
    proc.stop()


# --- the door: token and paths ---------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/health"),
    ("GET", "/files/config.json"),
    ("PUT", "/files/config.json?offset=0"),
    ("POST", "/files/config.json/commit"),
    ("POST", "/start"),
    ("GET", "/events?since_seq=0"),
    ("GET", "/log?offset=0"),
    ("GET", "/artifacts"),
    ("GET", "/artifacts/output/x.bin?offset=0&length=10"),
    ("POST", "/cancel"),
    ("POST", "/heartbeat"),
    ("POST", "/artifacts/confirm"),
    ("GET", "/no-such-endpoint"),
]


def test_every_endpoint_answers_401_without_or_with_a_wrong_token(
    agent_proc: AgentProcess, tmp_path: Path
) -> None:
    # FTDESK_AGENT_PORT=0 is any free port (an ephemeral one), never the default 8000 that
    # two test workers' agents would both try to take.
    assert agent_proc.port != 8000
    for token in (None, "", "wrong-token", JOB_TOKEN + "x", JOB_TOKEN[:-1]):
        for method, path in ENDPOINTS:
            status, body, _ = agent_proc.request(method, path, b"{}", token=token)
            assert status == 401, (method, path, token, status)
            assert json.loads(body) == {"error": "unauthorized"}
    # nothing was started or written by the refused requests
    job = tmp_path / "workspace" / JOB
    assert not (job / "config.json").exists()
    assert not (job / ".training-started").exists()
    assert agent_proc.json("GET", "/health")["state"] == "waiting"


def test_paths_out_of_the_job_folder_are_refused(agent_proc: AgentProcess, tmp_path: Path) -> None:
    job = tmp_path / "workspace" / JOB
    outside = tmp_path / "outside"
    outside.mkdir()
    (job / "data").mkdir()
    os.symlink(outside / "stolen.jsonl", job / "data" / "link.jsonl")
    os.symlink(outside, job / "output")
    (outside / "secret.txt").write_text("secret")
    for name in (
        "../escape.json",
        "data/../../escape.json",
        "%2e%2e/escape.json",
        "/etc/passwd",
        "/" + str(outside / "abs.json"),
        "data/link.jsonl",
        "train.jsonl",
        "checkpoints/x",
    ):
        status, body, _ = agent_proc.request("PUT", f"/files/{name}?offset=0", b"payload")
        assert status == 400, (name, status, body)
        assert "not allowed" in json.loads(body)["error"] or "out of the job" in body.decode()
    for path in ("../config.json", "output/secret.txt", "checkpoints/../../x", "/etc/passwd"):
        status, _, _ = agent_proc.request("GET", f"/artifacts/{path}?offset=0&length=9")
        assert status in (400, 404), (path, status)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not (tmp_path / "workspace" / "escape.json").exists()
    assert agent_proc.json("GET", "/artifacts")["files"] == []  # the linked output/ is not listed


def _upload(proc: AgentProcess, name: str, data: bytes, chunk: int = 7) -> None:
    offset = proc.json("GET", f"/files/{name}")["offset"]
    while offset < len(data):
        part = data[offset : offset + chunk]
        offset = proc.json("PUT", f"/files/{name}?offset={offset}", part)["offset"]
    body = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert proc.json("POST", f"/files/{name}/commit", body)["size"] == len(data)


def test_an_interrupted_upload_resumes_and_a_wrong_sha256_leaves_nothing(
    agent_proc: AgentProcess, tmp_path: Path
) -> None:
    job = tmp_path / "workspace" / JOB
    data = bytes(range(256)) * 40
    # the first connection sends two chunks and is "cut"
    assert agent_proc.json("PUT", "/files/data/train.jsonl?offset=0", data[:1000])["offset"] == 1000
    agent_proc.json("PUT", "/files/data/train.jsonl?offset=1000", data[1000:3000])
    # a resend at a stale offset is refused with where it stands
    status, body, _ = agent_proc.request("PUT", "/files/data/train.jsonl?offset=1000", b"x")
    assert status == 409 and "resume from 3000" in json.loads(body)["error"]
    # the next connection asks where to resume and finishes
    state = agent_proc.json("GET", "/files/data/train.jsonl")
    assert state == {"name": "data/train.jsonl", "offset": 3000, "committed": False}
    _upload(agent_proc, "data/train.jsonl", data, chunk=4096)
    assert (job / "data" / "train.jsonl").read_bytes() == data

    # a wrong sha256: refused, and neither the partial nor a target is left
    agent_proc.json("PUT", "/files/config.json?offset=0", b'{"a": 1}')
    wrong = {"sha256": hashlib.sha256(b"other").hexdigest(), "size": 8}
    status, body, _ = agent_proc.request("POST", "/files/config.json/commit", wrong)
    assert status == 400 and "upload it again" in json.loads(body)["error"]
    assert not (job / "config.json").exists()
    assert agent_proc.json("GET", "/files/config.json") == {
        "name": "config.json",
        "offset": 0,
        "committed": False,
    }
    assert list((job / ".uploads").iterdir()) == []


# --- a real training run through the agent ---------------------------------------------------


def _environ_of(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def test_a_real_run_streams_events_log_and_artifacts_and_never_sees_the_runpod_key(
    tmp_path: Path, demo_template: Path
) -> None:
    sentinel = "rpa_SENTINEL_9f8e7d6c5b4a"
    workspace = tmp_path / "workspace"
    env = agent_env(workspace, JOB, None, RUNPOD_API_KEY=sentinel, RUNPOD_POD_ID=POD_ID)
    env["FTDESK_RUNPOD_API_URL"] = "http://127.0.0.1:9/v2"  # never reached: nothing triggers
    proc = start_agent(env)
    try:
        config = json.loads((demo_template / "config.json").read_text())
        config["model"]["name_or_path"] = str(demo_template / "model")
        config["dataset"]["path"] = "data/train.jsonl"
        config["training"]["max_steps"] = 3
        config["training"]["save_steps"] = 3
        _upload(proc, "data/train.jsonl", (demo_template / "train.jsonl").read_bytes(), 65536)
        _upload(proc, "config.json", json.dumps(config).encode(), 65536)
        started = proc.json("POST", "/start", {})
        pid = started["pid"]
        environ = _environ_of(pid)  # read while it runs
        assert b"FTDESK_POD_WORKSPACE=" in environ  # it is the trainer's environment
        assert sentinel.encode() not in environ and JOB_TOKEN.encode() not in environ
        assert proc.request("POST", "/start", {})[0] == 409  # never twice
        wait_until(lambda: proc.json("GET", "/health")["state"] == "ended", "the run to end", 240)
        health = proc.json("GET", "/health")
        assert health["exit_code"] == 0, proc.request("GET", "/log?offset=0")[1][-3000:]

        events, since = [], -1
        while True:
            page = proc.json("GET", f"/events?since_seq={since}")
            events += page["events"]
            since = page["last_seq"]
            if not page["more"]:
                break
        kinds = [e["kind"] for e in events]
        assert "metric" in kinds and [e["seq"] for e in events] == sorted(
            {e["seq"] for e in events}
        )
        assert health["last_seq"] == events[-1]["seq"]
        assert proc.json("GET", f"/events?since_seq={since}")["events"] == []

        log, offset = b"", 0
        while True:
            status, chunk, headers = proc.request("GET", f"/log?offset={offset}")
            log += chunk
            offset = int(headers["X-Next-Offset"])
            if offset >= int(headers["X-Log-Size"]):
                break
        assert log == (workspace / JOB / "train.log").read_bytes() and log

        wait_until(lambda: proc.json("GET", "/artifacts")["pending"] == 0, "hashes", 60)
        files = proc.json("GET", "/artifacts")["files"]
        assert any(f["path"].startswith("output/") for f in files)
        assert any(f["path"].startswith("checkpoints/") for f in files)
        for entry in files:
            whole, offset = b"", 0
            while offset < entry["size"]:
                status, chunk, headers = proc.request(
                    "GET", f"/artifacts/{entry['path']}?offset={offset}&length=100000"
                )
                assert status == 200 and chunk
                whole += chunk
                offset += len(chunk)
            assert whole == (workspace / JOB / entry["path"]).read_bytes()
            assert hashlib.sha256(whole).hexdigest() == entry["sha256"]
    finally:
        proc.stop()
    files = [p for p in workspace.rglob("*") if p.is_file() and not p.is_symlink()]
    assert [p for p in files if sentinel.encode() in p.read_bytes()] == []


# --- the watchdog ----------------------------------------------------------------------------


STAND_IN_READY = "stand-in-ready.txt"


def _stand_in_trainer(tmp_path: Path, *, runs: bool) -> Path:
    """An executable that stands where the trainer's Python would: it ignores its arguments
    and either runs until SIGTERM (recording that it got it) or ends at once. A running one
    says when its trap is set: a SIGTERM before that (a loaded machine, seen in CI) ends the
    shell unrecorded, so a test waits for it (`_wait_for_trap`) before it cancels."""
    script = tmp_path / "trainer-python"
    body = (
        "#!/bin/sh\ntrap 'echo got-sigterm > \"$PWD/sigterm.txt\"; exit 0' TERM\n"
        f'echo ready > "$PWD/{STAND_IN_READY}"\n'
        "i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n"
        if runs
        else "#!/bin/sh\nexit 0\n"
    )
    script.write_text(body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def _agent(tmp_path: Path, clock: FakeClock, *, trainer: str | None = None) -> Agent:
    job = tmp_path / "workspace" / JOB
    job.mkdir(parents=True)
    agent = Agent(job, dict(os.environ), clock)
    if trainer is not None:
        (job / "config.json").write_text("{}")
        python = _stand_in_trainer(tmp_path, runs=trainer == "runs")
        (job / ".runtime.json").write_text(json.dumps({"state": "ready", "python": str(python)}))
        agent.start()
        if trainer == "runs":
            _wait_for_trap(job)
    return agent


def _wait_for_trap(job: Path) -> None:
    wait_until((job / STAND_IN_READY).exists, "the stand-in trainer to set its SIGTERM trap")


def _watchdog(agent: Agent, clock: FakeClock, api: FakeRunPodApi, **limits: float) -> Watchdog:
    return Watchdog(
        WatchdogLimits(**limits),  # type: ignore[arg-type]
        agent,
        agent.job_dir,
        PodApi(api.url, POD_ID, POD_KEY),
        clock,
    )


def _record(agent: Agent) -> dict[str, object]:
    return dict(json.loads((agent.job_dir / "agent.json").read_text()))


def test_budget_cancels_the_trainer_then_deletes_by_runpods_clock(
    tmp_path: Path, api: FakeRunPodApi
) -> None:
    # The local clock says one minute since creation; RunPod's says two hours.
    clock = FakeClock(CREATED_EPOCH + 60)
    api.server_time = CREATED_EPOCH + 7200
    agent = _agent(tmp_path, clock, trainer="runs")
    dog = _watchdog(agent, clock, api, budget_usd=1.5, cancel_grace_s=120)
    dog.tick()
    assert api.deletes() == []  # the trainer checkpoints first
    wait_until(lambda: not agent.training_running(), "the trainer to stop on SIGTERM")
    assert (agent.job_dir / "sigterm.txt").read_text().strip() == "got-sigterm"
    dog.tick()
    assert [(d.path, d.authorization) for d in api.deletes()] == [
        (f"/v2/pods/{POD_ID}", f"Bearer {POD_KEY}")
    ]
    record = _record(agent)
    assert record["final"] is True and record["reason"] == "budget reached"
    assert record["pod_deleted"] is True
    assert 1.99 < float(record["spent_usd"]) < 2.01  # type: ignore[arg-type]
    assert str(record["at"]).startswith("2026-01-01T02:00")


def test_max_runtime_deletes_by_runpods_clock_not_the_local_one(
    tmp_path: Path, api: FakeRunPodApi
) -> None:
    clock = FakeClock(CREATED_EPOCH + 60)
    agent = _agent(tmp_path, clock)
    api.server_time = CREATED_EPOCH + 1800
    dog = _watchdog(agent, clock, api, max_runtime_s=3600, clock_sync_s=60)
    dog.tick()
    assert api.deletes() == []  # half an hour on RunPod's clock
    api.server_time = CREATED_EPOCH + 3601
    clock.sleep(61)  # the local clock moved one minute; the next sync reads RunPod's time
    dog.tick()
    assert len(api.deletes()) == 1
    assert _record(agent)["reason"] == "max runtime reached"


def test_confirmed_artifacts_delete_at_once_after_training_ended(
    tmp_path: Path, api: FakeRunPodApi
) -> None:
    clock = FakeClock(CREATED_EPOCH + 60)
    agent = _agent(tmp_path, clock, trainer="ends")
    dog = _watchdog(agent, clock, api, keepalive_s=1800)
    wait_until(lambda: agent.ended_at() is not None, "the trainer to end")
    dog.tick()
    assert api.deletes() == []
    agent.confirm()
    dog.tick()  # no time passed
    assert len(api.deletes()) == 1
    assert _record(agent)["reason"] == "artifacts confirmed"


def test_keep_alive_deletes_after_training_ended(tmp_path: Path, api: FakeRunPodApi) -> None:
    clock = FakeClock(CREATED_EPOCH + 60)
    agent = _agent(tmp_path, clock, trainer="ends")
    dog = _watchdog(agent, clock, api, keepalive_s=1800)
    wait_until(lambda: agent.ended_at() is not None, "the trainer to end")
    clock.sleep(1799)
    agent.heartbeat()
    dog.tick()
    assert api.deletes() == []
    clock.sleep(1)
    dog.tick()
    assert len(api.deletes()) == 1
    assert _record(agent)["reason"] == "keep-alive passed"


def test_a_lost_heartbeat_deletes_an_idle_pod(tmp_path: Path, api: FakeRunPodApi) -> None:
    clock = FakeClock(CREATED_EPOCH + 60)
    agent = _agent(tmp_path, clock)
    dog = _watchdog(agent, clock, api, lease_s=300)
    clock.sleep(290)
    agent.heartbeat()
    clock.sleep(300)
    dog.tick()
    assert api.deletes() == []
    clock.sleep(1)
    dog.tick()
    assert len(api.deletes()) == 1
    assert _record(agent)["reason"] == "heartbeat lost"


def test_a_late_heartbeat_never_stops_a_running_training(
    tmp_path: Path, api: FakeRunPodApi
) -> None:
    clock = FakeClock(CREATED_EPOCH + 60)
    api.server_time = CREATED_EPOCH + 60
    agent = _agent(tmp_path, clock, trainer="runs")
    dog = _watchdog(agent, clock, api, lease_s=300, budget_usd=100, max_runtime_s=86400)
    for _ in range(5):
        clock.sleep(400)
        dog.tick()
    assert agent.training_running()
    assert api.deletes() == [] and not (agent.job_dir / "agent.json").exists()
    assert not (agent.job_dir / "sigterm.txt").exists()
    agent.cancel_training()
    wait_until(lambda: not agent.training_running(), "the stand-in to stop")


def test_a_failed_delete_is_retried_with_backoff_and_404_is_done(
    tmp_path: Path, api: FakeRunPodApi
) -> None:
    clock = FakeClock(CREATED_EPOCH + 60)
    agent = _agent(tmp_path, clock)
    api.fail_deletes = 2
    dog = _watchdog(agent, clock, api, lease_s=10)
    clock.sleep(11)
    dog.tick()
    dog.tick()  # backoff: not yet
    assert len(api.deletes()) == 1 and not dog.deleted
    clock.sleep(5)
    dog.tick()
    assert len(api.deletes()) == 2 and not dog.deleted
    clock.sleep(5)
    dog.tick()  # the backoff doubled
    assert len(api.deletes()) == 2
    clock.sleep(5)
    dog.tick()
    assert len(api.deletes()) == 3 and dog.deleted
    record = _record(agent)
    assert record["pod_deleted"] is True and record["reason"] == "heartbeat lost"
    # Someone else deleted it first: 404 counts as done.
    other = _watchdog(_agent(tmp_path / "second", clock), clock, api, lease_s=10)
    clock.sleep(11)
    other.tick()
    assert other.deleted and len(api.deletes()) == 4


def test_the_agents_own_watchdog_thread_deletes_an_abandoned_pod(
    tmp_path: Path, api: FakeRunPodApi
) -> None:
    env = agent_env(
        tmp_path / "workspace", JOB, api, FTDESK_LEASE_S="0.3", FTDESK_WATCHDOG_INTERVAL_S="0.05"
    )
    proc = start_agent(env)
    try:
        record_path = tmp_path / "workspace" / JOB / "agent.json"

        def deleted() -> bool:  # the record is rewritten once RunPod answered the DELETE
            return record_path.exists() and json.loads(record_path.read_text())["pod_deleted"]

        wait_until(deleted, "the watchdog's DELETE and its record")
        assert [d.authorization for d in api.deletes()] == [f"Bearer {POD_KEY}"]
        assert json.loads(record_path.read_text())["reason"] == "heartbeat lost"
        # the agent keeps answering after the delete was sent
        assert proc.json("GET", "/health")["watchdog"]["deleted"] is True
    finally:
        proc.stop()


def test_a_record_that_cannot_be_written_does_not_keep_the_pod_alive(
    tmp_path: Path, api: FakeRunPodApi
) -> None:
    clock = FakeClock(CREATED_EPOCH + 60)
    agent = _agent(tmp_path, clock)
    # agent.json's temporary file cannot be written: a folder is in its place.
    (agent.job_dir / f".agent.json.{os.getpid()}.tmp").mkdir()
    dog = _watchdog(agent, clock, api, lease_s=10)
    clock.sleep(11)
    dog.tick()
    assert len(api.deletes()) == 1 and dog.deleted


def test_cancel_sends_sigterm_to_the_trainer_and_confirm_waits_for_its_end(
    tmp_path: Path, api: FakeRunPodApi
) -> None:
    job = tmp_path / "workspace" / JOB
    job.mkdir(parents=True)
    python = _stand_in_trainer(tmp_path, runs=True)
    (job / ".runtime.json").write_text(json.dumps({"state": "installing"}))
    proc = start_agent(agent_env(tmp_path / "workspace", JOB, api))
    try:
        _upload(proc, "config.json", b"{}")
        status, body, _ = proc.request("POST", "/start", {})
        assert status == 409 and "installing" in json.loads(body)["error"]
        (job / ".runtime.json").write_text(json.dumps({"state": "ready", "python": str(python)}))
        assert proc.json("POST", "/start", {})["started"] is True
        _wait_for_trap(job)
        assert proc.request("POST", "/artifacts/confirm", {})[0] == 409  # still training
        assert proc.json("POST", "/cancel", {}) == {"cancelled": True}
        wait_until(lambda: proc.json("GET", "/health")["state"] == "ended", "the trainer to end")
        assert (job / "sigterm.txt").read_text().strip() == "got-sigterm"
        assert proc.json("POST", "/cancel", {}) == {"cancelled": False}
        assert proc.json("POST", "/artifacts/confirm", {}) == {"confirmed": True}
        wait_until(lambda: len(api.deletes()) == 1, "the DELETE right after the confirmation")
    finally:
        proc.stop()


def test_uploads_are_refused_once_training_started(tmp_path: Path, api: FakeRunPodApi) -> None:
    clock = FakeClock(CREATED_EPOCH + 60)
    agent = _agent(tmp_path, clock, trainer="runs")
    try:
        config_before = (agent.job_dir / "config.json").read_bytes()
        with pytest.raises(AgentError, match="training started") as refused:
            agent.upload_chunk("config.json", 0, b'{"changed": true}')
        assert refused.value.status == 409
        with pytest.raises(AgentError, match="training started"):
            agent.commit("config.json", {"sha256": "0" * 64, "size": 1})
        assert (agent.job_dir / "config.json").read_bytes() == config_before
        assert list((agent.job_dir / ".uploads").iterdir()) == []
    finally:
        agent.cancel_training()
        wait_until(lambda: not agent.training_running(), "the stand-in to stop")


def test_the_artifact_list_answers_before_a_big_file_is_hashed(
    agent_proc: AgentProcess, tmp_path: Path
) -> None:
    big = tmp_path / "workspace" / JOB / "output" / "model.safetensors"
    big.parent.mkdir(parents=True)
    with open(big, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse: big to hash, cheap to make
    first = agent_proc.json("GET", "/artifacts")
    assert first == {
        "files": [{"path": "output/model.safetensors", "size": 64 * 1024 * 1024, "sha256": None}],
        "pending": 1,
    }
    wait_until(lambda: agent_proc.json("GET", "/artifacts")["pending"] == 0, "the hash")
    digest = hashlib.sha256(bytes(64 * 1024 * 1024)).hexdigest()
    assert agent_proc.json("GET", "/artifacts")["files"][0]["sha256"] == digest


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_poll_during_a_commit_sees_before_or_after_never_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A state poll is unlocked (it never waits on a commit's hashing), so a commit can rename
    the part into place between any two of its looks at the disk: seen from CI, a poll that
    checked exists() then stat() failed with FileNotFoundError. The commit is made to land at
    the poll's first look at the part, just before or just after that look."""
    data = b'{"text": "hello"}\n'
    agent = Agent(tmp_path / JOB, dict(os.environ), FakeClock(CREATED_EPOCH))
    agent.upload_chunk("data/train.jsonl", 0, data)
    part = agent.job_dir / ".uploads" / "data__train.jsonl.part"
    assert part.is_file()
    commit = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    real_exists, real_stat = Path.exists, Path.stat
    landed: list[str] = []

    def race(path: Path, real: Callable[..., object], *args: object, **kwargs: object) -> object:
        if path != part or landed:
            return real(path, *args, **kwargs)
        landed.append(when)
        if when == "before":
            agent.commit("data/train.jsonl", commit)
            return real(path, *args, **kwargs)
        seen = real(path, *args, **kwargs)
        agent.commit("data/train.jsonl", commit)
        return seen

    monkeypatch.setattr(Path, "exists", lambda p, *a, **k: race(p, real_exists, *a, **k))
    monkeypatch.setattr(Path, "stat", lambda p, *a, **k: race(p, real_stat, *a, **k))
    state = agent.upload_state("data/train.jsonl")
    monkeypatch.undo()
    assert landed == [when], "the commit landed inside the poll"
    # Read before the rename, the part's size is the whole file; after it, nothing is left.
    offset = len(data) if when == "after" else 0
    assert state == {"name": "data/train.jsonl", "offset": offset, "committed": True}
    assert (agent.job_dir / "data" / "train.jsonl").read_bytes() == data


def test_the_artifact_list_skips_a_checkpoint_rotated_away_while_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """save_total_limit removes old checkpoints while the app lists artifacts: a file that goes
    between the walk and its stat is left out, never a failed request."""
    agent = Agent(tmp_path / JOB, dict(os.environ), FakeClock(CREATED_EPOCH))
    old = agent.job_dir / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors"
    new = agent.job_dir / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors"
    for path in (old, new):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"weights")

    def rotating(job_dir: Path) -> Iterator[Path]:
        for path in artifact_files(job_dir):
            if path == old:
                path.unlink()  # the trainer's rotation, right after the walk saw it
            yield path

    monkeypatch.setattr("trainer.agent.artifact_files", rotating)
    listed = agent.artifacts()
    assert [f["path"] for f in listed["files"]] == [
        "checkpoints/checkpoint-2/adapter_model.safetensors"
    ]
