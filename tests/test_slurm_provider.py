"""The Slurm provider against a real single-node Slurm cluster reached over a real sshd.

The fixtures (`tests/slurm_cluster.py`) start munged, mariadbd + slurmdbd (so `sacct` answers),
slurmctld, slurmd and an sshd on loopback, as root; elsewhere these tests skip with the reason,
and under `FTDESK_REQUIRE_SLURM=1` (CI) they fail instead. The "cluster" is this machine: its
Python is the cluster's trainer runtime and a temp folder is its shared file system.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, SshServer

from desktop.core.ingest import ingest
from desktop.core.runtime import TrainerRuntime
from desktop.core.store import JobStore
from desktop.models import ClusterProfile, Job, JobState, Settings, SlurmOptions
from desktop.providers.base import Capability, ProviderContext, get_provider_factory
from desktop.providers.slurm.provider import SlurmProvider
from desktop.providers.slurm.records import load_slurm_record
from trainer.config import load_config
from trainer.protocol import MetricEvent, read_all_events

pytest_plugins = ["slurm_cluster"]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]

DEADLINE_S = 300.0


def profile_for(ssh: SshServer, work: Path, **fields: object) -> ClusterProfile:
    """The cluster as a person would set it up: this host over the loopback sshd."""
    return ClusterProfile.model_validate(
        {
            "host": "127.0.0.1",
            "user": "root",
            "port": ssh.port,
            "work_dir": str(work),
            "python": sys.executable,
            "key_file": str(ssh.client_key),
            "known_hosts": str(ssh.known_hosts),
            "partition": "debug",
            "time_limit": "10:00",
            **fields,
        }
    )


def provider_for(
    ssh: SshServer,
    home: Path,
    work: Path,
    profile: dict[str, object] | None = None,
    **options: object,
) -> SlurmProvider:
    settings = Settings(
        cancel_grace_s=60,
        slurm=SlurmOptions.model_validate(
            {
                "clusters": {"lab": profile_for(ssh, work, **(profile or {}))},
                "cluster": "lab",
                **options,
            }
        ),
    )
    return SlurmProvider(ProviderContext(settings, home, TrainerRuntime()), ssh_retry_s=20)


def demo_job(demo_dir: Path, job_id: str, **training: object) -> Job:
    config_path = demo_dir / "config.json"
    data = json.loads(config_path.read_text(encoding="utf-8"))
    data["training"].update({"max_steps": 6, **training})
    config_path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return Job(
        id=job_id, name=job_id, provider="slurm", config=load_config(config_path), job_dir=demo_dir
    )


async def watch(provider: SlurmProvider, store: JobStore, job: Job, until: object = None) -> Job:
    """Poll and ingest as the service's watcher does, until the job is final (or `until(job)`)."""
    end = time.monotonic() + DEADLINE_S
    while not job.is_final and not (until and until(job)):  # type: ignore[operator]
        assert time.monotonic() < end, f"job still {job.state} after {DEADLINE_S} s"
        update = await provider.poll(job)
        job = (await asyncio.to_thread(ingest, store, job, update)).job
        await asyncio.sleep(0.5)
    return job


def launched(store: JobStore, job: Job) -> Job:
    store.add_job(job, "created")
    return job


def test_the_registry_builds_it_with_honest_capabilities(tmp_path: Path) -> None:
    import desktop.providers.slurm  # noqa: F401 (registers "slurm")

    built = get_provider_factory("slurm")(ProviderContext(Settings(), tmp_path, TrainerRuntime()))
    assert built.name == "slurm"
    assert built.capabilities == {Capability.MULTI_GPU, Capability.REATTACH}


