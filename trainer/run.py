"""`python -m trainer run --job-dir DIR [--resume]`: supervised fine-tuning of one job.

Reads `DIR/config.json`, checks the data before a model is loaded, trains with TRL's
`SFTTrainer` (LoRA / QLoRA adapters through PEFT, or every weight), and reports through the job
directory: events in `DIR/events.jsonl`, checkpoints in `DIR/checkpoints/`, the result in
`DIR/output/` and the last word in `DIR/status.json` (see DESIGN.md).

Exit codes: 0 completed or cancelled, 1 failed (a crash), 2 bad config, bad data or a job
folder in the wrong state. SIGTERM / SIGINT finish the current optimizer step, save a
checkpoint and end `cancelled`; `--resume` continues from the newest checkpoint with the
optimizer, scheduler, RNG and data position restored.

Only the main process (rank 0, see `trainer.ranks`) writes events, status and output.
Heavy libraries are imported inside the functions that use them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from trainer.cancel import CancelRequest
from trainer.config import TrainingConfig, load_config, looks_like_local_path
from trainer.console import ConsoleTee
from trainer.errors import (
    JobDirError,
    ModelNotAvailableError,
    TrainerInputError,
    exit_code_for,
    explain_exception,
)
from trainer.protocol import (
    CHECKPOINTS_DIR,
    EVENTS_FILE,
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    STATUS_FILE,
    EventWriter,
    StatusFile,
    checkpoint_step,
    read_status,
    write_status,
)
from trainer.protocol import find_checkpoints as _complete_checkpoints
from trainer.ranks import is_main_process, launched_worker, process_rank

if TYPE_CHECKING:
    from trainer.callbacks import EventsCallback

__all__ = [
    "CHECKPOINTS_DIR",
    "OUTPUT_DIR",
    "Precision",
    "build_peft_config",
    "build_quantization_config",
    "build_sft_config",
    "cpu_threads_for",
    "find_checkpoints",
    "main",
    "resolve_device",
    "resolve_precision",
]

OUTPUT_DIR = "output"
_PARTIAL_OUTPUT = ".output.partial"
_DEFAULT_GRACE_S = 120.0


# --------------------------------------------------------------------------------------------
# Pure helpers: how the config maps onto the training stack (unit-tested without training)


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
    from trl import SFTConfig  # type: ignore[attr-defined]

    from trainer.launch import strategy_training_args, uses_trainer_checkpointing

    t = config.training
    ds = config.dataset
    eval_strategy = "steps" if (has_eval and t.eval_steps is not None) else "no"
    early = t.early_stopping_patience is not None and eval_strategy == "steps"
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
        "optim": t.optimizer,
        "seed": t.seed,
        "data_seed": t.seed,
        "logging_strategy": "steps",
        "logging_steps": t.logging_steps,
        "logging_first_step": True,
        "eval_strategy": eval_strategy,
        "eval_steps": t.eval_steps if eval_strategy == "steps" else None,
        "save_strategy": "steps",
        "save_steps": t.save_steps,
        "save_total_limit": t.save_total_limit,
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


def find_checkpoints(job_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the complete checkpoints in `job_dir/checkpoints`, oldest first.

    The same checkpoints as `trainer.protocol.find_checkpoints` (the app's resume uses that one,
    so it never offers a resume this trainer would refuse), with their steps.
    """
    return [(checkpoint_step(path) or 0, path) for path in _complete_checkpoints(job_dir)]


def _check_model_available(config: TrainingConfig) -> None:
    """Fail in seconds when the model cannot be had: a missing folder, or offline and not cached.

    Raises:
        ModelNotAvailableError: with the sentence that says so.
    """
    name = config.model.name_or_path
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"model.name_or_path {name!r} is a folder without config.json; point it at a "
                "folder saved by transformers (config.json + weights) or at a Hub id."
            )
        return
    if path.exists() or looks_like_local_path(name) or name.count("/") > 1:
        raise ModelNotAvailableError(
            f"model.name_or_path {name!r} is not on disk: no such folder. Check the path "
            "(relative paths are resolved against the config file's folder)."
        )
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if not offline:
        return
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json", revision=config.model.revision)
    if not isinstance(cached, str):
        raise ModelNotAvailableError(
            f"The model {name!r} is not on disk and offline mode is on (HF_HUB_OFFLINE=1): "
            "download it while online first, or set model.name_or_path to a local folder."
        )


