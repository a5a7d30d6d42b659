"""A rough estimate of a cloud run before launch: tokens, hours, dollars, and whether it fits.

Everything here is an estimate and says so wherever it is shown. It multiplies four things:

1. **Tokens to train on.** The dataset's token count from the trainer's `check-data` report (the
   preflight's token lengths: mean tokens per record, capped at `dataset.max_length`, times the
   valid records), times the epochs; with `training.max_steps` set, the sequences those steps
   take (steps x batch x accumulation x GPUs) times the tokens per record. Without the model's
   tokenizer (a Hub model not downloaded yet), every record is counted at `max_length`: an upper
   bound, and the estimate says so.
2. **Tokens per second on one GPU** for the method and the model's size: the GPU's dense
   16-bit tensor throughput (datasheet figures, table `GPU_SPECS`) x an assumed model FLOPs
   utilisation (`MFU`), divided by the training FLOPs per token (`FLOPS_PER_TOKEN` x
   parameters). Several GPUs in one pod scale by `MULTI_GPU_EFFICIENCY` each.
3. **The price** per GPU-hour of the chosen cloud, from RunPod's live catalog, x the GPU count.
4. **A fixed pod start** (`POD_START_S`): provisioning, the trainer's requirements, the model
   download; billed like training.

Sources, and how sure they are (see also docs/estimate.md):

- 6 FLOPs per parameter per token for a training step (2 forward, 4 backward): Kaplan et al.,
  "Scaling Laws for Neural Language Models" (2020), section 2.1. LoRA and QLoRA skip the frozen
  weights' gradients (about a third of it), hence 4.
- Peak dense BF16/FP16 tensor throughput (FP32 accumulate, no sparsity): NVIDIA's datasheets
  (A100, H100, H200, A40, L4, L40, L40S, A10, T4, RTX A6000) and the Ampere GA102 and Ada
  architecture whitepapers (RTX 3090, RTX 4090). Datasheets quote "with sparsity" figures twice
  as high; the dense figure is used. B200: half the HGX B200 sparse figure.
- Utilisation: PaLM (Chowdhery et al., 2022) reports 46% MFU for a large, tuned pre-training
  run; a single-GPU fine-tune through transformers reaches less. 40% (full), 35% (LoRA: more,
  smaller kernels) and 25% (QLoRA: 4-bit weights are dequantised on every pass) are our
  assumptions, not measurements. Small models (under ~1 B parameters) rarely fill a large GPU,
  so for them the figure is optimistic.

Plainly: these are rough figures, good to a factor of about two. A real run's tokens/s is in
its chart once it trains; the budget and the maximum runtime, not this estimate, bound what a
pod can cost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal
from typing import Any

from desktop.core.errors import ConfigError
from desktop.core.memory_fit import FitLevel, count_parameters, estimate_for_config, fit_level
from desktop.core.runtime_fit import BF16_MIN_CAPABILITY, TargetCapabilities, runtime_blockers
from desktop.providers.runpod.bootstrap import TRAINER_REQUIREMENTS
from desktop.providers.runpod.models import GpuType
from trainer.reports import DataReport

__all__ = [
    "FLOPS_PER_TOKEN",
    "GPU_SPECS",
    "MFU",
    "MULTI_GPU_EFFICIENCY",
    "POD_START_S",
    "SMALL_MODEL_PARAMETERS",
    "GpuOffer",
    "GpuSpec",
    "RunEstimate",
    "TokenCount",
    "dataset_tokens",
    "estimate_run",
    "gpu_spec",
    "offers_for",
    "pod_installs_bitsandbytes",
    "throughput_table",
    "tokens_per_second",
    "training_tokens",
]


@dataclass(frozen=True)
class GpuSpec:
    """What the estimate knows of a GPU class.

    Attributes:
        name: the class ("A100", "H100 SXM").
        tflops: peak dense BF16/FP16 tensor TFLOPS (FP32 accumulate, no sparsity).
        memory_gb: memory of the usual variant, used when the catalog does not say.
        capability: CUDA compute capability (bf16 needs 8.0).
    """

    name: str
    tflops: float
    memory_gb: float
    capability: float


#: GPU classes by a pattern on RunPod's GPU type id or name, first match wins (so "H100 PCIe"
#: and "H100 NVL" come before the plain "H100", which RunPod's SXM ids carry).
GPU_SPECS: tuple[tuple[str, GpuSpec], ...] = (
    (r"h200", GpuSpec("H200", 989.0, 141, 9.0)),
    (r"h100.*(pcie)", GpuSpec("H100 PCIe", 756.0, 80, 9.0)),
    (r"h100.*nvl", GpuSpec("H100 NVL", 835.0, 94, 9.0)),
    (r"h100", GpuSpec("H100 SXM", 989.0, 80, 9.0)),
    (r"b200", GpuSpec("B200", 2250.0, 180, 10.0)),
    (r"a100.*80", GpuSpec("A100 80 GB", 312.0, 80, 8.0)),
    (r"a100", GpuSpec("A100 40 GB", 312.0, 40, 8.0)),
    (r"l40s", GpuSpec("L40S", 362.0, 48, 8.9)),
    (r"l40", GpuSpec("L40", 181.0, 48, 8.9)),
    (r"\bl4\b", GpuSpec("L4", 121.0, 24, 8.9)),
    (r"a40\b", GpuSpec("A40", 149.7, 48, 8.6)),
    (r"\ba10\b", GpuSpec("A10", 125.0, 24, 8.6)),
    (r"rtx a6000|\ba6000", GpuSpec("RTX A6000", 154.8, 48, 8.6)),
    (r"4090", GpuSpec("RTX 4090", 165.2, 24, 8.9)),
    (r"3090", GpuSpec("RTX 3090", 71.0, 24, 8.6)),
    (r"\bt4\b", GpuSpec("T4", 65.0, 16, 7.5)),
)

#: Model FLOPs utilisation assumed per method (see the module docstring: assumptions).
MFU: dict[str, float] = {"full": 0.40, "lora": 0.35, "qlora": 0.25}
#: Training FLOPs per parameter per token (6: Kaplan et al. 2020; adapters skip weight grads).
FLOPS_PER_TOKEN: dict[str, int] = {"full": 6, "lora": 4, "qlora": 4}
#: Each GPU of a multi-GPU pod adds this share of one GPU's throughput (communication costs).
MULTI_GPU_EFFICIENCY = 0.9
#: Below this many parameters the utilisation assumed above is optimistic, and the estimate says so.
SMALL_MODEL_PARAMETERS = 500_000_000
#: Provisioning, installing the trainer's requirements and downloading the model, billed.
POD_START_S = 600


def gpu_spec(gpu_id: str, name: str = "") -> GpuSpec | None:
    """The class of a RunPod GPU type by its id or display name; None when not in the table."""
    text = f"{gpu_id} {name}".lower()
    for pattern, spec in GPU_SPECS:
        if re.search(pattern, text):
            return spec
    return None


def tokens_per_second(spec: GpuSpec, method: str, parameters: int, gpu_count: int = 1) -> float:
    """Rough training throughput of one pod, in tokens per second.

    Raises:
        ConfigError: an unknown method or a non-positive parameter count or GPU count.
    """
    if method not in MFU:
        raise ConfigError(f"method {method!r}: expected one of {', '.join(MFU)}")
    if parameters <= 0 or gpu_count < 1:
        raise ConfigError(
            f"estimate: parameters ({parameters}) and GPU count ({gpu_count}) must be positive"
        )
    one = spec.tflops * 1e12 * MFU[method] / (FLOPS_PER_TOKEN[method] * parameters)
    return one * (1 + MULTI_GPU_EFFICIENCY * (gpu_count - 1))


def throughput_table(
    sizes_b: tuple[float, ...] = (1.0, 8.0, 70.0),
) -> list[tuple[str, str, float, float]]:
    """(GPU class, method, billions of parameters, tokens/s) for docs/estimate.md's table."""
    seen: set[str] = set()
    rows = []
    for _, spec in GPU_SPECS:
        if spec.name in seen:
            continue
        seen.add(spec.name)
        for method in MFU:
            for size in sizes_b:
                rows.append(
                    (spec.name, method, size, tokens_per_second(spec, method, int(size * 1e9)))
                )
    return rows


