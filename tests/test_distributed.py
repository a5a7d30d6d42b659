"""Several training processes: the launch command per strategy, and real 2-process gloo runs.

The gloo runs use the demo with `hardware.cpu_processes: 2` on the CPU: `python -m trainer run`
starts torchrun itself, rank 0 alone reports, and a SIGTERM to the job's process group (what the
local provider sends) still ends in a checkpoint and `cancelled`.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trainer.config import TrainingConfig
from trainer.protocol import (
    ArtifactEvent,
    ErrorEvent,
    MetricEvent,
    StatusEvent,
    read_all_events,
    read_status,
)

RunTrainer = Callable[..., subprocess.CompletedProcess[str]]


def _gpu_config(strategy: str, **hardware: Any) -> TrainingConfig:
    return TrainingConfig.model_validate(
        {
            "model": {"name_or_path": "org/model"},
            "dataset": {"path": "/data/train.jsonl"},
            "hardware": {"device": "cuda", "num_gpus": 4, "strategy": strategy, **hardware},
        }
    )


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_launch_plan_for_four_gpus(strategy: str, tmp_path: Path) -> None:
    from trainer.launch import build_launch_plan

    plan = build_launch_plan(_gpu_config(strategy), tmp_path, resume=True, python="/py")
    argv = plan.argv
    # torchrun (through the signal shim), four workers on this machine, each `trainer run`.
    assert argv[:3] == ["/py", "-m", "trainer.launch"]
    assert "--standalone" in argv and _option(argv, "--nproc_per_node") == "4"
    assert _option(argv, "--signals_to_handle") == "SIGHUP,SIGQUIT"
    worker = argv[argv.index("-m", 3) :]
    assert worker == ["-m", "trainer", "run", "--job-dir", str(tmp_path), "--resume"]
    assert plan.nproc == 4 and plan.device == "cuda" and "CUDA_VISIBLE_DEVICES" not in plan.env
    json.dumps(plan.to_json())  # what launch.json holds

    targs = plan.training_args
    assert "ddp_backend" not in targs  # NCCL, accelerate's choice on GPUs
    if strategy == "ddp":
        assert "fsdp" not in targs and "deepspeed" not in targs
        assert targs["ddp_find_unused_parameters"] is False
    elif strategy == "fsdp":
        assert targs["fsdp"] in (True, "full_shard auto_wrap") and "deepspeed" not in targs
        fsdp = targs["fsdp_config"]
        assert fsdp["version"] == 2 and fsdp["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert fsdp["state_dict_type"] == "FULL_STATE_DICT"
    else:
        stage = 2 if strategy == "deepspeed_zero2" else 3
        ds = targs["deepspeed"]
        assert "fsdp" not in targs
        assert ds["zero_optimization"]["stage"] == stage
        for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
            assert ds[key] == "auto"  # filled in by the Trainer from the job's own settings
        assert ds["bf16"] == {"enabled": "auto"} and ds["gradient_clipping"] == "auto"
        gathers = ds["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save")
        assert gathers is (True if stage == 3 else None)
        json.loads(json.dumps(ds))


def test_fsdp_arguments_are_accepted_by_the_trainer(tmp_path: Path) -> None:
    from trainer.recipe import Precision, build_sft_config

    cfg = _gpu_config("fsdp")
    cfg.training.gradient_checkpointing = True
    args = build_sft_config(
        cfg, tmp_path, "cuda", Precision("float32", False, False), has_eval=False,
        record_format="messages",
    )  # fmt: skip
    assert args.fsdp and args.fsdp_plugin_args["fsdp_version"] == 2
    assert args.fsdp_plugin_args["state_dict_type"] == "FULL_STATE_DICT"
    # FSDP checkpoints activations itself; the Trainer's own checkpointing stays off.
    assert args.fsdp_plugin_args["activation_checkpointing"] is True
    field = (
        "activation_checkpointing"
        if hasattr(args, "activation_checkpointing")
        else "gradient_checkpointing"
    )
    assert getattr(args, field) is False


def test_cpu_processes_launch_gloo_on_the_cpu(tmp_path: Path) -> None:
    from trainer.launch import build_launch_plan

    cfg = TrainingConfig.model_validate(
        {
            "model": {"name_or_path": "org/model"},
            "dataset": {"path": "/data/train.jsonl"},
            "hardware": {"device": "cpu", "cpu_processes": 2, "num_gpus": 8},
        }
    )
    plan = build_launch_plan(cfg, tmp_path)
    assert _option(plan.argv, "--nproc_per_node") == "2" and "--resume" not in plan.argv
    assert plan.training_args["ddp_backend"] == "gloo" and plan.env["CUDA_VISIBLE_DEVICES"] == ""
    single = cfg.model_copy(
        update={"hardware": cfg.hardware.model_copy(update={"cpu_processes": 1})}
    )
    with pytest.raises(ValueError, match="more than one process"):
        build_launch_plan(single, tmp_path)


# --------------------------------------------------------------------------------------------
# Real runs: two CPU processes through torchrun with gloo


def _two_process_job(demo_template: Path, root: Path, steps: int, save_steps: int) -> Path:
    job = root / "job"
    shutil.copytree(demo_template, job)
    path = job / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["hardware"] = {"device": "cpu", "cpu_processes": 2}
    cfg["training"].update(max_steps=steps, save_steps=save_steps, per_device_batch_size=4)
    path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return job


def _log(job: Path) -> str:
    return (job / "train.log").read_text(encoding="utf-8", errors="replace")


@pytest.mark.slow
def test_two_gloo_processes_write_one_set_of_events_and_one_output(
    tmp_path: Path, demo_template: Path, run_trainer: RunTrainer
) -> None:
    steps = 6
    job = _two_process_job(demo_template, tmp_path, steps=steps, save_steps=3)
    result = run_trainer(job)
    log = _log(job)
    assert result.returncode == 0, log[-4000:]
    assert "rank 1: events and output are written by rank 0" in log  # two workers ran
    launch = json.loads((job / "distributed.json").read_text(encoding="utf-8"))
    assert launch["nproc"] == 2 and launch["training_args"]["ddp_backend"] == "gloo"

    status = read_status(job)
    assert status is not None and status.state == "completed" and status.exit_code == 0
    assert status.last_step == steps

    raw_lines = (job / "events.jsonl").read_text(encoding="utf-8").splitlines()
    events = read_all_events(job / "events.jsonl")
    assert len(events) == len(raw_lines)
    assert all(b.seq > a.seq for a, b in itertools.pairwise(events))
    metric_steps = [e.step for e in events if isinstance(e, MetricEvent) and e.loss is not None]
    assert metric_steps == list(range(1, steps + 1))  # each step once: one writer
    states = [e.state for e in events if isinstance(e, StatusEvent)]
    assert states.count("starting") == 1 and states.count("completed") == 1
    assert states[-1] == "completed"
    outputs = [e for e in events if isinstance(e, ArtifactEvent) and e.artifact == "adapter"]
    assert len(outputs) == 1
    # Per-step console lines come from rank 0 only.
    assert sum(1 for line in log.splitlines() if line.startswith(f"step {steps}/{steps}")) == 1

    # One output, loadable with peft, with an adapter that moved away from its initial zeros.
    assert not (job / ".output.partial").exists()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(job / "model", dtype=torch.float32)
    model = PeftModel.from_pretrained(base, job / "output")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().sum()) > 0 for p in lora_b)


def assert_all_gone(workers: list[Any]) -> None:
    """Every worker process ends (workers notice a vanished launcher within ~1 s)."""
    import psutil

    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not [w.pid for w in alive if w.status() != psutil.STATUS_ZOMBIE]


def _wait_for(predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer ended early with {proc.returncode}")
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_sigterm_to_the_process_group_checkpoints_and_cancels(
    tmp_path: Path, demo_template: Path
) -> None:
    import psutil

    job = _two_process_job(demo_template, tmp_path, steps=400, save_steps=1000)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(name, None)
    with open(job / "train.log", "w", encoding="utf-8") as log:
        # As the local provider starts it: a session of its own, output to a file.
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainer", "run", "--job-dir", str(job)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:

        def trained_two_steps() -> bool:
            path = job / "events.jsonl"
            return path.exists() and any(
                isinstance(e, MetricEvent) and e.step >= 2 for e in read_all_events(path)
            )

        _wait_for(trained_two_steps, 120, proc)
        workers = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log_text = _log(job)
    assert code == 0, log_text[-4000:]
    status = read_status(job)
    assert status is not None and status.state == "cancelled", log_text[-3000:]
    assert status.last_checkpoint is not None
    step = int(Path(status.last_checkpoint).name.split("-")[1])
    assert 2 <= step < 400 and status.last_step == step
    assert (Path(status.last_checkpoint) / "trainer_state.json").is_file()
    assert "without a final checkpoint" not in log_text  # one signal per worker, not two
    events = read_all_events(job / "events.jsonl")
    assert [e.state for e in events if isinstance(e, StatusEvent)][-1] == "cancelled"
    assert not (job / "output").exists()
    assert_all_gone(workers)


@pytest.mark.slow
def test_a_killed_rank_0_leaves_a_failed_status_written_by_the_supervisor(
    tmp_path: Path, demo_template: Path
) -> None:
    import psutil

    job = _two_process_job(demo_template, tmp_path, steps=400, save_steps=1000)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(name, None)
    with open(job / "train.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainer", "run", "--job-dir", str(job)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:

        def training() -> bool:
            path = job / "events.jsonl"
            return path.exists() and any(isinstance(e, MetricEvent) for e in read_all_events(path))

        _wait_for(training, 120, proc)
        workers = psutil.Process(proc.pid).children(recursive=True)
        rank0 = [w for w in workers if w.environ().get("RANK") == "0"]
        assert len(rank0) == 1
        rank0[0].kill()  # rank 0 never gets to write its final word
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log_text = _log(job)
    assert code == 1, log_text[-3000:]
    status = read_status(job)
    assert status is not None and status.state == "failed" and status.exit_code == 1
    assert "launcher exited with code" in status.message
    events = read_all_events(job / "events.jsonl")
    assert [e.state for e in events if isinstance(e, StatusEvent)][-1] == "failed"
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and errors[0].last_log_lines
    assert_all_gone(workers)
