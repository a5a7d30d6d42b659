"""`python -m trainer run --job-dir DIR [--resume]`: supervised fine-tuning of one job.

Reads `DIR/config.json`, checks the data before a model is loaded, trains with TRL's
`SFTTrainer` (LoRA / QLoRA adapters through PEFT, or every weight), and reports through the job
directory: events in `DIR/events.jsonl`, checkpoints in `DIR/checkpoints/`, the result in
`DIR/output/` and the last word in `DIR/status.json` (see docs/architecture.md).

Exit codes: 0 completed or cancelled, 1 failed (a crash), 2 bad config, bad data or a job
folder in the wrong state. SIGTERM / SIGINT finish the current optimizer step, save a
checkpoint and end `cancelled`; `--resume` continues from the newest checkpoint with the
optimizer, scheduler, RNG and data position restored.

Only the main process (rank 0, see `trainer.ranks`) writes events, status and output.
This module is the run's lifecycle (checks, phases, cancel, status, errors); how the config
becomes the training stack's objects is `trainer.recipe`, the job folder's rules are
`trainer.job_dir`, and a job of several processes is handed to `trainer.launch`. Heavy
libraries are imported inside the functions that use them.

It is a little over 600 lines because the final word (status, error, the reserve that keeps
room for it on a full disk) must stay next to the phases that can fail; splitting the
lifecycle would scatter the one place that guarantees a run always ends with a status.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from trainer.cancel import CancelRequest
from trainer.config import TrainingConfig, load_config, looks_like_local_path
from trainer.console import ConsoleTee
from trainer.errors import (
    FinalWordReserve,
    JobDirError,
    ModelNotAvailableError,
    TrainerInputError,
    checkpoint_lost_to_full_disk,
    exit_code_for,
    explain_exception,
)
from trainer.job_dir import OUTPUT_DIR, PARTIAL_OUTPUT, find_checkpoints, refuse_job_dir
from trainer.protocol import (
    CHECKPOINTS_DIR,
    EVENTS_FILE,
    EXIT_FAILED,
    EXIT_OK,
    STATUS_FILE,
    EventWriter,
    StatusFile,
    write_status,
)
from trainer.provenance import record_start, record_trainable
from trainer.ranks import is_main_process, launched_worker, process_rank
from trainer.recipe import (
    Precision,
    apply_liger_kernels,
    build_peft_config,
    build_quantization_config,
    build_sft_config,
    configure_threads,
    job_trainer_class,
    resolve_device,
    resolve_precision,
)

if TYPE_CHECKING:
    from trainer.callbacks import EventsCallback

__all__ = ["main"]

_DEFAULT_GRACE_S = 120.0


# --------------------------------------------------------------------------------------------
# Checks made before a model is loaded


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


# --------------------------------------------------------------------------------------------
# The run


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
        self.resume_checkpoint: Path | None = None
        self._finished = threading.Lock()
        self._final_written = False
        self.reserve: FinalWordReserve | None = None

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
        last_step = cb.last_step if cb else None
        if self.resumed_from and (last_step or 0) < self.resumed_from:
            # A resume that failed while loading trained nothing: it stands at its checkpoint.
            last_step = self.resumed_from
        return {
            "last_step": last_step,
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
                if self.reserve is not None:
                    self.reserve.release()  # kept for this moment, should the disk be full
                with contextlib.suppress(OSError):  # a full disk: status.json still says why
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
        cb = self.callback
        # Until a step past it is trained, a failure may be the checkpoint failing to load.
        loading = cb is None or self.resumed_from is None or cb.last_step <= self.resumed_from
        if self.reserve is not None:
            self.reserve.release()
        full = checkpoint_lost_to_full_disk(exc, self.job_dir) if self.main_process else None
        message = full or explain_exception(exc, self.resume_checkpoint if loading else None)
        tb = "".join(traceback.format_exception(exc))
        last_lines = self.tee.last_lines(50)  # what led here, before the traceback is printed
        if code == EXIT_FAILED:
            print(tb, file=sys.stderr, flush=True)
        else:
            print(message, file=sys.stderr, flush=True)
        with contextlib.suppress(OSError):  # a full disk: the status below still says why
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
            self.reserve = FinalWordReserve(job)
        try:
            return self._execute()
        except Exception as exc:
            return self.fail(exc)
        finally:
            if self.reserve is not None:
                self.reserve.release()
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
        for skipped in data.skipped or []:  # dataset.skip_invalid_records: say what was left out
            self.note(f"data: {skipped}", level="warning")
        eval_note = f", {len(data.eval)} eval" if data.eval else ""
        self.note(
            f"data: {len(data.train)} training records{eval_note} "
            f"({data.source_format or data.format} format)"
        )
        record_start(job, config, data, resumed=self.resume, note=self.note)
        if not config.training.pretokenize:
            self.note(
                "training.pretokenize is false, but TRL's SFTTrainer tokenises the dataset up "
                "front; tokenising up front",
                level="warning",
            )
        if self._cancelled_before_training():
            return self.finish("cancelled", EXIT_OK, "cancelled before training started")

        checkpoint = self._loadable_checkpoint() if self.resume else None
        if checkpoint is not None:
            self.resumed_from = checkpoint[0]
            self.resume_checkpoint = checkpoint[1]
        return self._train(config, data, checkpoint)

    def _loadable_checkpoint(self) -> tuple[int, Path]:
        """The newest checkpoint whose files load, each newer one skipped saying why: the
        app's rule too (`checkpoint_check.latest_loadable_checkpoint`), so both name the same.

        Raises:
            JobDirError: no checkpoint loads; the message names each one and what is wrong.
        """
        from trainer.checkpoint_check import latest_loadable_checkpoint

        point = latest_loadable_checkpoint(self.job_dir)
        for skipped in point.skipped:
            self.note(f"resume: skipped {skipped.describe()}; trying the one before it", "warning")
        if point.step is None or point.path is None:
            raise JobDirError(
                f"--resume: no checkpoint in {self.job_dir / CHECKPOINTS_DIR} can be loaded: "
                + "; ".join(s.describe() for s in point.skipped)
                + ". Start over in a new job folder, or put back an intact checkpoint folder."
            )
        return point.step, point.path

    def _train(self, config: TrainingConfig, data: Any, checkpoint: tuple[int, Path] | None) -> int:
        import torch
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
        from transformers.utils import logging as hf_logging

        from trainer.batching import choose_batching
        from trainer.callbacks import EventsCallback, NothingLeftToTrain
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
        configure_threads(device, model.num_parameters())
        if apply_liger_kernels(config, model):
            self.note("liger kernels applied (training.liger_kernels)")
        batching = choose_batching(config, model, tokenizer)
        self.note(batching.message, level=batching.level)
        args.packing = batching.packing  # off where the attention cannot keep records apart
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
            save_checkpoints=config.training.save_total_limit > 0,
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
            data_collator=batching.collator,
            peft_config=build_peft_config(config),
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)  # EventsCallback prints a plainer line
        self._check_trainable(config, len(data.train), trainer.train_dataset, args.packing)

        resume_path = str(checkpoint[1]) if checkpoint else None
        if checkpoint is not None and self.main_process:
            print(f"resuming from {checkpoint[1]}", flush=True)
        try:
            trainer.train(resume_from_checkpoint=resume_path)
        except NothingLeftToTrain as done:
            # The checkpoint is the end of the run (a cancel on its last step): its weights,
            # loaded, are the result; training on would store a step past max_steps.
            self.note(str(done))

        if callback.cancelled_at_step is not None:
            saved = "checkpoint saved, run with --resume to continue"
            if not callback.save_checkpoints:
                saved = "no checkpoint (training.save_total_limit is 0): it cannot be resumed"
            return self.finish(
                "cancelled", EXIT_OK, f"cancelled at step {callback.cancelled_at_step}; {saved}"
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

    def _check_trainable(
        self, config: TrainingConfig, records: int, prepared: Any, packing: bool
    ) -> None:
        """TRL drops the records cut at max_length with no trained token left; say so, and
        refuse when none is left (the sampler would fail with `num_samples=0`)."""
        from trainer.data.tokens import no_trainable_records

        kept = len(prepared) if hasattr(prepared, "__len__") else records  # streamed: unknown
        record_trainable(self.job_dir, kept)
        ds = config.dataset
        if kept == 0 and not packing:
            why = no_trainable_records(records, ds.max_length)
            raise TrainerInputError(f"{ds.path}: the dataset is not usable: {why}")
        if kept < records and not packing:
            self.note(
                f"data: {records - kept} of {records} training records have no trained token "
                f"within dataset.max_length {ds.max_length} and were dropped",
                level="warning",
            )

    def _save_output(
        self, config: TrainingConfig, trainer: Any, tokenizer: Any, precision: Precision
    ) -> int:
        import json

        job = self.job_dir
        partial = job / PARTIAL_OUTPUT
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
            "throughput": cb.throughput if cb else None,
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
