"""Several GPUs in one pod: the create asks for them, the pod's trainer runs one process per GPU
through the multi-process launcher (`trainer.launch`), and one set of events reaches the store.

The emulator's pods have no GPU, so the demo (pinned to the CPU) plays a 2-GPU pod with two gloo
processes, exactly the path a local `cpu_processes: 2` run takes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from decimal import Decimal
from pathlib import Path

import pytest
from runpod_emulator.runpod_jobs import RTX, demo_job, provider_for, served_pods, watch

from desktop.cli.runpod_flags import add_runpod_flags, runpod_settings
from desktop.core.errors import ConfigError
from desktop.core.store import JobStore
from desktop.models import JobState, Settings
from desktop.providers.runpod.pod_files import load_record, pod_config
from trainer.protocol import MetricEvent, StatusEvent, read_all_events

STEPS = 3


@pytest.mark.slow
def test_a_two_gpu_pod_runs_two_trainer_processes_and_writes_one_set_of_events(
    demo_dir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    store = JobStore(home / "ftdesk.sqlite3")
    job = demo_job(demo_dir, "20261202-120000-2gpu", max_steps=STEPS)
    store.add_job(job, "created")
    with served_pods(tmp_path / "pods") as (emulator, runner):
        provider = provider_for(emulator, home, gpu_count=2)

        async def scenario() -> tuple[object, object]:
            handle = await provider.launch(job)
            launched = store.get_job(job.id).model_copy(update={"handle": handle})
            return handle, await watch(provider, store, launched)

        handle, done = asyncio.run(scenario())
        assert emulator.live_pods() == []
    assert getattr(done, "state", None) is JobState.COMPLETED, getattr(done, "state_reason", "")

    # The create asked for two GPUs, billed per GPU.
    create = next(r for r in emulator.requests if (r.method, r.path) == ("POST", "/v2/pods"))
    assert create.body["gpu"] == {"id": RTX, "count": 2, "minCudaVersion": "12.8"}
    assert getattr(handle, "extra", {})["cost_per_hour"] == str(Decimal("0.69") * 2)

    # Two trainer processes ran, by the trainer's own word: the launcher's report in the pod's
    # job folder, the supervisor's line and rank 1's line in the mirrored log.
    record = load_record(demo_dir)
    assert record is not None and record.deleted
    pod_job = runner.root / record.pod_id / "workspace" / job.id
    launched = json.loads((pod_job / "distributed.json").read_text(encoding="utf-8"))
    assert launched["nproc"] == 2 and launched["argv"][1:3] == ["-m", "trainer.launch"]
    assert launched["training_args"]["ddp_backend"] == "gloo"
    log = (demo_dir / "train.log").read_text(encoding="utf-8")
    assert "launching 2 cpu processes (ddp)" in log
    assert "rank 1: events and output are written by rank 0" in log

    # One set of events: each step once, one start, one end, in a strictly increasing stream.
    events = read_all_events(demo_dir / "events.jsonl")
    assert all(b.seq > a.seq for a, b in itertools.pairwise(events))
    steps = [e.step for e in events if isinstance(e, MetricEvent) and e.loss is not None]
    assert steps == list(range(1, STEPS + 1))
    states = [e.state for e in events if isinstance(e, StatusEvent)]
    assert states.count("starting") == 1 and states[-1] == "completed"
    assert store.series_columns(job.id)["loss"].steps == tuple(range(1, STEPS + 1))


def test_the_pod_config_runs_one_process_per_gpu(demo_dir: Path) -> None:
    job = demo_job(demo_dir, "20261202-120000-cfg1")
    cpu, _ = pod_config(job, 2)
    assert cpu.hardware.cpu_processes == 2 and cpu.world_size == 2
    gpu_job = job.model_copy(
        update={
            "config": job.config.model_copy(
                update={"hardware": job.config.hardware.model_copy(update={"device": "auto"})}
            )
        }
    )
    on_gpus, _ = pod_config(gpu_job, 4)
    assert on_gpus.hardware.num_gpus == 4 and on_gpus.world_size == 4
    single, _ = pod_config(job)
    assert single.world_size == 1


def _flags(*args: str) -> Settings:
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", default="local")
    add_runpod_flags(parser)
    return runpod_settings(parser.parse_args(list(args)), Settings())


def test_gpu_count_flag() -> None:
    settings = _flags("--provider", "runpod", "--gpu", RTX, "--gpu-count", "2")
    assert settings.runpod.gpu_count == 2
    assert _flags("--provider", "runpod", "--gpu", RTX).runpod.gpu_count == 1
    for bad, said in (("0", "--gpu-count '0'"), ("two", "--gpu-count 'two'"), ("9", "gpu_count")):
        with pytest.raises(ConfigError, match=said):
            _flags("--provider", "runpod", "--gpu", RTX, "--gpu-count", bad)
    with pytest.raises(ConfigError, match="--gpu-count only apply with --provider runpod"):
        _flags("--gpu-count", "2")
