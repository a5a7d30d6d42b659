"""Crash sentences, exit codes, the console ring buffer, and how a config maps onto TRL/PEFT."""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any

import pytest

from trainer.config import TrainingConfig
from trainer.console import ConsoleTee
from trainer.errors import ModelNotAvailableError, exit_code_for, explain_exception
from trainer.ranks import is_main_process, process_rank


def _config(**overrides: Any) -> TrainingConfig:
    data: dict[str, Any] = {
        "model": {"name_or_path": "/models/tiny"},
        "dataset": {"path": "/data/train.jsonl"},
    }
    for key, value in overrides.items():
        data[key] = value
    return TrainingConfig.model_validate(data)


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which is recognised by name."""


class LocalEntryNotFoundError(FileNotFoundError):
    """Named like huggingface_hub's error for a file missing from the cache in offline mode."""


def test_out_of_memory_suggests_batch_size_checkpointing_and_qlora() -> None:
    message = explain_exception(OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert "per_device_batch_size" in message
    assert "gradient_checkpointing" in message
    assert "qlora" in message
    assert exit_code_for(OutOfMemoryError()) == 1


def test_wrapped_cause_is_explained() -> None:
    try:
        try:
            raise LocalEntryNotFoundError("Cannot find the requested files in the local cache")
        except LocalEntryNotFoundError as inner:
            raise OSError("We couldn't load the model") from inner
    except OSError as outer:
        message = explain_exception(outer)
    assert "not on disk" in message and "HF_HUB_OFFLINE" in message


class SafetensorError(Exception):
    """Named like safetensors' error for a file whose header cannot be read."""


def test_a_file_failing_to_load_while_resuming_names_the_checkpoint_not_the_model() -> None:
    checkpoint = Path("/jobs/j/checkpoints/checkpoint-40")
    error = SafetensorError("Error while deserializing header: header too large")
    message = explain_exception(error, checkpoint=checkpoint)
    assert "checkpoint 40" in message and str(checkpoint) in message
    assert "the model" not in message and "download" not in message
    # Without a checkpoint being loaded it is a weights file of the model.
    assert "download the model again" in explain_exception(error)


def test_disk_full_and_unknown_errors() -> None:
    assert "disk is full" in explain_exception(OSError(errno.ENOSPC, "No space left on device"))
    message = explain_exception(ZeroDivisionError("division by zero"))
    assert "ZeroDivisionError" in message and "division by zero" in message


def test_input_errors_exit_2_with_their_own_message() -> None:
    exc = ModelNotAvailableError("The model 'x/y' is not on disk")
    assert exit_code_for(exc) == 2
    assert explain_exception(exc) == "The model 'x/y' is not on disk"


def test_console_tee_keeps_the_last_lines(capsys: pytest.CaptureFixture[str]) -> None:
    tee = ConsoleTee(max_lines=5).install()
    try:
        for i in range(20):
            print(f"line {i}")
        sys.stderr.write("progress 10%\rprogress 90%\rprogress 100%\n")
        sys.stderr.write("partial")
    finally:
        tee.uninstall()
    assert tee.last_lines(50) == [
        "line 16",
        "line 17",
        "line 18",
        "line 19",
        "progress 100%",
        "partial",
    ]
    assert tee.last_lines(2) == ["progress 100%", "partial"]
    assert "line 0" in capsys.readouterr().out  # everything still reaches the real stream


def test_console_tee_masks_secrets_even_split_over_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "hf_abcdefghijklmnop"
    tee = ConsoleTee(secrets=[secret]).install()
    try:
        print("token:", secret)
        sys.stdout.write("split hf_abcd")  # the rest follows in the next write
        sys.stdout.write("efghijklmnop done\n")
        sys.stderr.write(f"Traceback: ValueError({secret!r})\n")
        sys.stdout.write("ends with h")  # a prefix held back, released on uninstall
    finally:
        tee.uninstall()
    captured = capsys.readouterr()
    assert secret not in captured.out and secret not in captured.err
    assert captured.out == "token: ***\nsplit *** done\nends with h"
    assert "ValueError('***')" in captured.err
    assert not any(secret in line for line in tee.last_lines())


def test_rank_zero_is_the_only_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert is_main_process()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")  # global rank wins over the local one
    assert process_rank() == 0 and is_main_process()


def test_precision_per_device() -> None:
    from trainer.errors import TrainerInputError
    from trainer.recipe import resolve_precision

    cfg = _config()
    assert resolve_precision(cfg, "cpu", False).load_dtype == "float32"
    gpu = resolve_precision(cfg, "cuda", True)
    assert gpu.bf16 and not gpu.fp16 and gpu.load_dtype == "bfloat16"
    old_gpu = resolve_precision(cfg, "cuda", False)
    assert old_gpu.fp16 and old_gpu.load_dtype == "float16"
    full_fp16 = resolve_precision(
        _config(method="full", model={"name_or_path": "/m", "dtype": "fp16"}), "cuda", False
    )
    assert full_fp16.fp16 and full_fp16.load_dtype == "float32"  # fp32 master weights
    with pytest.raises(TrainerInputError, match="fp16"):
        resolve_precision(_config(model={"name_or_path": "/m", "dtype": "fp16"}), "cpu", False)


def test_lora_and_qlora_configs() -> None:
    import torch

    from trainer.recipe import build_peft_config, build_quantization_config

    cfg = _config(
        method="qlora",
        lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "use_dora": True},
        quantization={"quant_type": "nf4", "double_quant": True, "compute_dtype": "bf16"},
    )
    lora = build_peft_config(cfg)
    assert lora.r == 4 and lora.lora_alpha == 8 and lora.use_dora
    assert set(lora.target_modules) == {"q_proj", "v_proj"}
    bnb = build_quantization_config(cfg)
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4"
    assert bnb.bnb_4bit_use_double_quant and bnb.bnb_4bit_compute_dtype == torch.bfloat16
    assert build_quantization_config(_config()) is None
    assert build_peft_config(_config(method="full")) is None
    assert build_peft_config(_config(lora={"use_rslora": True})).use_rslora