def _check_hub_push(config: TrainingConfig) -> None:
    if not config.output.push_to_hub:
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline:
        raise TrainerInputError(
            "output.push_to_hub is on but offline mode is on (HF_HUB_OFFLINE=1); turn one off."
        )
    if not os.environ.get("HF_TOKEN"):
        raise TrainerInputError(
            "output.push_to_hub needs a Hugging Face token in the HF_TOKEN environment variable "
            "(the app passes it from the keychain); none was given."
        )


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


def _configure_threads(device: str, num_parameters: int) -> None:
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

    Training itself (loss, gradients, optimizer, logged metrics, checkpoint contents) is
    TRL's, unchanged.
    """
    global _JOB_TRAINER
    if _JOB_TRAINER is not None:
        return _JOB_TRAINER
    from transformers import Trainer
    from trl import SFTTrainer  # type: ignore[attr-defined]

    class JobTrainer(SFTTrainer):
        _params_for_flos: int | None = None

        def floating_point_ops(self, inputs: dict[str, Any]) -> int:
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


# --------------------------------------------------------------------------------------------
# The run


def refuse_job_dir(job: Path, resume: bool) -> int | None:
    """EXIT_BAD_INPUT (said on stderr) when this run must not touch the job folder; else None.

    Refused: a missing folder, a finished one (output/ exists), checkpoints without `--resume`
    (a cancelled or failed job: starting over would mix two runs), and `--resume` without a
    complete checkpoint. Nothing is written: the job's events and final word stay as they were.
    """
    if not job.is_dir():
        print(f"{job}: no such job folder", file=sys.stderr)
        return EXIT_BAD_INPUT
    if (job / OUTPUT_DIR).exists():
        previous = read_status(job)
        state = previous.state if previous else "unknown"
        print(
            f"{job}: this job already finished (state {state}) and its output/ exists; "
            "refusing to train again and overwrite it. Start a new job folder instead.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    checkpoints = find_checkpoints(job)
    if resume and not checkpoints:
        print(
            f"--resume was given but {job / CHECKPOINTS_DIR} holds no complete checkpoint; "
            "nothing to resume from. Run without --resume in a new job folder to start over.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if not resume and checkpoints:
        print(
            f"{job / CHECKPOINTS_DIR} already holds checkpoints (newest: step "
            f"{checkpoints[-1][0]}); run with --resume to continue from there, or use a new "
            "job folder to start over.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    return None


def _distributed_config(job: Path) -> TrainingConfig | None:
    """The job's config when it asks for several processes and this process should launch them.

    None in a worker (the launcher set its rank), for a single process, and for a config that
    does not load (the single-process path reports that with the field named).
    """
    if launched_worker():
        return None
    try:
        config = load_config(job / "config.json")
    except Exception:
        return None
    return config if config.world_size > 1 else None


class _Run:
    """One invocation of `trainer run`: owns the event writer, the status and the cancel flag."""

    def __init__(self, job_dir: Path, resume: bool, tee: ConsoleTee) -> None:
        self.job_dir = job_dir
        self.resume = resume
        self.tee = tee
        self.main_process = is_main_process()
        self.writer: EventWriter | None = None
        self.cancel: CancelRequest | None = None
        self.callback: EventsCallback | None = None
        self.config: TrainingConfig | None = None
        self.resumed_from: int | None = None
        self._finished = threading.Lock()
        self._final_written = False

    # events and status ------------------------------------------------------------------

    def emit(self, kind: str, **fields: Any) -> None:
        if self.writer is not None:
            self.writer.emit(kind, **fields)

    def note(self, message: str, level: str = "info") -> None:
        """A line for both the app's log view (a log event) and the console (train.log)."""
        self.emit("log", level=level, message=message)
        if self.main_process:  # train.log holds each line once, not once per rank
            print(message, flush=True)

    def _progress(self) -> dict[str, Any]:
        cb = self.callback
        checkpoints = find_checkpoints(self.job_dir)
        return {
            "last_step": cb.last_step if cb else (self.resumed_from or None),
            "total_steps": cb.total_steps if cb else None,
            "last_checkpoint": str(checkpoints[-1][1]) if checkpoints else None,
            "final_loss": cb.last_loss if cb else None,
        }

    def finish(self, state: str, exit_code: int, message: str, output: Path | None = None) -> int:
        """Write the final status event and status.json once; returns the exit code."""
        with self._finished:
            if self._final_written:
                return exit_code
            self._final_written = True
            if self.main_process:
                self.emit("status", state=state, message=message)
                message = self.tee.mask(message)
                status = StatusFile(
                    state=state,
                    exit_code=exit_code,
                    message=message,
                    output_dir=str(output) if output else None,
                    **self._progress(),
                )
                write_status(self.job_dir, status)
                print(f"{state}: {message}", flush=True)
            return exit_code

    def fail(self, exc: BaseException) -> int:
        """Report an exception (error event + failed status); returns its exit code."""
        code = exit_code_for(exc)
        message = explain_exception(exc)
        tb = "".join(traceback.format_exception(exc))
        last_lines = self.tee.last_lines(50)  # what led here, before the traceback is printed
        if code == EXIT_FAILED:
            print(tb, file=sys.stderr, flush=True)
        else:
            print(message, file=sys.stderr, flush=True)
        self.emit(
            "error",
            message=message,
            exception_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            traceback=tb if code == EXIT_FAILED else "",
            last_log_lines=last_lines,
        )
        return self.finish("failed", code, message)

    # signals --------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        self.cancel = cancel = CancelRequest()
        grace = float(os.environ.get("FTDESK_CANCEL_GRACE_SECONDS", _DEFAULT_GRACE_S))

        def hard_stop(why: str) -> None:
            self.finish("cancelled", EXIT_OK, why)
            os._exit(EXIT_OK)

        def watchdog() -> None:
            time.sleep(grace)
            hard_stop(f"cancelled: the current step did not finish within {grace:.0f}s")

        def handler(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            cancel.request(name)
            if cancel.count == 1:
                threading.Thread(target=watchdog, name="cancel-watchdog", daemon=True).start()
            else:
                threading.Thread(
                    target=hard_stop,
                    args=(f"cancelled by a second {name}, without a final checkpoint",),
                    daemon=True,
                ).start()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    def _cancelled_before_training(self) -> bool:
        return self.cancel is not None and self.cancel.requested

    # phases ---------------------------------------------------------------------------------

    def execute(self) -> int:
        job = self.job_dir
        refused = refuse_job_dir(job, self.resume)
        if refused is not None:
            return refused
        if self.main_process:
            self.writer = EventWriter(job / EVENTS_FILE, redact=self.tee.mask)
        try:
            return self._execute()
        except Exception as exc:
            return self.fail(exc)
        finally:
            if self.writer is not None:
                self.writer.close()

    def _execute(self) -> int:
        job = self.job_dir
        self.emit(
            "status",
            state="starting",
            message="resuming" if self.resume else "starting",
        )
        self._install_signal_handlers()
        self.config = config = load_config(job / "config.json")

        # refuse_job_dir checked these before anything was written; a checkpoint that vanished
        # since is still an input problem, not a crash.
        checkpoints = find_checkpoints(job)
        if self.resume and not checkpoints:
            raise JobDirError(
                f"--resume was given but {job / CHECKPOINTS_DIR} no longer holds a complete "
                "checkpoint; nothing to resume from."
            )
        if self.main_process and (job / STATUS_FILE).exists():
            (job / STATUS_FILE).unlink()  # a stale final word must not describe this run

        _check_model_available(config)
        _check_hub_push(config)

        from trainer.data import load_training_data

        data = load_training_data(config.dataset, seed=config.training.seed)
        eval_note = f", {len(data.eval)} eval" if data.eval else ""
        self.note(
            f"data: {len(data.train)} training records{eval_note} "
            f"({data.source_format or data.format} format)"
        )
        if not config.training.pretokenize:
            self.note(
                "training.pretokenize is false, but TRL's SFTTrainer tokenises the dataset up "
                "front; tokenising up front",
                level="warning",
            )
        if self._cancelled_before_training():
            return self.finish("cancelled", EXIT_OK, "cancelled before training started")

        checkpoint = checkpoints[-1] if self.resume else None
        if checkpoint is not None:
            self.resumed_from = checkpoint[0]
        return self._train(config, data, checkpoint)

    def _train(self, config: TrainingConfig, data: Any, checkpoint: tuple[int, Path] | None) -> int:
        import torch
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
        from transformers.utils import logging as hf_logging

        from trainer.callbacks import EventsCallback
        from trainer.ranks import world_size

        # \r progress bars garble train.log; the events carry progress.
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        job = self.job_dir
        device = resolve_device(config)
        bf16_ok = device == "cuda" and torch.cuda.is_bf16_supported()
        precision = resolve_precision(config, device, bf16_ok)
        # Before the model loads: under DeepSpeed ZeRO-3 the arguments make from_pretrained
        # load the weights partitioned across the processes.
        args = build_sft_config(
            config,
            job,
            device,
            precision,
            has_eval=bool(data.eval),
            record_format=data.format,
        )

        self.note(f"loading model {config.model.name_or_path}")
        tokenizer = AutoTokenizer.from_pretrained(
            config.model.name_or_path,
            revision=config.model.revision,
            trust_remote_code=config.model.trust_remote_code,
        )
        model_kwargs: dict[str, Any] = {
            "revision": config.model.revision,
            "trust_remote_code": config.model.trust_remote_code,
            "dtype": getattr(torch, precision.load_dtype),
        }
        if config.model.attn_implementation != "auto":
            model_kwargs["attn_implementation"] = config.model.attn_implementation
        quantization = build_quantization_config(config)
        if quantization is not None:
            model_kwargs["quantization_config"] = quantization
            if config.world_size <= 1 or config.hardware.strategy == "ddp":
                # FSDP and DeepSpeed place the (sharded) weights themselves.
                model_kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0") or 0)}
        model = AutoModelForCausalLM.from_pretrained(config.model.name_or_path, **model_kwargs)
        _configure_threads(device, model.num_parameters())
        if self._cancelled_before_training():
            return self.finish("cancelled", EXIT_OK, "cancelled before training started")

        samples_per_step = (
            config.training.per_device_batch_size
            * config.training.gradient_accumulation_steps
            * world_size()
        )
        assert self.cancel is not None
        self.callback = callback = EventsCallback(
            self.writer,
            self.cancel,
            samples_per_step=samples_per_step,
            resumed_from_step=self.resumed_from,
            main_process=self.main_process,
            sync_cancel=world_size() > 1,
        )
        callbacks: list[Any] = [callback]
        if args.load_best_model_at_end and config.training.early_stopping_patience:
            from transformers import EarlyStoppingCallback

            callbacks.append(
                EarlyStoppingCallback(
                    early_stopping_patience=config.training.early_stopping_patience
                )
            )
        trainer = job_trainer_class()(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(data.train),
            eval_dataset=Dataset.from_list(data.eval) if data.eval else None,
            processing_class=tokenizer,
            peft_config=build_peft_config(config),
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)  # EventsCallback prints a plainer line

        resume_path = str(checkpoint[1]) if checkpoint else None
        if checkpoint is not None and self.main_process:
            print(f"resuming from {checkpoint[1]}", flush=True)
        trainer.train(resume_from_checkpoint=resume_path)

        if callback.cancelled_at_step is not None:
            return self.finish(
                "cancelled",
                EXIT_OK,
                f"cancelled at step {callback.cancelled_at_step}; checkpoint saved, "
                "run with --resume to continue",
            )
        if data.eval and args.eval_strategy == "no":
            metrics = trainer.evaluate()
            if self.main_process and "eval_loss" in metrics:
                self.emit(
                    "metric",
                    step=trainer.state.global_step,
                    total_steps=callback.total_steps,
                    eval_loss=float(metrics["eval_loss"]),
                )
        return self._save_output(config, trainer, tokenizer, precision)

    def _save_output(
        self, config: TrainingConfig, trainer: Any, tokenizer: Any, precision: Precision
    ) -> int:
        import json

        job = self.job_dir
        partial = job / _PARTIAL_OUTPUT
        final = job / OUTPUT_DIR
        if self.main_process:
            self.emit("status", state="saving", message="writing the output")
            if partial.exists():
                shutil.rmtree(partial)
        # Every rank saves (a collective under FSDP / DeepSpeed); rank 0 clears the folder
        # before anyone writes and moves it into place only after every rank has written.
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(partial))
        trainer.accelerator.wait_for_everyone()
        if not self.main_process:
            return EXIT_OK
        tokenizer.save_pretrained(str(partial))
        cb = self.callback
        summary = {
            "name": config.name,
            "method": config.method,
            "base_model": config.model.name_or_path,
            "steps": trainer.state.global_step,
            "final_loss": cb.last_loss if cb else None,
            "resumed_from_step": self.resumed_from,
            "log_history": trainer.state.log_history,
        }
        (partial / "training_summary.json").write_text(
            json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8"
        )
        if config.method != "full" and config.output.merge_adapter:
            self._merge(config, partial, tokenizer, precision)
        os.replace(partial, final)
        kind = "model" if config.method == "full" else "adapter"
        self.emit("artifact", artifact=kind, path=str(final), step=trainer.state.global_step)
        if config.output.merge_adapter and config.method != "full":
            self.emit("artifact", artifact="merged", path=str(final / "merged"))
        if config.output.push_to_hub and config.output.hub_repo_id:
            self._push(config, final)
        return self.finish(
            "completed",
            EXIT_OK,
            f"completed {trainer.state.global_step} steps; output in {final}",
            output=final,
        )

    def _merge(
        self, config: TrainingConfig, adapter_dir: Path, tokenizer: Any, precision: Precision
    ) -> None:
        """Save base + adapter merged into one model under `adapter_dir/merged`."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        print("merging the adapter into the base model", flush=True)
        dtype = getattr(torch, precision.load_dtype)
        if config.method == "qlora":
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
                config.quantization.compute_dtype
            ]
        base = AutoModelForCausalLM.from_pretrained(
            config.model.name_or_path,
            revision=config.model.revision,
            trust_remote_code=config.model.trust_remote_code,
            dtype=dtype,
        )
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        merged.save_pretrained(str(adapter_dir / "merged"))
        tokenizer.save_pretrained(str(adapter_dir / "merged"))

    def _push(self, config: TrainingConfig, folder: Path) -> None:
        from huggingface_hub import HfApi

        repo = config.output.hub_repo_id
        assert repo is not None
        print(f"pushing {folder} to the Hub as {repo}", flush=True)
        api = HfApi(token=os.environ.get("HF_TOKEN"))
        api.create_repo(repo, private=config.output.hub_private, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message=config.name)
        self.emit("artifact", artifact="hub", path=f"https://huggingface.co/{repo}")


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer run --job-dir DIR [--resume]`; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m trainer run",
        description="Fine-tune as DIR/config.json says; events, checkpoints and output go to DIR.",
    )
    parser.add_argument("--job-dir", required=True, type=Path, help="the job folder")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in DIR"
    )
    args = parser.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)  # train.log follows the run, not a 8 KiB buffer
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    job_dir = args.job_dir.resolve()
    distributed = _distributed_config(job_dir)
    if distributed is not None:
        refused = refuse_job_dir(job_dir, args.resume)
        if refused is not None:
            return refused
        from trainer.launch import run_distributed

        return run_distributed(job_dir, distributed, resume=args.resume)
    if launched_worker():
        from trainer.launch import watch_launcher

        watch_launcher()
    tee = ConsoleTee().install()
    try:
        if process_rank() != 0:
            print(f"rank {process_rank()}: events and output are written by rank 0", flush=True)
        return _Run(job_dir, args.resume, tee).execute()
    finally:
        tee.uninstall()