def test_the_demo_job_runs_through_slurm_and_its_artifacts_come_home(
    cluster: tuple[SlurmCluster, SshServer], demo_dir: Path, tmp_path: Path
) -> None:
    slurm, ssh = cluster
    home, work = tmp_path / "home", tmp_path / "work"
    store = JobStore(home / "ftdesk.sqlite3")
    job = launched(store, demo_job(demo_dir, "20261202-120000-slrm"))

    async def scenario() -> Job:
        provider = provider_for(ssh, home, work)
        handle = await provider.launch(job)
        assert handle.extra["slurm_job_id"].isdigit()
        current = store.get_job(job.id).model_copy(update={"handle": handle})

        # Watched by a provider built afresh (the app restarted): slurm.json is all it needs.
        fresh = provider_for(ssh, home, work)
        try:
            return await watch(fresh, store, current)
        finally:
            await provider.aclose()
            await fresh.aclose()

    done = asyncio.run(scenario())
    assert done.state is JobState.COMPLETED, done.state_reason
    record = load_slurm_record(demo_dir)
    assert record is not None and record.slurm_job_id is not None
    # Slurm itself says the job completed, with exit code 0.
    sacct = slurm.run("sacct", "-n", "-X", "-P", "-j", record.slurm_job_id, "-o", "State,ExitCode")
    assert sacct.stdout.split() == ["COMPLETED|0:0"]
    # The metrics in the store are the trainer's events, each step once.
    events = read_all_events(demo_dir / "events.jsonl")
    losses = [(e.step, e.loss) for e in events if isinstance(e, MetricEvent) and e.loss is not None]
    assert [step for step, _ in losses] == list(range(1, 7))
    stored = store.series_columns(job.id)["loss"]
    assert list(zip(stored.steps, stored.values, strict=True)) == losses
    # The artifacts are home, byte for byte, and the remote folder went only after that.
    outputs = sorted(p for p in (demo_dir / "output").rglob("*") if p.is_file())
    assert any(p.name.startswith("adapter_model") for p in outputs), outputs
    assert not (work / f"ftdesk-{job.id}").exists()
    # The whole log is kept: the batch script's lines and the trainer's.
    log = (demo_dir / "train.log").read_text(encoding="utf-8")
    assert f"Slurm job {record.slurm_job_id}" in log and "trainer exited with code 0" in log
    passed = [t.new for t in store.transitions(job.id)]
    assert JobState.PROVISIONING in passed or JobState.STARTING in passed
    assert JobState.TRAINING in passed and passed[-1] is JobState.COMPLETED


