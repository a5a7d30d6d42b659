"""The recipe: how a job's config becomes the training stack's objects.

Device and precision, the quantization and PEFT configs, TRL's `SFTConfig` (with the strategy's
arguments from `trainer.strategy`), the CPU thread pool, and the `SFTTrainer` subclass a job
trains with. Each is a function of the config, unit-tested without training; the run's
lifecycle (`trainer.run`) calls them in order. Heavy libraries are imported inside the
functions that use them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config import TrainingConfig
from trainer.errors import TrainerInputError
from trainer.protocol import CHECKPOINTS_DIR
from trainer.strategy import strategy_training_args, uses_trainer_checkpointing

__all__ = [
    "SAVE_CHECKPOINT_PARAMETERS",
    "Precision",
    "apply_liger_kernels",
    "build_peft_config",
    "build_quantization_config",
    "build_sft_config",
    "check_liger_kernels",
    "configure_threads",
    "cpu_threads_for",
    "job_trainer_class",
    "optimizer_for",
    "resolve_device",
    "resolve_precision",
]


@dataclass(frozen=True)
class Precision:
    """How weights are loaded and whether mixed precision runs."""

    load_dtype: str  # "float32" | "bfloat16" | "float16"
    bf16: bool
    fp16: bool


def resolve_device(config: TrainingConfig) -> str:
    """'cuda' or 'cpu' for this run.

    Raises:
        TrainerInputError: hardware.device is 'cuda' (or the method needs CUDA) and none is
            visible.
    """
    import torch

    has_cuda = torch.cuda.is_available()
    wanted = config.hardware.device
    if wanted == "cpu":
        return "cpu"
    if wanted == "cuda" and not has_cuda:
        raise TrainerInputError(
            "hardware.device is 'cuda' but no CUDA GPU is visible to the trainer; check the "
            "driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, or set hardware.device to 'cpu'."
        )
    if config.method == "qlora" and not has_cuda:
        raise TrainerInputError(
            "method 'qlora' needs a CUDA GPU and none is visible; use method 'lora' or 'full'."
        )
    return "cuda" if has_cuda else "cpu"


def resolve_precision(config: TrainingConfig, device: str, bf16_supported: bool) -> Precision:
    """Weights dtype and mixed precision from model.dtype ('auto': bf16/fp16 on GPU, fp32 on CPU).

    fp16 mixed precision keeps trainable weights in fp32 (the grad scaler needs fp32 master
    weights), so full fine-tuning in fp16 loads fp32 weights; adapters load a fp16 base.
    """
    dtype = config.model.dtype
    if dtype == "auto":
        dtype = "fp32" if device == "cpu" else ("bf16" if bf16_supported else "fp16")
    if dtype == "bf16":
        return Precision("bfloat16", bf16=True, fp16=False)
    if dtype == "fp16":
        if device == "cpu":
            raise TrainerInputError(
                "model.dtype 'fp16' needs a GPU (mixed fp16 training does not run on the CPU); "
                "use 'fp32' or 'bf16' on the CPU."
            )
        load = "float32" if config.method == "full" else "float16"
        return Precision(load, bf16=False, fp16=True)
    return Precision("float32", bf16=False, fp16=False)


def build_quantization_config(config: TrainingConfig) -> Any:
    """The bitsandbytes 4-bit config for method 'qlora' (None for other methods)."""
    if config.method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    compute = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    q = config.quantization
    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=compute[q.compute_dtype],
        bnb_4bit_quant_storage=compute[q.compute_dtype],
    )


def build_peft_config(config: TrainingConfig) -> Any:
    """PEFT's LoraConfig for methods lora/qlora; None for full fine-tuning."""
    if config.method == "full":
        return None
    from peft import LoraConfig

    lora = config.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules
        if isinstance(lora.target_modules, str)
        else list(lora.target_modules),
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def optimizer_for(config: TrainingConfig, device: str) -> str:
    """The Trainer's `optim`: AdamW becomes PyTorch's fused AdamW on CUDA (one kernel per
    step for all parameters instead of several per tensor; the same update and the same
    state, so checkpoints resume either way). DeepSpeed brings its own optimizer."""
    optimizer = config.training.optimizer
    deepspeed = config.world_size > 1 and config.hardware.strategy.startswith("deepspeed")
    if optimizer == "adamw_torch" and device == "cuda" and not deepspeed:
        return "adamw_torch_fused"
    return optimizer


