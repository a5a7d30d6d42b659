"""`python -m trainer run` on the demo: real LoRA and full fine-tuning on the CPU.

Each training run is made once per module (or session) and shared by the assertions on it.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trainer.protocol import (
    ArtifactEvent,
    ErrorEvent,
    MetricEvent,
    StatusEvent,
    read_all_events,
    read_status,
)

pytestmark = pytest.mark.slow

RunTrainer = Callable[..., subprocess.CompletedProcess[str]]


def _losses(job: Path) -> list[tuple[int, float]]:
    return [
        (e.step, e.loss)
        for e in read_all_events(job / "events.jsonl")
        if isinstance(e, MetricEvent) and e.loss is not None
    ]


def _edit_config(job: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = job / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _assert_events_well_formed(job: Path) -> None:
    raw_lines = (job / "events.jsonl").read_text(encoding="utf-8").splitlines()
    events = read_all_events(job / "events.jsonl")
    assert len(events) == len(raw_lines), "every line must parse as an event"
    seqs = [e.seq for e in events]
    assert all(b > a for a, b in itertools.pairwise(seqs)), "seq must strictly increase"


@pytest.fixture(scope="module")
def full_job(
    tmp_path_factory: pytest.TempPathFactory, demo_template: Path, run_trainer: RunTrainer
) -> Path:
    job = tmp_path_factory.mktemp("full-run") / "job"
    shutil.copytree(demo_template, job)

    def full(cfg: dict[str, Any]) -> None:
        cfg["method"] = "full"
        cfg["training"]["learning_rate"] = 3e-3
        cfg["training"]["max_steps"] = 30

    _edit_config(job, full)
    result = run_trainer(job)
    assert result.returncode == 0, (job / "train.log").read_text(encoding="utf-8")[-3000:]
    return job


def test_lora_demo_trains_and_loss_drops(trained_lora_job: Path) -> None:
    job = trained_lora_job
    status = read_status(job)
    assert status is not None and status.state == "completed" and status.exit_code == 0
    assert status.last_step == 40 and status.total_steps == 40
    losses = _losses(job)
    assert [s for s, _ in losses] == list(range(1, 41))
    first = sum(v for _, v in losses[:3]) / 3
    last = sum(v for _, v in losses[-3:]) / 3
    assert last < first - 0.5, (first, last)
    assert status.final_loss == pytest.approx(losses[-1][1])
    _assert_events_well_formed(job)


def test_lora_events_tell_the_whole_story(trained_lora_job: Path) -> None:
    events = read_all_events(trained_lora_job / "events.jsonl")
    states = [e.state for e in events if isinstance(e, StatusEvent)]
    assert states[0] == "starting" and states[-1] == "completed"
    assert "training" in states and "saving" in states
    metric = next(e for e in events if isinstance(e, MetricEvent) and e.step == 5)
    assert metric.total_steps == 40 and metric.learning_rate is not None
    assert metric.grad_norm is not None and metric.tokens_seen and metric.tokens_seen > 0
    assert metric.samples_per_second and metric.samples_per_second > 0
    assert metric.eta_seconds is not None and metric.epoch is not None
    checkpoints = [
        e.step for e in events if isinstance(e, ArtifactEvent) and e.artifact == "checkpoint"
    ]
    assert checkpoints == [10, 20, 30, 40]
    adapter = [e for e in events if isinstance(e, ArtifactEvent) and e.artifact == "adapter"]
    assert len(adapter) == 1 and Path(adapter[0].path) == trained_lora_job / "output"


def test_lora_changes_adapter_weights_only_and_generates(trained_lora_job: Path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = trained_lora_job
    out = job / "output"
    base_before = load_file(str(job / "model" / "model.safetensors"))
    adapter = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(float(v.abs().max()) > 0 for v in lora_b), "LoRA B starts at zero"
    assert not any("lora" not in k for k in adapter), "only adapter weights are saved"

    base = AutoModelForCausalLM.from_pretrained(job / "model")
    model = PeftModel.from_pretrained(base, str(out))
    model.eval()
    # The base weights inside the PEFT model are the untouched demo weights.
    for name, tensor in model.base_model.model.state_dict().items():
        plain = name.replace(".base_layer", "")
        if plain in base_before:
            assert torch.equal(tensor, base_before[plain]), name

    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "count on from 41"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    new_tokens = generated[0, prompt["input_ids"].shape[1] :]
    assert len(new_tokens) >= 1
    assert isinstance(tokenizer.decode(new_tokens, skip_special_tokens=True), str)


def test_full_fine_tuning_trains_every_weight(full_job: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    status = read_status(full_job)
    assert status is not None and status.state == "completed" and status.last_step == 30
    losses = _losses(full_job)
    first = sum(v for _, v in losses[:3]) / 3
    last = sum(v for _, v in losses[-3:]) / 3
    assert last < first - 0.5, (first, last)
    _assert_events_well_formed(full_job)
    events = read_all_events(full_job / "events.jsonl")
    assert any(isinstance(e, ArtifactEvent) and e.artifact == "model" for e in events)

    before = load_file(str(full_job / "model" / "model.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(full_job / "output")
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed
    assert "lm_head.weight" in changed
    assert not (full_job / "output" / "adapter_config.json").exists()


def test_finished_job_is_never_trained_again(
    trained_lora_job: Path, run_trainer: RunTrainer
) -> None:
    status_before = (trained_lora_job / "status.json").read_bytes()
    output_before = {p.name: p.stat().st_mtime_ns for p in (trained_lora_job / "output").iterdir()}
    for args in ((), ("--resume",)):
        result = run_trainer(trained_lora_job, *args)
        assert result.returncode == 2
    assert (trained_lora_job / "status.json").read_bytes() == status_before
    after = {p.name: p.stat().st_mtime_ns for p in (trained_lora_job / "output").iterdir()}
    assert after == output_before
    assert "refusing to train again" in (trained_lora_job / "train.log").read_text()


def test_bad_config_exits_2_and_names_the_field(demo_dir: Path, run_trainer: RunTrainer) -> None:
    _edit_config(demo_dir, lambda c: c["training"].update(learning_rate=-1, warmup=0.1))
    result = run_trainer(demo_dir)
    assert result.returncode == 2
    status = read_status(demo_dir)
    assert status is not None and status.state == "failed" and status.exit_code == 2
    errors = [e for e in read_all_events(demo_dir / "events.jsonl") if isinstance(e, ErrorEvent)]
    assert len(errors) == 1
    assert "training.learning_rate" in errors[0].message
    assert "training.warmup" in errors[0].message and "unknown field" in errors[0].message
    assert "training.learning_rate" in status.message


def test_offline_missing_model_fails_fast_with_a_sentence(
    demo_dir: Path, tmp_path: Path, run_trainer: RunTrainer
) -> None:
    _edit_config(demo_dir, lambda c: c["model"].update(name_or_path="no-such-org/no-such-model"))
    started = time.monotonic()
    result = run_trainer(
        demo_dir, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert elapsed < 30, elapsed  # process start included; no network wait
    errors = [e for e in read_all_events(demo_dir / "events.jsonl") if isinstance(e, ErrorEvent)]
    assert "not on disk" in errors[0].message and "offline" in errors[0].message
    status = read_status(demo_dir)
    assert status is not None and status.state == "failed" and "not on disk" in status.message


def test_missing_local_model_folder_is_named(demo_dir: Path, run_trainer: RunTrainer) -> None:
    shutil.rmtree(demo_dir / "model")
    _edit_config(demo_dir, lambda c: c["model"].update(name_or_path="./model"))
    result = run_trainer(demo_dir)
    assert result.returncode == 2
    status = read_status(demo_dir)
    assert status is not None and "not on disk" in status.message and "model" in status.message


def test_bad_data_exits_2_with_line_numbers(demo_dir: Path, run_trainer: RunTrainer) -> None:
    lines = (demo_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()
    lines[4] = '{"messages": [{"role": "bot", "content": "hi"}]}'
    lines[9] = "{not json"
    (demo_dir / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_trainer(demo_dir)
    assert result.returncode == 2
    errors = [e for e in read_all_events(demo_dir / "events.jsonl") if isinstance(e, ErrorEvent)]
    assert "line 5" in errors[0].message and "line 10" in errors[0].message
    assert not (demo_dir / "checkpoints").exists(), "no model is loaded for unusable data"


def test_resume_without_checkpoint_refuses(demo_dir: Path, run_trainer: RunTrainer) -> None:
    # Only a save interrupted mid-way (no trainer_state.json): nothing to resume from.
    (demo_dir / "checkpoints" / "checkpoint-20").mkdir(parents=True)
    result = run_trainer(demo_dir, "--resume")
    assert result.returncode == 2
    assert "no complete checkpoint" in (demo_dir / "train.log").read_text(encoding="utf-8")
    # Refused before anything was written.
    assert not (demo_dir / "events.jsonl").exists()
    assert read_status(demo_dir) is None
    assert not (demo_dir / "output").exists()


_LEAK_TOKEN = """
import os