def trainer_pids(remote_dir: Path) -> list[int]:
    """The trainer processes of a job (the cluster is this machine)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "trainer run --job-dir" in cmd and str(remote_dir) in cmd and "srun" not in cmd:
            found.append(proc.pid)
    return found


def log_has(job_dir: Path, text: str) -> bool:
    path = job_dir / "train.log"
    return path.exists() and text in path.read_text(encoding="utf-8", errors="replace")


def term_pending(pid: int) -> bool:
    """Whether SIGTERM waits for the (stopped) process `pid` (the kernel's own record)."""
    bit = 1 << (signal.SIGTERM - 1)
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return any(
            line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit
            for line in status
        )


async def until_term_pending(pids: list[int], deadline: float, why: str) -> None:
    """Wait until every held process has its SIGTERM pending (no timing luck)."""
    while not all(term_pending(pid) for pid in pids):
        assert time.monotonic() < deadline, why
        await asyncio.sleep(0.1)


async def cancel_while_held(provider: SlurmProvider, job: Job, pids: list[int]) -> None:
    """Cancel with the trainer processes held between two steps, released once each has its
    SIGTERM pending: the cancel lands mid-run on any machine."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    cancelling = asyncio.create_task(provider.cancel(job))
    try:
        await until_term_pending(pids, time.monotonic() + 60, "the trainer never got SIGTERM")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    await cancelling


async def started(provider: SlurmProvider, store: JobStore, job: Job) -> Job:
    """Launch `job` and return its stored snapshot with the handle, as the service does."""
    handle = await provider.launch(job)
    return store.get_job(job.id).model_copy(update={"handle": handle})


def test_cancel_checkpoints_and_a_resume_continues_from_it(
    cluster: tuple[SlurmCluster, SshServer], demo_dir: Path, tmp_path: Path
) -> None:
    _, ssh = cluster
    home, work = tmp_path / "home", tmp_path / "work"
    store = JobStore(home / "ftdesk.sqlite3")
    job = launched(store, demo_job(demo_dir, "20261202-120000-canc", max_steps=400, save_steps=100))
    remote = work / f"ftdesk-{job.id}"

    async def scenario() -> tuple[Job, Job]:
        provider = provider_for(ssh, home, work)
        try:
            current = await started(provider, store, job)
            current = await watch(provider, store, current, until=lambda j: (j.step or 0) >= 3)
            pids = trainer_pids(remote)
            assert len(pids) == 1
            await cancel_while_held(provider, current, pids)
            assert log_has(remote, "SIGTERM from Slurm"), "the batch shell never got the cancel"
            cancelled = await watch(provider, store, current)
            assert cancelled.state is JobState.CANCELLED, cancelled.state_reason
            # Resume: the same job again with --resume, as the service's resume launches it.
            again = store.transition(cancelled, JobState.QUEUED, "resume", resume=True, handle=None)
            again = await started(provider, store, again)
            return cancelled, await watch(provider, store, again)
        finally:
            await provider.aclose()

    cancelled, done = asyncio.run(scenario())
    assert cancelled.last_checkpoint is not None
    saved = int(str(cancelled.last_checkpoint).rsplit("-", 1)[1])
    assert 3 <= saved < 400
    assert done.state is JobState.COMPLETED, done.state_reason
    events = read_all_events(demo_dir / "events.jsonl")
    steps = [e.step for e in events if isinstance(e, MetricEvent) and e.loss is not None]
    # The cancelled attempt stopped at its checkpoint and the resumed one went on after it:
    # no step was trained twice.
    assert steps == list(range(1, 401)), steps
    stored = store.series_columns(job.id)["loss"]
    assert list(stored.steps) == list(range(1, 401)), "one unbroken curve, each step once"
    assert log_has(demo_dir, f"checkpoint-{saved}")


def test_two_processes_cancel_with_one_checkpoint_resume_and_write_one_set_of_events(
    cluster: tuple[SlurmCluster, SshServer], demo_dir: Path, tmp_path: Path
) -> None:
    _, ssh = cluster
    home, work = tmp_path / "home", tmp_path / "work"
    store = JobStore(home / "ftdesk.sqlite3")
    job = launched(
        store, demo_job(demo_dir, "20261202-120000-twop", max_steps=300, save_steps=1000)
    )
    remote = work / f"ftdesk-{job.id}"

    async def scenario() -> tuple[Job, Job]:
        provider = provider_for(ssh, home, work, tasks_per_node=2)
        try:
            current = await started(provider, store, job)
            current = await watch(provider, store, current, until=lambda j: (j.step or 0) >= 2)
            workers = [p for p in trainer_pids(remote) if p not in launcher_pids(remote)]
            assert len(workers) == 2, workers
            await cancel_while_held(provider, current, workers)
            assert log_has(remote, "SIGTERM from Slurm"), "the batch shell never got the cancel"
            cancelled = await watch(provider, store, current)
            again = store.transition(cancelled, JobState.QUEUED, "resume", resume=True, handle=None)
            again = await started(provider, store, again)
            return cancelled, await watch(provider, store, again)
        finally:
            await provider.aclose()

    cancelled, done = asyncio.run(scenario())
    # One SIGTERM per worker: they finished the step and saved (a second one stops a worker
    # without its checkpoint).
    assert cancelled.state is JobState.CANCELLED, cancelled.state_reason
    assert "checkpoint saved" in cancelled.state_reason, cancelled.state_reason
    assert done.state is JobState.COMPLETED, done.state_reason
    log = (demo_dir / "train.log").read_text(encoding="utf-8")
    # Two trainer processes ran (their own words), and rank 0 alone reported.
    assert "rank 1: events and output are written by rank 0" in log
    events = read_all_events(demo_dir / "events.jsonl")
    steps = [e.step for e in events if isinstance(e, MetricEvent) and e.loss is not None]
    assert steps == list(range(1, 301)), "one set of events, each step once"
    assert any(p.name.startswith("adapter_model") for p in (demo_dir / "output").rglob("*"))


def launcher_pids(remote_dir: Path) -> list[int]:
    """The `trainer.launch` processes (torchrun) of a job."""
    import psutil

    return [
        proc.pid
        for proc in psutil.process_iter(["cmdline"])
        if "trainer.launch" in " ".join(proc.info["cmdline"] or [])
        and str(remote_dir) in " ".join(proc.info["cmdline"] or [])
    ]


def test_an_unknown_host_key_is_refused_with_the_sentence(
    cluster: tuple[SlurmCluster, SshServer], demo_dir: Path, tmp_path: Path
) -> None:
    from desktop.providers.slurm.ssh import HostKeyError

    slurm, ssh = cluster
    strangers = tmp_path / "known_hosts"
    strangers.write_text("")  # a known_hosts without this host
    job = demo_job(demo_dir, "20261202-120000-hkey")
    provider = provider_for(
        ssh, tmp_path / "home", tmp_path / "work", profile={"known_hosts": str(strangers)}
    )

    async def scenario() -> None:
        try:
            with pytest.raises(HostKeyError) as caught:
                await provider.launch(job)
            message = str(caught.value)
            assert f"[127.0.0.1]:{ssh.port}" in message and "ssh-keyscan" in message
        finally:
            await provider.aclose()

    asyncio.run(scenario())
    assert strangers.read_text() == "", "the key was not accepted behind the user's back"
    queue = slurm.run("squeue", "-h", "-o", "%j")
    assert "ftdesk-20261202-120000-hkey" not in queue.stdout, "nothing was submitted"


def _remote_max_step(remote: Path) -> int:
    path = remote / "events.jsonl"
    if not path.exists():
        return 0
    steps = [
        e.step for e in read_all_events(path) if isinstance(e, MetricEvent) and e.loss is not None
    ]
    return max(steps, default=0)


def test_sshd_down_mid_run_and_an_app_restart_lose_and_double_nothing(
    cluster: tuple[SlurmCluster, SshServer], demo_dir: Path, tmp_path: Path
) -> None:
    _, ssh = cluster
    home, work = tmp_path / "home", tmp_path / "work"
    store = JobStore(home / "ftdesk.sqlite3")
    job = launched(store, demo_job(demo_dir, "20261202-120000-sshd", max_steps=60, save_steps=20))
    remote = work / f"ftdesk-{job.id}"

    async def scenario() -> Job:
        first = provider_for(ssh, home, work)
        handle = await first.launch(job)
        current = store.get_job(job.id).model_copy(update={"handle": handle})
        current = await watch(first, store, current, until=lambda j: (j.step or 0) >= 2)
        before = current.step or 0
        ssh.stop()  # the login node's sshd goes away, and every session with it
        try:
            # The job keeps training on the cluster meanwhile (its own files say so) ...
            deadline = time.monotonic() + 120
            while _remote_max_step(remote) <= before + 1:
                assert time.monotonic() < deadline, "training stopped with sshd"
                await asyncio.sleep(0.2)
            # ... while a poll waits for the cluster to answer again.
            polling = asyncio.create_task(first.poll(current))
            await asyncio.sleep(1.0)
            assert not polling.done(), "the poll gave up at once instead of reconnecting"
        finally:
            ssh.start()
        update = await polling
        current = (await asyncio.to_thread(ingest, store, current, update)).job
        assert (current.step or 0) > before
        # The app is killed (nothing closed) and started again: a new provider reattaches by
        # the Slurm job id in slurm.json.
        second = provider_for(ssh, home, work)
        try:
            return await watch(second, store, current)
        finally:
            await second.aclose()

    done = asyncio.run(scenario())
    assert done.state is JobState.COMPLETED, done.state_reason
    events = read_all_events(demo_dir / "events.jsonl")
    steps = [e.step for e in events if isinstance(e, MetricEvent) and e.loss is not None]
    assert steps == list(range(1, 61)), "the mirror lost or doubled events"
    assert list(store.series_columns(job.id)["loss"].steps) == list(range(1, 61))
    log = (demo_dir / "train.log").read_text(encoding="utf-8")
    assert log.count("Slurm job ") == 1 and log.count("trainer exited with code 0") == 1


def test_a_time_limit_checkpoints_requeues_and_resumes_to_one_unbroken_curve(
    cluster: tuple[SlurmCluster, SshServer], demo_dir: Path, tmp_path: Path
) -> None:
    import math
    import re

    slurm, ssh = cluster
    home, work = tmp_path / "home", tmp_path / "work"
    store = JobStore(home / "ftdesk.sqlite3")
    job = launched(store, demo_job(demo_dir, "20261202-120000-tlim", max_steps=400, save_steps=20))
    remote = work / f"ftdesk-{job.id}"

    async def scenario() -> tuple[Job, str]:
        provider = provider_for(ssh, home, work, profile={"signal_lead_s": 45})
        try:
            handle = await provider.launch(job)
            sid = handle.extra["slurm_job_id"]
            current = store.get_job(job.id).model_copy(update={"handle": handle})
            current = await watch(
                provider, store, current, until=lambda j: j.last_checkpoint is not None
            )
            # Held between two steps, so the time limit lands mid-run on any machine.
            pids = trainer_pids(remote)
            assert len(pids) == 1
            os.kill(pids[0], signal.SIGSTOP)
            shown = slurm.run("scontrol", "show", "job", sid).stdout
            h, m, s = (int(x) for x in re.search(r"RunTime=(\d+):(\d+):(\d+)", shown).groups())  # type: ignore[union-attr]
            elapsed = h * 3600 + m * 60 + s
            # The shortest limit whose 45 s warning still comes after now and, with Slurm's
            # 30 s check period, before the limit itself: 1 minute on a machine of normal speed.
            minutes = max(1, math.ceil((elapsed + 50) / 60))
            slurm.run("scontrol", "update", f"JobId={sid}", f"TimeLimit={minutes}")
            deadline = time.monotonic() + minutes * 60 + 60
            try:
                await until_term_pending(pids, deadline, "no SIGTERM before the time limit")
            finally:
                os.kill(pids[0], signal.SIGCONT)
            assert log_has(remote, "SIGTERM from Slurm")
            while "PENDING" not in slurm.run("squeue", "-h", "-j", sid, "-o", "%T").stdout:
                assert time.monotonic() < deadline + 120, "the job was not requeued"
                await asyncio.sleep(0.2)
            # As an admin would: the next attempt gets room to finish. (It starts once the old
            # credential expired: `cred_expire=10` in this cluster's slurm.conf.)
            slurm.run("scontrol", "update", f"JobId={sid}", "TimeLimit=10")
            return await watch(provider, store, current), sid
        finally:
            await provider.aclose()

    done, sid = asyncio.run(scenario())
    assert done.state is JobState.COMPLETED, done.state_reason
    attempts = slurm.run("sacct", "-n", "-X", "-D", "-P", "-j", sid, "-o", "JobID,State")
    assert len(attempts.stdout.split()) == 2, attempts.stdout  # restart count 1
    assert done.handle is not None and done.handle.extra["restarts"] == "1"
    events = read_all_events(demo_dir / "events.jsonl")
    steps = [e.step for e in events if isinstance(e, MetricEvent) and e.loss is not None]
    assert steps == list(range(1, 401)), "each step once: the requeued attempt resumed"
    assert list(store.series_columns(job.id)["loss"].steps) == list(range(1, 401))
    log = (demo_dir / "train.log").read_text(encoding="utf-8")
    assert "requeueing (restart 1" in log and "resuming from the newest checkpoint" in log