def check_liger_kernels(config: TrainingConfig, device: str) -> None:
    """Refuse `training.liger_kernels` where it cannot work, before the model loads.

    Raises:
        TrainerInputError: the package is missing, or there is no CUDA GPU.
    """
    if not config.training.liger_kernels:
        return
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is None:
        raise TrainerInputError(
            "training.liger_kernels is on but the liger-kernel package is not installed in the "
            "trainer's Python: install it (pip install 'finetune-desk[liger]') or turn "
            "training.liger_kernels off."
        )
    if device != "cuda":
        raise TrainerInputError(
            "training.liger_kernels needs a CUDA GPU (Liger's kernels are Triton kernels) and "
            "this run trains on the CPU: turn training.liger_kernels off."
        )


def apply_liger_kernels(config: TrainingConfig, model: Any) -> bool:
    """Patch the loaded model with Liger's kernels (RMSNorm, RoPE, SwiGLU, ...) when
    `training.liger_kernels` is on; True when applied. Liger's fused linear cross-entropy
    stays off: TRL computes the loss with its own fused LM head, which Liger's would replace."""
    if not config.training.liger_kernels:
        return False
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(model=model, fused_linear_cross_entropy=False)
    return True


def build_sft_config(
    config: TrainingConfig,
    job_dir: Path,
    device: str,
    precision: Precision,
    *,
    has_eval: bool,
    record_format: str,
) -> Any:
    """TRL's SFTConfig for this job (checkpoints go to `job_dir/checkpoints`)."""
    check_liger_kernels(config, device)
    from trl import SFTConfig  # type: ignore[attr-defined]

    t = config.training
    ds = config.dataset
    eval_strategy = "steps" if (has_eval and t.eval_steps is not None) else "no"
    early = t.early_stopping_patience is not None and eval_strategy == "steps"
    if early and t.save_total_limit == 0:
        raise TrainerInputError(
            "training.early_stopping_patience keeps the best checkpoint, so "
            "training.save_total_limit must be at least 1 (it is 0: no checkpoints)."
        )
    report_to: list[str] = [] if t.report_to == "none" else [t.report_to]
    if t.report_to == "tensorboard":
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(job_dir / "tensorboard"))
    kwargs: dict[str, Any] = {
        "output_dir": str(job_dir / CHECKPOINTS_DIR),
        "run_name": config.name,
        "max_steps": t.max_steps if t.max_steps is not None else -1,
        "num_train_epochs": t.num_epochs,
        "per_device_train_batch_size": t.per_device_batch_size,
        "per_device_eval_batch_size": t.per_device_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler,
        # transformers 5: a float in [0, 1) is a ratio of the total steps.
        "warmup_steps": t.warmup_ratio if t.warmup_ratio > 0 else 0,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "optim": optimizer_for(config, device),
        "seed": t.seed,
        "data_seed": t.seed,
        "logging_strategy": "steps",
        "logging_steps": t.logging_steps,
        "logging_first_step": True,
        "eval_strategy": eval_strategy,
        "eval_steps": t.eval_steps if eval_strategy == "steps" else None,
        # save_total_limit 0: a throwaway run that writes no checkpoint (and cannot resume).
        "save_strategy": "steps" if t.save_total_limit > 0 else "no",
        "save_steps": t.save_steps,
        "save_total_limit": t.save_total_limit or None,
        "load_best_model_at_end": early,
        "metric_for_best_model": "eval_loss" if early else None,
        "greater_is_better": False if early else None,
        "restore_callback_states_from_checkpoint": True,
        "dataloader_num_workers": t.dataloader_num_workers,
        "dataloader_prefetch_factor": t.dataloader_prefetch_factor,
        "report_to": report_to,
        "bf16": precision.bf16,
        "fp16": precision.fp16,
        "use_cpu": device == "cpu",
        "disable_tqdm": True,
        "include_num_input_tokens_seen": "non_padding",
        "max_length": ds.max_length,
        "packing": ds.packing,
        "assistant_only_loss": record_format == "messages" and ds.train_on_completions_only,
        "completion_only_loss": (
            ds.train_on_completions_only if record_format == "prompt_completion" else None
        ),
        "dataset_text_field": "text",
        "model_init_kwargs": None,
        # DDP / FSDP / DeepSpeed when several processes train (gloo on the CPU).
        **strategy_training_args(config, device),
    }
    # transformers 5.2x renamed gradient_checkpointing to activation_checkpointing.
    prefix = (
        "activation_checkpointing"
        if "activation_checkpointing" in SFTConfig.__dataclass_fields__
        else "gradient_checkpointing"
    )
    checkpointing = uses_trainer_checkpointing(config)
    kwargs[prefix] = checkpointing
    if checkpointing:
        kwargs[f"{prefix}_kwargs"] = {"use_reentrant": False}
    return SFTConfig(**kwargs)


