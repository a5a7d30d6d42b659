"""Settings applied to a running `JobService` reach the next launch, as they do from the CLI.

The window changes offline mode and the trainer Python through `JobService.apply_settings`; the
local provider was built before, so this proves it is told: the next trainer's environment (read
from /proc/<pid>/environ) has the offline variables, and it runs in the new interpreter (a
wrapper that records its use and then execs the real Python). A job that was running keeps
running and keeps being watched.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from desktop.core.service import JobService
from desktop.core.store import JobStore
from desktop.models import Job, JobState, Settings
from desktop.providers.offline import OFFLINE_ENV

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/environ"),
]

# Offline variables the test session itself does not set (conftest sets the HF ones), so their
# presence in a trainer's environment can only come from offline mode.
OWN_OFFLINE_VARS = ("WANDB_MODE", "DO_NOT_TRACK", "HF_HUB_DISABLE_TELEMETRY")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("FTDESK_HOME", str(folder))
    for name in OWN_OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)
    return folder


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(): value.decode(errors="replace") for key, value in pairs}


def _config(folder: Path, demo: Path) -> Path:
    data = json.loads((demo / "config.json").read_text(encoding="utf-8"))
    data["model"]["name_or_path"] = str(demo / "model")
    data["dataset"]["path"] = str(demo / "train.jsonl")
    data["training"]["max_steps"] = 100000  # runs until cancelled
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _wrapper(folder: Path) -> tuple[Path, Path]:
    """A trainer Python that notes each use (its arguments) and then is the real one."""
    record = folder / "wrapper-used.txt"
    script = folder / "wrapped-python"
    script.write_text(
        f'#!/bin/sh\necho "$@" >> "{record}"\nexec "{sys.executable}" "$@"\n', encoding="utf-8"
    )
    script.chmod(0o755)
    return script, record


async def _ended(service: JobService, job: Job) -> Job:
    await service.cancel(job.id)
    job = await service.wait(job.id, timeout=120)
    assert job.is_final, job
    return job


def test_offline_mode_and_trainer_python_reach_the_next_launch(
    home: Path, tmp_path: Path, demo_template: Path
) -> None:
    config = _config(tmp_path / "cfg", demo_template)
    wrapper, record = _wrapper(tmp_path)
    base = Settings(gpu_slots=0, cancel_grace_s=5.0, poll_interval_s=0.2)

    async def go() -> None:
        service = JobService(JobStore(), settings=base, offline=False)
        first = await service.launch(config, "local")
        assert first.handle is not None and first.handle.pid is not None
        online_env = _environ(first.handle.pid)
        assert not any(name in online_env for name in OWN_OFFLINE_VARS)

        # What the Settings dialog does: offline on, another trainer Python.
        service.apply_settings(
            base.model_copy(update={"trainer_python": str(wrapper)}), offline=True
        )
        assert service.runtime.offline and service.runtime.python == str(wrapper)
        # The running job is untouched and still watched.
        assert service.is_watching(first.id)
        assert (await service.poll_once(first.id)).state in (
            JobState.STARTING,
            JobState.TRAINING,
            JobState.QUEUED,
        )
        first = await _ended(service, first)

        second = await service.launch(config, "local")
        assert second.handle is not None and second.handle.pid is not None
        offline_env = _environ(second.handle.pid)
        for name, value in OFFLINE_ENV.items():
            assert offline_env.get(name) == value, name
        # The launch returns once the wrapper is started, maybe before its `echo` ran.
        used = f"-m trainer run --job-dir {second.job_dir}"
        deadline = asyncio.get_running_loop().time() + 60
        while used not in (uses := record.read_text(encoding="utf-8")):
            assert asyncio.get_running_loop().time() < deadline, uses
            await asyncio.sleep(0.05)
        assert str(first.job_dir) not in uses  # the first job ran with the old Python
        await _ended(service, second)
        await service.close()

    asyncio.run(go())


def test_apply_settings_tells_a_provider_built_before(home: Path) -> None:
    """A provider built before the change hears of it (the bug was that it never did)."""
    service = JobService(JobStore(), settings=Settings())
    provider = service.provider("local")
    assert not service.runtime.offline
    service.apply_settings(service.settings, offline=True)
    assert service.runtime.offline
    from desktop.providers.local import LocalProvider

    assert isinstance(provider, LocalProvider) and provider.offline
    service.apply_settings(Settings(trainer_python="/opt/other/python3"), offline=True)
    assert provider.python == "/opt/other/python3" and provider.offline
    asyncio.run(service.close())
