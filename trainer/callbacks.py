"""The bridge from the Hugging Face training loop to the job directory's events.

`EventsCallback` turns the Trainer's log, evaluation and save hooks into `metric`, `progress`,
`status` and `artifact` events, prints one plain line per log step (the console goes to
`train.log`) and a summary line at the end (steps/s, trained tokens/s, wall time, peak
memory), and stops the loop cleanly when a cancel was requested.

This module is imported only by the training process (`trainer.run` imports it inside the
function that trains), which is why it may import transformers at the top: a TrainerCallback
subclass needs the base class at definition time.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainer.cancel import CancelRequest
from trainer.protocol import EventWriter

__all__ = ["EventsCallback", "NothingLeftToTrain", "any_rank", "peak_memory"]


class NothingLeftToTrain(Exception):
    """Raised by `EventsCallback.on_train_begin` when a resumed run's checkpoint already stands
    at max_steps (a cancel that landed on the last step): the Trainer's loop would train one
    step past max_steps before checking. Raised after the Trainer loaded the checkpoint, so
    the model holds its weights and the run writes them as the output."""

    def __init__(self, step: int) -> None:
        super().__init__(
            f"the checkpoint stands at step {step}, the last of the run: nothing left to "
            "train; writing the output from it"
        )
        self.step = step


def any_rank(flag: bool, device: Any) -> bool:
    """True on every process when `flag` is true on any (an all-reduce; `flag` alone when the
    process group is not initialised)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _peak_gpu_memory_mb(args: TrainingArguments) -> float | None:
    """The most memory torch has held on this process's GPU since it started (None off CUDA)."""
    import torch

    device = getattr(args, "device", None)
    if getattr(device, "type", None) != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def peak_memory() -> tuple[float, str] | None:
    """(MiB, what) of the most memory this process held: GPU memory torch allocated on CUDA,
    else the process's peak resident set; None where neither can be read (Windows CPU)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return torch.cuda.max_memory_allocated() / 2**20, "GPU"
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return (peak / 2**20 if sys.platform == "darwin" else peak / 2**10), "RAM"


class EventsCallback(TrainerCallback):
    """Reports the training loop as events; stops it on a cancel request.

    Args:
        writer: the job's event writer, or None in processes other than rank 0 (they still
            honour cancel requests but write nothing).
        cancel: the cancel flag the signal handlers set.
        samples_per_step: sequences per optimizer step over all processes.
        resumed_from_step: the checkpoint step a resumed run continues from.
        main_process: whether this process prints the per-step console lines (rank 0 only, so
            train.log holds each step once).
        sync_cancel: several processes train: at every step end they agree (one all-reduce of
            a flag) whether any of them was asked to cancel, so all save the same checkpoint
            and stop at the same step.
        save_checkpoints: False for a run that keeps no checkpoints: a cancel then stops
            without saving one.
    """

    def __init__(
        self,
        writer: EventWriter | None,
        cancel: CancelRequest,
        samples_per_step: int,
        resumed_from_step: int | None = None,
        main_process: bool = True,
        sync_cancel: bool = False,
        save_checkpoints: bool = True,
    ) -> None:
        self.writer = writer
        self.main_process = main_process
        self.sync_cancel = sync_cancel
        self.cancel = cancel
        self.samples_per_step = samples_per_step
        self.resumed_from_step = resumed_from_step
        self.total_steps: int | None = None
        self.last_step = 0
        self.last_loss: float | None = None
        self.last_checkpoint: str | None = None
        self.cancelled_at_step: int | None = None
        self.save_checkpoints = save_checkpoints
        self._t_begin = 0.0
        self._step_begin = 0
        self._t_last_log = 0.0
        self.trained_tokens = 0  # this attempt's, from the trainer's `trained_tokens` logs
        self.throughput: dict[str, float | int | str | None] = {}

    def _emit(self, kind: str, **fields: Any) -> None:
        if self.writer is not None:
            self.writer.emit(kind, **fields)

    def _eta(self, step: int) -> float | None:
        done = step - self._step_begin
        if done <= 0 or self.total_steps is None:
            return None
        per_step = (time.monotonic() - self._t_begin) / done
        return max(0.0, per_step * (self.total_steps - step))

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Record the schedule; announce training (and where a resumed run continues).

        Raises:
            NothingLeftToTrain: the resumed checkpoint is already at max_steps.
        """
        self.total_steps = state.max_steps or None
        self._t_begin = self._t_last_log = time.monotonic()
        self._step_begin = state.global_step
        self.last_step = state.global_step
        if self.resumed_from_step is not None:
            # The checkpoint's history holds the last loss; a resume may train no step at all.
            losses = [_finite(entry.get("loss")) for entry in state.log_history]
            self.last_loss = next((x for x in reversed(losses) if x is not None), None)
            message = f"resumed from step {self.resumed_from_step}"
            self._emit(
                "status",
                state="training",
                message=message,
                resumed_from_step=self.resumed_from_step,
            )
            if self.main_process:
                print(message, flush=True)
            if state.max_steps > 0 and state.global_step >= state.max_steps:
                raise NothingLeftToTrain(state.global_step)
        else:
            self._emit("status", state="training", message=f"training for {self.total_steps} steps")

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Turn a cancel request into save-and-stop; announce checkpoint saves."""
        self.last_step = state.global_step
        requested = self.cancel.requested
        if self.sync_cancel and self.cancelled_at_step is None:
            requested = any_rank(requested, args.device)
        if requested and self.cancelled_at_step is None:
            self.cancelled_at_step = state.global_step
            control.should_save = self.save_checkpoints
            control.should_training_stop = True
            if self.main_process:
                print(
                    f"cancel requested ({self.cancel.reason or 'on another rank'}): saving a "
                    f"checkpoint at step {state.global_step} and stopping",
                    flush=True,
                )
        if control.should_save:
            self._emit(
                "status", state="saving", message=f"saving checkpoint at step {state.global_step}"
            )

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Report the checkpoint just written; back to training unless the run ends."""
        folder = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        self.last_checkpoint = str(folder)
        self._emit("artifact", artifact="checkpoint", path=str(folder), step=state.global_step)
        if not control.should_training_stop:
            self._emit("status", state="training", message="")

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Each log step becomes a metric event, a progress event and one console line."""
        logs = logs or {}
        step = state.global_step
        if "loss" not in logs and "eval_loss" not in logs:
            return
        eta = self._eta(step)
        elapsed = time.monotonic() - self._t_begin
        samples_per_s = None
        if elapsed > 0 and step > self._step_begin:
            samples_per_s = (step - self._step_begin) * self.samples_per_step / elapsed
        tokens = _finite(state.num_input_tokens_seen or logs.get("num_tokens"))
        now = time.monotonic()
        trained = logs.get("trained_tokens")
        tokens_per_s = None
        if isinstance(trained, int) and now > self._t_last_log:
            self.trained_tokens += trained
            tokens_per_s = trained / (now - self._t_last_log)
            self._t_last_log = now
        fields: dict[str, Any] = {
            "step": step,
            "total_steps": self.total_steps,
            "epoch": _finite(state.epoch),
        }
        if "loss" in logs:
            loss = _finite(logs.get("loss"))
            self.last_loss = loss if loss is not None else self.last_loss
            fields.update(
                loss=loss,
                learning_rate=_finite(logs.get("learning_rate")),
                grad_norm=_finite(logs.get("grad_norm")),
                tokens_seen=int(tokens) if tokens is not None else None,
                samples_per_second=_finite(samples_per_s),
                eta_seconds=_finite(eta),
                train_tokens_per_second=_finite(tokens_per_s),
                peak_gpu_memory_mb=_finite(_peak_gpu_memory_mb(args)),
            )
        if "eval_loss" in logs:
            fields["eval_loss"] = _finite(logs.get("eval_loss"))
        self._emit("metric", **{k: v for k, v in fields.items() if v is not None})
        if "loss" in logs:
            self._emit("progress", step=step, total_steps=self.total_steps, eta_seconds=eta)
        parts = [f"step {step}/{self.total_steps or '?'}"]
        for key in ("loss", "eval_loss", "grad_norm"):
            if _finite(logs.get(key)) is not None:
                parts.append(f"{key} {float(logs[key]):.4f}")
        if _finite(logs.get("learning_rate")) is not None:
            parts.append(f"lr {float(logs['learning_rate']):.3g}")
        if eta is not None:
            parts.append(f"eta {eta:.0f}s")
        if self.main_process:
            print("  ".join(parts), flush=True)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Print the run's summary line (and keep it in `throughput` for the summary file)."""
        wall = time.monotonic() - self._t_begin
        steps = state.global_step - self._step_begin
        if steps <= 0 or wall <= 0:
            return
        # Tokens are counted at log steps: their rate runs to the last one.
        logged = self._t_last_log - self._t_begin
        tokens_per_s = self.trained_tokens / logged if logged > 0 else 0.0
        peak = peak_memory()
        self.throughput = {
            "steps": steps,
            "wall_seconds": round(wall, 3),
            "steps_per_second": steps / wall,
            "trained_tokens": self.trained_tokens,
            "trained_tokens_per_second": tokens_per_s,
            "peak_memory_mb": round(peak[0], 1) if peak else None,
            "peak_memory_of": peak[1] if peak else None,
        }
        memory = f"peak memory {peak[0]:,.0f} MiB ({peak[1]})" if peak else "peak memory unknown"
        if self.main_process:
            print(
                f"summary: {steps} steps in {wall:.1f}s: {steps / wall:.2f} steps/s, "
                f"{tokens_per_s:,.0f} trained tokens/s "
                f"({self.trained_tokens:,} tokens), {memory}",
                flush=True,
            )