def cpu_threads_for(num_parameters: int, cores: int, local_world_size: int = 1) -> int:
    """Intra-op threads for CPU training.

    A small model's matrix products are too small to split: worker threads spend their time at
    barriers, and on a busy machine a thread pool that waits for a descheduled worker is many
    times slower than one thread (measured on the 0.3M-parameter demo: 65 ms per step with one
    thread, 0.9-1.8 s with two while other processes load the cores). Larger models get this
    process's share of the cores.
    """
    if num_parameters < 50_000_000:
        return 1
    return max(1, cores // max(1, local_world_size))


def configure_threads(device: str, num_parameters: int) -> None:
    """Size torch's CPU thread pool unless the user set OMP_NUM_THREADS."""
    import torch

    if device != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    torch.set_num_threads(cpu_threads_for(num_parameters, cores, local_world))


_JOB_TRAINER: Any = None

# The parameters of transformers' private `Trainer._save_checkpoint` that `JobTrainer` overrides
# and calls, as the override was written for them (transformers 4.56 to 5.x).
# tests/test_trainer_overrides.py fails, naming the difference, when an upgrade changes them.
SAVE_CHECKPOINT_PARAMETERS = ("self", "model", "trial")


def job_trainer_class() -> Any:
    """TRL's `SFTTrainer` without two costs a job gains nothing from (profiled on the demo).

    - FLOs: the Trainer adds `6 x tokens x parameters` every step and counts the parameters
      anew each time by walking every module (~8% of a small model's step on the CPU; pure
      Python, so the same milliseconds on a GPU). The count cannot change while training, so
      it is taken once.
    - Model cards at checkpoints: every save renders TRL's card into `checkpoints/README.md`
      and PEFT's into the checkpoint (a Jinja template compiled twice, package metadata read
      ~30 times: ~35% of a save on the demo). Checkpoints are for resuming; the output in
      `output/` still gets PEFT's card from the final save.

    It adds one count: the tokens really trained (labels not ignored: answer tokens, never
    padding), summed per micro-batch on the batch's device (no synchronisation per step) and
    logged as `trained_tokens` since the previous log (all processes together).

    Training itself (loss, gradients, optimizer, logged metrics, checkpoint contents) is
    TRL's, unchanged.
    """
    global _JOB_TRAINER
    if _JOB_TRAINER is not None:
        return _JOB_TRAINER
    from transformers import Trainer
    from trl import SFTTrainer  # type: ignore[attr-defined]

    class JobTrainer(SFTTrainer):
        """TRL's SFTTrainer with the parameter count for FLOs taken once, no card at saves."""

        _params_for_flos: int | None = None
        _trained_tokens: Any = 0  # since the last log; a tensor once a step has run

        def training_step(
            self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None
        ) -> Any:
            """TRL's step, counting the trained tokens of the micro-batch first."""
            labels = inputs.get("labels")
            if labels is not None:
                # The loss shifts labels by one: the first position is never a target.
                self._trained_tokens = self._trained_tokens + (labels[..., 1:] != -100).sum()
            return super().training_step(model, inputs, num_items_in_batch)  # type: ignore[no-untyped-call]

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            """TRL's log, plus `trained_tokens` on the training loss's log lines."""
            if "loss" in logs:
                import torch

                tokens = self._trained_tokens
                if isinstance(tokens, torch.Tensor):
                    tokens = self.accelerator.reduce(tokens.detach(), reduction="sum")
                logs["trained_tokens"] = int(tokens)
                self._trained_tokens = 0
            super().log(logs, start_time)

        def floating_point_ops(self, inputs: dict[str, Any]) -> int:
            """`6 x tokens x parameters`, with the parameters counted on the first call."""
            model: Any = self.model
            main_input = getattr(model, "main_input_name", "input_ids")
            if main_input not in inputs or not hasattr(model, "num_parameters"):
                return 0
            if self._params_for_flos is None:
                self._params_for_flos = int(model.num_parameters(exclude_embeddings=True))
            return 6 * int(inputs[main_input].numel()) * self._params_for_flos

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            # Trainer's save, skipping SFTTrainer's override (which only adds the model card),
            # with PEFT's card switched off on this instance for the duration.
            owner: Any = self.model
            has_card = hasattr(owner, "create_or_update_model_card")
            if has_card:
                owner.create_or_update_model_card = lambda output_dir: None
            try:
                Trainer._save_checkpoint(self, model, trial)
            finally:
                if has_card:
                    del owner.create_or_update_model_card

    _JOB_TRAINER = JobTrainer
    return JobTrainer
