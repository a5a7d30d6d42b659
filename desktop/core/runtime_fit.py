"""What a config needs from the machine that runs it, against what that machine has.

A config may need CUDA (QLoRA's 4-bit weights, an 8-bit optimizer, `hardware.device: cuda`),
bf16 (on a GPU of compute capability 8.0 or newer; a T4 is 7.5) or bitsandbytes. The fit badge
and Start ask `runtime_blockers(config, target)`, where `target` is the capabilities of where
the job will run: for the local provider, this runtime's `trainer doctor` report
(`TargetCapabilities.from_doctor`); a cloud target will hand in its own GPU's capabilities and
so lift what this machine lacks. Pure and cheap (no I/O): the window calls it on the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer.reports import DoctorReport

__all__ = ["BF16_MIN_CAPABILITY", "TargetCapabilities", "runtime_blockers"]

#: bf16 needs compute capability 8.0 (Ampere) or newer.
BF16_MIN_CAPABILITY = 8.0


def _capability(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class TargetCapabilities:
    """What the machine a job runs on offers.

    Attributes:
        name: how messages name it ("this runtime", "a cloud A100").
        cuda: it has a CUDA GPU torch can use.
        bf16: its GPUs compute in bf16 (compute capability >= 8.0).
        bitsandbytes: bitsandbytes is installed (4-bit weights, 8-bit optimizers).
        gpu: the first GPU's name and compute capability, for messages ("Tesla T4, 7.5").
    """

    name: str
    cuda: bool
    bf16: bool
    bitsandbytes: bool
    gpu: str = ""

    @classmethod
    def from_doctor(cls, report: DoctorReport, name: str = "this runtime") -> TargetCapabilities:
        """The capabilities `trainer doctor` found (every GPU must do bf16 for bf16)."""
        caps = [_capability(g.compute_capability) for g in report.gpus]
        gpu = ""
        if report.gpus:
            first = report.gpus[0]
            gpu = first.name + (
                f", compute capability {first.compute_capability}"
                if first.compute_capability
                else ""
            )
        return cls(
            name=name,
            cuda=report.cuda_available,
            bf16=report.cuda_available
            and bool(caps)
            and all(c is not None and c >= BF16_MIN_CAPABILITY for c in caps),
            bitsandbytes=report.bitsandbytes is not None,
            gpu=gpu,
        )


def runtime_blockers(config: Any, target: TargetCapabilities) -> list[str]:
    """Why `config` (a TrainingConfig) cannot run on `target`, one sentence each ([]: it can).

    Each sentence starts with what is needed ("needs CUDA", "needs bf16", "needs
    bitsandbytes") and says what to do.
    """
    qlora = config.method == "qlora"
    eight_bit = config.training.optimizer in ("adamw_8bit", "paged_adamw_8bit")
    why_cuda = []
    if qlora:
        why_cuda.append("QLoRA's 4-bit weights")
    if eight_bit:
        why_cuda.append(f"the optimizer {config.training.optimizer}")
    if config.hardware.device == "cuda":
        why_cuda.append("hardware.device 'cuda'")
    out: list[str] = []
    if why_cuda and not target.cuda:
        out.append(
            f"needs CUDA: {target.name} has none ({', '.join(why_cuda)}); use a CPU preset "
            "such as demo-cpu, or run it where there is a CUDA GPU"
        )
    if (qlora or eight_bit) and not target.bitsandbytes:
        what = "QLoRA" if qlora else "an 8-bit optimizer"
        out.append(
            f"needs bitsandbytes for {what}: {target.name} has none; install it "
            "(pip install bitsandbytes) or choose method lora and optimizer adamw_torch"
        )
    bf16 = [
        name
        for name, used in (
            ("model.dtype", config.model.dtype == "bf16"),
            (
                "quantization.compute_dtype",
                qlora
                and config.quantization is not None
                and config.quantization.compute_dtype == "bf16",
            ),
        )
        if used
    ]
    if bf16 and target.cuda and not target.bf16:
        gpu = f" ({target.gpu})" if target.gpu else ""
        out.append(
            f"needs bf16: the GPU of {target.name}{gpu} has no bf16 (it needs compute "
            f"capability {BF16_MIN_CAPABILITY:g}); set {' and '.join(bf16)} to fp16"
        )
    return out