@dataclass(frozen=True)
class TokenCount:
    """Tokens in one pass over the training data.

    Attributes:
        tokens: tokens per epoch.
        records: records trained on.
        per_record: tokens per record (mean, capped at max_length).
        counted: True when a tokenizer counted them; False: an upper bound at max_length.
    """

    tokens: int
    records: int
    per_record: float
    counted: bool

    def describe(self) -> str:
        """One phrase: how many tokens and how they were counted."""
        how = (
            f"{self.per_record:,.0f} tokens/record as counted"
            if self.counted
            else f"at most {self.per_record:,.0f} tokens/record (no tokenizer: max_length)"
        )
        return f"{self.tokens:,} tokens in {self.records:,} records ({how})"


def dataset_tokens(config: Any, report: DataReport) -> TokenCount:
    """Tokens per epoch of `config`'s training data, from its `check-data` report.

    Raises:
        ConfigError: the report has no records to train on.
    """
    records = report.valid_records
    if records <= 0:
        raise ConfigError(f"dataset {report.path}: no valid records to estimate a run on")
    cap = config.dataset.max_length
    stats = report.token_stats
    if stats is not None and stats.counted > 0:
        per_record = min(stats.mean, float(cap)) if not config.dataset.packing else stats.mean
        counted = True
    else:
        per_record = float(cap)
        counted = False
    return TokenCount(round(per_record * records), records, per_record, counted)


