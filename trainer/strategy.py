"""What every worker of a job trains with: the strategy's training arguments.

The training arguments carry the strategy, so each worker (`python -m trainer run` under the
launcher, see `trainer.launch`) builds them itself from the config: DDP (gloo on the CPU), FSDP
through the Trainer's `fsdp` / `fsdp_config` (FSDP2, transformer blocks wrapped, a full state
dict at save so the output loads back with peft/transformers), or DeepSpeed ZeRO-2 / ZeRO-3
through a generated DeepSpeed config (`deepspeed_config`) whose "auto" values the Trainer fills
in. Pure functions of the config; transformers is imported only to ask what it accepts.
"""

from __future__ import annotations

from typing import Any

from trainer.config import TrainingConfig

__all__ = ["deepspeed_config", "strategy_training_args", "uses_trainer_checkpointing"]


def deepspeed_config(stage: int, *, gradient_clipping: bool = True) -> dict[str, Any]:
    """A DeepSpeed ZeRO config for the Hugging Face Trainer (stage 2 or 3).

    Batch sizes, accumulation, clipping, precision and bucket sizes are "auto": the Trainer fills
    them in from its own arguments, so the config cannot disagree with them.
    """
    if stage not in (2, 3):
        raise ValueError(f"DeepSpeed ZeRO stage must be 2 or 3, not {stage}")
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 2:
        zero.update(
            allgather_partitions=True, allgather_bucket_size=200_000_000, reduce_scatter=True
        )
    else:
        zero.update(
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            stage3_max_live_parameters=1_000_000_000,
            stage3_max_reuse_distance=1_000_000_000,
            sub_group_size=1_000_000_000,
            # One loadable set of weights in output/, not per-rank partitions.
            stage3_gather_16bit_weights_on_model_save=True,
        )
    config: dict[str, Any] = {
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }
    if gradient_clipping:
        config["gradient_clipping"] = "auto"
    return config


def _fsdp_as_bool() -> bool:
    """True where TrainingArguments takes `fsdp=True` (transformers 5, whose default is None or
    False); transformers 4 wants a string (its default is "") and 5 warns that strings are
    deprecated."""
    from transformers import TrainingArguments

    return not isinstance(TrainingArguments.__dataclass_fields__["fsdp"].default, str)


def strategy_training_args(config: TrainingConfig, device: str) -> dict[str, Any]:
    """The training arguments that make every worker use the job's strategy.

    Empty for a single process (apart from DDP's unused-parameter search, which is off for
    adapters: every LoRA weight takes part in every step).
    """
    hw = config.hardware
    gradient_checkpointing = config.training.gradient_checkpointing
    args: dict[str, Any] = {
        "ddp_find_unused_parameters": False if config.method != "full" else None,
    }
    if config.world_size <= 1:
        return args
    if device == "cpu":
        args["ddp_backend"] = "gloo"
    if hw.strategy == "fsdp":
        fsdp_config: dict[str, Any] = {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "reshard_after_forward": True,
            # One loadable file at save time; checkpoints resume from it as well.
            "state_dict_type": "FULL_STATE_DICT",
            "cpu_ram_efficient_loading": False,
            # FSDP's own activation checkpointing; the Trainer's would add an all-gather.
            "activation_checkpointing": gradient_checkpointing,
        }
        if _fsdp_as_bool():
            args["fsdp"] = True
        else:  # transformers 4.x
            args["fsdp"] = "full_shard auto_wrap"
        args["fsdp_config"] = fsdp_config
        args["ddp_find_unused_parameters"] = None
    elif hw.strategy in ("deepspeed_zero2", "deepspeed_zero3"):
        stage = 2 if hw.strategy == "deepspeed_zero2" else 3
        args["deepspeed"] = deepspeed_config(
            stage, gradient_clipping=config.training.max_grad_norm > 0
        )
        args["ddp_find_unused_parameters"] = None
    return args


def uses_trainer_checkpointing(config: TrainingConfig) -> bool:
    """False where the strategy checkpoints activations itself (FSDP across processes)."""
    return config.training.gradient_checkpointing and not (
        config.world_size > 1 and config.hardware.strategy == "fsdp"
    )