import trainer.data


def _leaky_load(*args, **kwargs):
    token = os.environ["HF_TOKEN"]
    print(f"authenticating with {token}", flush=True)
    raise RuntimeError(f"401 Unauthorized for token {token}")


trainer.data.load_training_data = _leaky_load
"""


def test_secrets_never_reach_the_job_dir(
    demo_dir: Path, tmp_path: Path, run_trainer: RunTrainer
) -> None:
    """A crash that prints HF_TOKEN and puts it in the exception: train.log, the events (log,
    error message, traceback, last lines) and status.json all carry *** instead."""
    import os

    sentinel = "hf_SENTINEL0123456789abcdef"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_LEAK_TOKEN, encoding="utf-8")
    root = Path(__file__).resolve().parents[1]
    pythonpath = os.pathsep.join([str(site), str(root), os.environ.get("PYTHONPATH", "")])
    result = run_trainer(demo_dir, env={"HF_TOKEN": sentinel, "PYTHONPATH": pythonpath})
    assert result.returncode == 1
    errors = [e for e in read_all_events(demo_dir / "events.jsonl") if isinstance(e, ErrorEvent)]
    assert len(errors) == 1
    assert "401 Unauthorized for token ***" in errors[0].message
    assert "401 Unauthorized for token ***" in errors[0].traceback
    assert "authenticating with ***" in errors[0].last_log_lines
    status = read_status(demo_dir)
    assert status is not None and status.state == "failed" and "token ***" in status.message
    assert "authenticating with ***" in (demo_dir / "train.log").read_text(encoding="utf-8")
    for path in demo_dir.rglob("*"):
        if path.is_file():
            assert sentinel.encode() not in path.read_bytes(), path


def test_crash_reports_failed_with_traceback_and_log_lines(
    demo_dir: Path, run_trainer: RunTrainer
) -> None:
    (demo_dir / "model" / "model.safetensors").write_bytes(b"not a safetensors file")
    result = run_trainer(demo_dir)
    assert result.returncode == 1
    status = read_status(demo_dir)
    assert status is not None and status.state == "failed" and status.exit_code == 1
    errors = [e for e in read_all_events(demo_dir / "events.jsonl") if isinstance(e, ErrorEvent)]
    assert len(errors) == 1
    error = errors[0]
    assert "damaged" in error.message and "download the model again" in error.message
    assert "SafetensorError" in error.exception_type
    assert "Traceback" in error.traceback
    assert any("loading model" in line for line in error.last_log_lines)
    assert any("320 training records" in line for line in error.last_log_lines)