def training_tokens(config: Any, per_epoch: TokenCount, gpu_count: int = 1) -> int:
    """Tokens the whole run trains on: epochs x tokens, or `max_steps`' sequences when set."""
    t = config.training
    if t.max_steps is not None:
        sequences = t.max_steps * t.per_device_batch_size * t.gradient_accumulation_steps
        return round(int(sequences) * max(gpu_count, 1) * per_epoch.per_record)
    return round(per_epoch.tokens * float(t.num_epochs))


@dataclass(frozen=True)
class GpuOffer:
    """One GPU type as the catalog offers it for the chosen cloud.

    Attributes:
        gpu_id: RunPod's GPU type id.
        name: its display name.
        memory_gb: memory per GPU, None when the catalog does not say.
        price_per_hour: USD per GPU-hour in the chosen cloud, None when not offered there.
        availability: the catalog's stock word (HIGH, MEDIUM, LOW, NONE), None when unknown.
    """

    gpu_id: str
    name: str = ""
    memory_gb: float | None = None
    price_per_hour: Decimal | None = None
    availability: str | None = None


@dataclass(frozen=True)
class RunEstimate:
    """The estimate of one run on one GPU type (every figure rough; see the module docstring).

    Attributes:
        offer: the GPU type and its price.
        gpu_count: GPUs in the pod.
        tokens: tokens the run trains on.
        token_count: how the epoch's tokens were counted.
        tokens_per_s: the pod's throughput, None when the GPU is not in `GPU_SPECS`.
        hours: wall-clock hours with the pod start, None without a throughput.
        cost_usd: hours x price x GPUs, None without hours or price.
        memory_gb: estimated peak memory per GPU, None when the model's size is unknown.
        memory_of_gpu_gb: the GPU's memory, None when unknown.
        fit: green / amber / red, None when either memory is unknown.
        blockers: what the config needs that this GPU lacks (runtime_fit's sentences).
        warnings: the estimate against the budget and the maximum runtime, and what is unknown.
    """

    offer: GpuOffer
    gpu_count: int
    tokens: int
    token_count: TokenCount
    tokens_per_s: float | None
    hours: float | None
    cost_usd: Decimal | None
    memory_gb: float | None
    memory_of_gpu_gb: float | None
    fit: FitLevel | None
    blockers: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def gpu_hours(self) -> float | None:
        """Hours x GPUs: what RunPod bills per GPU."""
        return None if self.hours is None else self.hours * self.gpu_count

    def headline(self) -> str:
        """One line: '~1.4 h, ~$2.30 on 2 x RTX 4090 (estimate)'."""
        gpus = f"{self.gpu_count} x {self.offer.name or self.offer.gpu_id}"
        if self.hours is None:
            return f"Estimate on {gpus}: no throughput figure for this GPU, time and cost unknown"
        cost = "price unknown" if self.cost_usd is None else f"~${self.cost_usd:,.2f}"
        return f"Estimate on {gpus}: ~{_hours(self.hours)}, {cost}"

    def fit_line(self) -> str:
        """The memory fit in words."""
        if self.memory_gb is None:
            return "Memory: unknown (the model's size is not known offline)"
        if self.memory_of_gpu_gb is None:
            return f"Memory: ~{self.memory_gb:.1f} GB per GPU needed (GPU memory unknown)"
        word = {"green": "fits", "amber": "tight", "red": "does not fit"}[self.fit or "red"]
        return f"Memory: ~{self.memory_gb:.1f} GB of {self.memory_of_gpu_gb:g} GB per GPU ({word})"

    def lines(self) -> list[str]:
        """The estimate, one fact a line, labelled as one (the data's count: `token_count`)."""
        out = [self.headline(), f"  trains on ~{self.tokens:,} tokens"]
        if self.tokens_per_s is not None and self.hours is not None:
            out.append(
                f"  ~{self.tokens_per_s:,.0f} tokens/s (rough table figure), "
                f"~{self.gpu_hours:.2f} GPU-hours incl. ~{POD_START_S // 60} min pod start"
            )
        if self.offer.price_per_hour is not None:
            out.append(f"  ${self.offer.price_per_hour:.2f} per GPU-hour x {self.gpu_count}")
        out.append("  " + self.fit_line())
        out += [f"  {b}" for b in self.blockers]
        out += [f"  {w}" for w in self.warnings]
        out.append("  (a rough estimate, good to about a factor of two; see docs/estimate.md)")
        return out

    def to_json(self) -> dict[str, Any]:
        """The figures as JSON values (Decimal as a string)."""
        return {
            "estimate": True,
            "gpu_id": self.offer.gpu_id,
            "gpu_count": self.gpu_count,
            "price_per_gpu_hour": None
            if self.offer.price_per_hour is None
            else str(self.offer.price_per_hour),
            "tokens": self.tokens,
            "tokens_counted": self.token_count.counted,
            "tokens_per_s": self.tokens_per_s,
            "hours": self.hours,
            "gpu_hours": self.gpu_hours,
            "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
            "memory_gb": self.memory_gb,
            "gpu_memory_gb": self.memory_of_gpu_gb,
            "fit": self.fit,
            "blockers": list(self.blockers),
            "warnings": list(self.warnings),
        }