def test_sft_config_maps_the_training_section(tmp_path: Path) -> None:
    from trainer.recipe import Precision, build_sft_config

    cfg = _config(
        dataset={"path": "/data/train.jsonl", "eval_split": 0.1, "max_length": 256},
        training={
            "max_steps": 100,
            "per_device_batch_size": 2,
            "gradient_accumulation_steps": 4,
            "learning_rate": 1e-4,
            "lr_scheduler": "cosine",
            "warmup_ratio": 0.1,
            "eval_steps": 10,
            "save_steps": 20,
            "early_stopping_patience": 3,
            "gradient_checkpointing": True,
            "seed": 7,
        },
    )
    args = build_sft_config(
        cfg,
        tmp_path,
        "cpu",
        Precision("float32", False, False),
        has_eval=True,
        record_format="messages",
    )
    assert args.output_dir == str(tmp_path / "checkpoints")
    assert args.max_steps == 100 and args.gradient_accumulation_steps == 4
    assert args.per_device_train_batch_size == 2 and args.learning_rate == 1e-4
    assert args.eval_strategy == "steps" and args.eval_steps == 10
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"
    assert args.assistant_only_loss and args.max_length == 256
    assert args.gradient_checkpointing and args.seed == 7 and args.data_seed == 7
    assert not args.bf16 and not args.fp16 and args.use_cpu
    text = build_sft_config(
        _config(),
        tmp_path,
        "cpu",
        Precision("float32", False, False),
        has_eval=False,
        record_format="text",
    )
    assert not text.assistant_only_loss and text.eval_strategy == "no"


def test_cpu_threads_one_for_tiny_models() -> None:
    from trainer.recipe import cpu_threads_for

    assert cpu_threads_for(300_000, cores=16) == 1
    assert cpu_threads_for(1_000_000_000, cores=16, local_world_size=2) == 8


def test_only_complete_checkpoints_are_resumable(tmp_path: Path) -> None:
    from trainer.job_dir import find_checkpoints

    for step, complete in ((10, True), (20, True), (30, False)):
        folder = tmp_path / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoints" / "checkpoint-x").mkdir()
    assert [s for s, _ in find_checkpoints(tmp_path)] == [10, 20]