def offers_for(catalog: list[GpuType], gpu_ids: tuple[str, ...], cloud: str) -> list[GpuOffer]:
    """The catalog's offers for `gpu_ids`, in the user's order, priced for `cloud`.

    An id the catalog lacks is kept (no price, no stock) so a typo is shown, not dropped.
    """
    by_id = {g.id: g for g in catalog}
    out = []
    for gpu_id in gpu_ids:
        g = by_id.get(gpu_id)
        if g is None:
            out.append(GpuOffer(gpu_id, name="not in RunPod's catalog"))
            continue
        price = g.price.secure if cloud == "secure" else g.price.community
        out.append(
            GpuOffer(
                gpu_id,
                name=g.name or gpu_id,
                memory_gb=float(g.memory_gb) if g.memory_gb else None,
                price_per_hour=price,
                availability=g.availability.value if g.availability is not None else None,
            )
        )
    return out


def pod_installs_bitsandbytes() -> bool:
    """Whether a pod installs bitsandbytes with the trainer (QLoRA, 8-bit optimizers)."""
    return any(n.lower() == "bitsandbytes" for n in TRAINER_REQUIREMENTS)


def _hours(hours: float) -> str:
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"


def estimate_run(
    config: Any,
    token_count: TokenCount,
    offer: GpuOffer,
    *,
    model_config: dict[str, Any] | None,
    gpu_count: int = 1,
    budget_usd: Decimal | None = None,
    max_runtime_s: int | None = None,
    pod_has_bitsandbytes: bool = False,
) -> RunEstimate:
    """Estimate a run of `config` (a TrainingConfig) on `gpu_count` GPUs of `offer`.

    Args:
        config: the run's config.
        token_count: its data's tokens per epoch (`dataset_tokens`).
        offer: the GPU type with the chosen cloud's price.
        model_config: the model's config.json values (`memory_fit.read_model_config`); None
            when unknown, and then neither time nor memory is estimated.
        gpu_count: GPUs in the pod.
        budget_usd: the pod's budget; an estimate above it is a warning.
        max_runtime_s: the pod's maximum runtime; an estimate above it is a warning.
        pod_has_bitsandbytes: the pod installs bitsandbytes (QLoRA, 8-bit optimizers).
    """
    tokens = training_tokens(config, token_count, gpu_count)
    spec = gpu_spec(offer.gpu_id, offer.name)
    warnings: list[str] = []
    per_s: float | None = None
    memory_gb: float | None = None
    if model_config is None:
        warnings.append("the model's size is unknown offline: no time or memory estimate")
    else:
        parameters = count_parameters(model_config)
        if spec is not None:
            per_s = tokens_per_second(spec, config.method, parameters, gpu_count)
        if parameters < SMALL_MODEL_PARAMETERS:
            warnings.append(
                f"a {parameters / 1e6:,.1f} M-parameter model rarely fills a GPU: its training "
                "time is optimistic (the pod start dominates)"
            )
        sized = config.model_copy(
            update={"hardware": config.hardware.model_copy(update={"num_gpus": gpu_count})}
        )
        memory_gb = estimate_for_config(sized, model_config).total_gb
    if spec is None:
        warnings.append(f"{offer.gpu_id}: not in the throughput table, so no time estimate")
    hours = None if per_s is None else tokens / per_s / 3600 + POD_START_S / 3600
    cost = None
    if hours is not None and offer.price_per_hour is not None:
        cost = (Decimal(str(hours)) * offer.price_per_hour * gpu_count).quantize(
            Decimal("0.01"), rounding=ROUND_UP
        )
    if cost is not None and budget_usd is not None and cost > budget_usd:
        warnings.append(
            f"the estimate (${cost:,.2f}) passes the budget (${budget_usd:,.2f}): the pod "
            "would be deleted at the budget before training ends; raise the budget"
        )
    if hours is not None and max_runtime_s is not None and hours * 3600 > max_runtime_s:
        warnings.append(
            f"the estimate (~{_hours(hours)}) passes the maximum runtime "
            f"({_hours(max_runtime_s / 3600)}): raise it or train on fewer tokens"
        )
    gpu_memory = offer.memory_gb if offer.memory_gb else (spec.memory_gb if spec else None)
    fit = None if memory_gb is None or not gpu_memory else fit_level(memory_gb, gpu_memory)
    capability = spec.capability if spec is not None else BF16_MIN_CAPABILITY
    target = TargetCapabilities(
        name=f"a RunPod {offer.name or offer.gpu_id}",
        cuda=True,
        bf16=capability >= BF16_MIN_CAPABILITY,
        bitsandbytes=pod_has_bitsandbytes,
        gpu=spec.name if spec else "",
    )
    return RunEstimate(
        offer=offer,
        gpu_count=gpu_count,
        tokens=tokens,
        token_count=token_count,
        tokens_per_s=per_s,
        hours=hours,
        cost_usd=cost,
        memory_gb=memory_gb,
        memory_of_gpu_gb=gpu_memory,
        fit=fit,
        blockers=tuple(runtime_blockers(config, target)),
        warnings=tuple(warnings),
    )
