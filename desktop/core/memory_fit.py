"""Estimate the GPU memory a fine-tuning run needs, from the model's `config.json` alone.

The estimate is arithmetic on the architecture (no torch, no download): parameter count from
vocabulary, hidden size, layers, MLP width and attention heads; then per-parameter bytes for the
method, plus activations for the batch and sequence length, plus a fixed CUDA overhead.

The per-parameter accounting follows the usual rules of thumb:

- full fine-tuning with AdamW in mixed precision: 2 (16-bit weights) + 2 (gradients) + 4 (fp32
  master copy) + 8 (Adam m and v) = 16 bytes per parameter (the ZeRO paper's figure); in pure
  fp32 4 + 4 + 8 = 16 as well;
- LoRA: the frozen base in its dtype (2 bytes per parameter in 16-bit) plus the adapter, whose
  weights, gradients and Adam states are fp32 (16 bytes per adapter parameter);
- QLoRA: linear layers in 4-bit NF4 (4 bits + one fp32 absmax per 64 weights, or ~4.127 bits with
  double quantisation); embeddings and the output head stay 16-bit.

Activations: per token and layer, the tensors a decoder layer keeps for the backward pass with a
fused attention kernel (no s x s attention matrix): about 7h + 2 kv + 4 I values; with gradient
checkpointing only each layer's input (h values) plus one layer being recomputed. The logits
(vocabulary x tokens) are counted separately at 8 bytes per value (16-bit logits, an fp32 upcast
for the loss and its gradient) because with large vocabularies they dominate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from desktop.core.errors import ConfigError

__all__ = [
    "GPUS",
    "KNOWN_MODELS",
    "FitLevel",
    "MemoryEstimate",
    "count_parameters",
    "estimate",
    "estimate_for_config",
    "fit_level",
    "read_model_config",
]

GB = 1e9  # decimal gigabytes, as GPU vendors quote memory

FitLevel = Literal["green", "amber", "red"]

#: Common GPUs and their memory in GB, for the fit badge's picker.
GPUS: dict[str, float] = {
    "T4 16 GB": 16,
    "RTX 4080 16 GB": 16,
    "RTX 3090 24 GB": 24,
    "RTX 4090 24 GB": 24,
    "L4 24 GB": 24,
    "A10 24 GB": 24,
    "RTX 5090 32 GB": 32,
    "A100 40 GB": 40,
    "A6000 48 GB": 48,
    "L40S 48 GB": 48,
    "A100 80 GB": 80,
    "H100 80 GB": 80,
    "H200 141 GB": 141,
    "B200 192 GB": 192,
}

# The config.json values that matter for memory, for well-known Hub models, so presets can be
# estimated offline. Values from the models' published config.json files.
_LLAMA2_7B = dict(
    vocab_size=32000,
    hidden_size=4096,
    num_hidden_layers=32,
    intermediate_size=11008,
    num_attention_heads=32,
    num_key_value_heads=32,
    tie_word_embeddings=False,
)
_LLAMA3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    num_hidden_layers=32,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
    tie_word_embeddings=False,
)
_LLAMA3_70B = dict(
    vocab_size=128256,
    hidden_size=8192,
    num_hidden_layers=80,
    intermediate_size=28672,
    num_attention_heads=64,
    num_key_value_heads=8,
    tie_word_embeddings=False,
)
_LLAMA32_1B = dict(
    vocab_size=128256,
    hidden_size=2048,
    num_hidden_layers=16,
    intermediate_size=8192,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    tie_word_embeddings=True,
)
_LLAMA32_3B = dict(
    vocab_size=128256,
    hidden_size=3072,
    num_hidden_layers=28,
    intermediate_size=8192,
    num_attention_heads=24,
    num_key_value_heads=8,
    head_dim=128,
    tie_word_embeddings=True,
)
_MISTRAL_7B = dict(
    vocab_size=32000,
    hidden_size=4096,
    num_hidden_layers=32,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
    tie_word_embeddings=False,
)
_QWEN25_05B = dict(
    vocab_size=151936,
    hidden_size=896,
    num_hidden_layers=24,
    intermediate_size=4864,
    num_attention_heads=14,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)
_QWEN25_15B = dict(
    vocab_size=151936,
    hidden_size=1536,
    num_hidden_layers=28,
    intermediate_size=8960,
    num_attention_heads=12,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)
_QWEN25_7B = dict(
    vocab_size=152064,
    hidden_size=3584,
    num_hidden_layers=28,
    intermediate_size=18944,
    num_attention_heads=28,
    num_key_value_heads=4,
    tie_word_embeddings=False,
)
_QWEN25_72B = dict(
    vocab_size=152064,
    hidden_size=8192,
    num_hidden_layers=80,
    intermediate_size=29568,
    num_attention_heads=64,
    num_key_value_heads=8,
    tie_word_embeddings=False,
)
_TINYLLAMA = dict(
    vocab_size=32000,
    hidden_size=2048,
    num_hidden_layers=22,
    intermediate_size=5632,
    num_attention_heads=32,
    num_key_value_heads=4,
    tie_word_embeddings=False,
)

#: Hub id (lower case, without an -Instruct/-chat suffix) -> config.json values.
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "meta-llama/llama-2-7b": _LLAMA2_7B,
    "meta-llama/llama-2-7b-hf": _LLAMA2_7B,
    "meta-llama/meta-llama-3-8b": _LLAMA3_8B,
    "meta-llama/llama-3.1-8b": _LLAMA3_8B,
    "meta-llama/meta-llama-3.1-8b": _LLAMA3_8B,
    "meta-llama/meta-llama-3-70b": _LLAMA3_70B,
    "meta-llama/llama-3.1-70b": _LLAMA3_70B,
    "meta-llama/meta-llama-3.1-70b": _LLAMA3_70B,
    "meta-llama/llama-3.3-70b": _LLAMA3_70B,
    "meta-llama/llama-3.2-1b": _LLAMA32_1B,
    "meta-llama/llama-3.2-3b": _LLAMA32_3B,
    "mistralai/mistral-7b-v0.1": _MISTRAL_7B,
    "mistralai/mistral-7b-v0.3": {**_MISTRAL_7B, "vocab_size": 32768},
    "qwen/qwen2.5-0.5b": _QWEN25_05B,
    "qwen/qwen2.5-1.5b": _QWEN25_15B,
    "qwen/qwen2.5-7b": _QWEN25_7B,
    "qwen/qwen2.5-72b": _QWEN25_72B,
    "tinyllama/tinyllama-1.1b-chat-v1.0": _TINYLLAMA,
    "tinyllama/tinyllama_v1.1": _TINYLLAMA,
}

_SUFFIXES = ("-instruct", "-chat-hf", "-chat", "-hf", "-it")


def read_model_config(name_or_path: str | Path) -> dict[str, Any]:
    """The architecture values of a model: its `config.json` or the built-in table.

    Args:
        name_or_path: a local folder holding `config.json`, a `config.json` file, or a Hub id
            from `KNOWN_MODELS` (case-insensitive; -Instruct / -chat variants included).

    Raises:
        ConfigError: the folder has no readable config.json, or the Hub id is not in the table
            (nothing is downloaded).
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the model's config.json: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        # Multimodal wrappers keep the language model's values in text_config.
        if "hidden_size" not in data and isinstance(data.get("text_config"), dict):
            data = {**data, **data["text_config"]}
        return data
    key = text.strip().lower()
    for candidate in (key, *(key.removesuffix(s) for s in _SUFFIXES if key.endswith(s))):
        if candidate in KNOWN_MODELS:
            return dict(KNOWN_MODELS[candidate])
    raise ConfigError(
        f"model {text!r}: no local config.json there and not in the built-in table of known "
        "models; point model.name_or_path at a downloaded model folder to estimate its memory"
    )


@dataclass(frozen=True)
class _Arch:
    vocab: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    experts: int

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def _arch(cfg: dict[str, Any]) -> _Arch:
    def get(*names: str, default: Any = None) -> Any:
        for n in names:
            if cfg.get(n) is not None:
                return cfg[n]
        if default is None:
            raise ConfigError(f"model config.json lacks {names[0]!r}; cannot estimate memory")
        return default

    hidden = int(get("hidden_size", "n_embd", "d_model"))
    heads = int(get("num_attention_heads", "n_head"))
    return _Arch(
        vocab=int(get("vocab_size")),
        hidden=hidden,
        layers=int(get("num_hidden_layers", "n_layer")),
        intermediate=int(get("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)),
        heads=heads,
        kv_heads=int(get("num_key_value_heads", default=heads)),
        head_dim=int(get("head_dim", default=hidden // heads)),
        tied=bool(cfg.get("tie_word_embeddings", False)),
        experts=int(get("num_local_experts", "num_experts", default=1)),
    )


def _linear_shapes(a: _Arch) -> list[tuple[str, int, int]]:
    """(name, in, out) of the linear layers in one decoder layer (Llama-style gated MLP)."""
    mlp = [
        ("gate_proj", a.hidden, a.intermediate),
        ("up_proj", a.hidden, a.intermediate),
        ("down_proj", a.intermediate, a.hidden),
    ]
    return [
        ("q_proj", a.hidden, a.q_dim),
        ("k_proj", a.hidden, a.kv_dim),
        ("v_proj", a.hidden, a.kv_dim),
        ("o_proj", a.q_dim, a.hidden),
        *(mlp * a.experts),
    ]


def count_parameters(model_config: dict[str, Any]) -> int:
    """Parameter count of a decoder-only transformer from its config.json values."""
    a = _arch(model_config)
    per_layer = sum(i * o for _, i, o in _linear_shapes(a)) + 2 * a.hidden
    if a.experts > 1:
        per_layer += a.hidden * a.experts  # router
    embeddings = a.vocab * a.hidden * (1 if a.tied else 2)
    return a.layers * per_layer + embeddings + a.hidden


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak GPU memory of one training process, in GB (1e9 bytes).

    Attributes:
        parameters: parameters of the base model.
        trainable_parameters: parameters that get gradients (all for full, the adapter else).
        weights_gb: the model weights as loaded (16-bit, fp32 or 4-bit).
        lora_gb: the adapter's own weights (fp32); 0 for full fine-tuning.
        gradients_gb: gradients of the trainable parameters.
        optimizer_gb: optimizer states (and the fp32 master copy in mixed-precision full FT).
        activations_gb: tensors saved for the backward pass, logits included.
        overhead_gb: CUDA context and allocator fragmentation.
        assumptions: how the figures were computed, one per line, for a tooltip.
    """

    parameters: int
    trainable_parameters: int
    weights_gb: float
    lora_gb: float
    gradients_gb: float
    optimizer_gb: float
    activations_gb: float
    overhead_gb: float
    assumptions: str

    @property
    def total_gb(self) -> float:
        """The sum of every part."""
        return (
            self.weights_gb
            + self.lora_gb
            + self.gradients_gb
            + self.optimizer_gb
            + self.activations_gb
            + self.overhead_gb
        )

    @property
    def model_states_gb(self) -> float:
        """Everything but activations and overhead: the part that scales with parameters."""
        return self.weights_gb + self.lora_gb + self.gradients_gb + self.optimizer_gb

    def rows(self) -> list[tuple[str, float]]:
        """The breakdown as (label, GB) rows, the total not included."""
        return [
            (f"Weights ({self.parameters / 1e9:.2f} B params)", self.weights_gb),
            ("LoRA adapter", self.lora_gb),
            (f"Gradients ({self.trainable_parameters / 1e6:,.1f} M trainable)", self.gradients_gb),
            ("Optimizer states", self.optimizer_gb),
            ("Activations", self.activations_gb),
            ("CUDA overhead", self.overhead_gb),
        ]

    def summary(self) -> str:
        """A multi-line breakdown for a tooltip."""
        lines = [f"{label}: {gb:.2f} GB" for label, gb in self.rows()]
        lines.append(f"Total: {self.total_gb:.1f} GB")
        return "\n".join(lines) + "\n\nAssumptions:\n" + self.assumptions


_OPTIMIZER_BYTES = {  # optimizer state bytes per trainable parameter
    "adamw_torch": 8.0,
    "adamw_torch_fused": 8.0,
    "adamw_8bit": 2.0,
    "paged_adamw_8bit": 2.0,
    "sgd": 0.0,
}

_DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "auto": 2}


def estimate(
    model_config: dict[str, Any],
    method: str,
    dtype: str = "bf16",
    batch_size: int = 1,
    seq_len: int = 1024,
    gradient_checkpointing: bool = False,
    lora_r: int = 16,
    target: str | list[str] = "all-linear",
    optimizer: str = "adamw_torch",
    double_quant: bool = True,
    shards: int = 1,
    shard_grads_only: bool = False,
) -> MemoryEstimate:
    """Estimate the peak GPU memory of one training process.

    Args:
        model_config: the model's config.json values (see `read_model_config`).
        method: "lora", "qlora" or "full".
        dtype: weights dtype, "bf16", "fp16", "fp32" or "auto" (taken as 16-bit on a GPU).
        batch_size: sequences per forward pass on this device.
        seq_len: tokens per sequence.
        gradient_checkpointing: recompute activations in the backward pass.
        lora_r: LoRA rank (lora/qlora).
        target: "all-linear" or module names such as ["q_proj", "v_proj"].
        optimizer: one of TrainingConfig's optimizers.
        double_quant: QLoRA double quantisation.
        shards: processes the model states are sharded over (FSDP / ZeRO-3); 1 for DDP.
        shard_grads_only: ZeRO-2: shard gradients and optimizer states, not weights.

    Raises:
        ConfigError: the method or optimizer is unknown, or config.json lacks a needed value.
    """
    if method not in ("lora", "qlora", "full"):
        raise ConfigError(f"method {method!r}: expected lora, qlora or full")
    if optimizer not in _OPTIMIZER_BYTES:
        raise ConfigError(f"optimizer {optimizer!r}: expected one of {sorted(_OPTIMIZER_BYTES)}")
    if dtype not in _DTYPE_BYTES:
        raise ConfigError(f"dtype {dtype!r}: expected one of {sorted(_DTYPE_BYTES)}")
    a = _arch(model_config)
    params = count_parameters(model_config)
    wbytes = _DTYPE_BYTES[dtype]
    opt_bytes = _OPTIMIZER_BYTES[optimizer]
    notes: list[str] = []
    shapes = _linear_shapes(a)
    linear_params = a.layers * sum(i * o for _, i, o in shapes)

    lora_params = 0
    weights: float
    grads: float
    optim: float
    if method == "full":
        trainable = params
        weights = params * wbytes
        grads = params * wbytes
        master = 4 * params if wbytes == 2 else 0
        optim = params * opt_bytes + master
        notes.append(
            f"Full fine-tuning: {wbytes} B/param weights + {wbytes} B/param gradients"
            + (" + 4 B/param fp32 master weights" if master else "")
            + f" + {opt_bytes:g} B/param {optimizer} states"
            f" = {2 * wbytes + opt_bytes + (4 if master else 0):g} B/param"
        )
    else:
        wanted = None if target == "all-linear" else set(target)
        lora_params = a.layers * sum(
            lora_r * (i + o) for name, i, o in shapes if wanted is None or name in wanted
        )
        trainable = lora_params
        if method == "qlora":
            bits = 4.127 if double_quant else 4.5
            other = params - linear_params
            weights = linear_params * bits / 8 + other * 2
            notes.append(
                f"QLoRA: linear layers in 4-bit NF4 (~{bits} bits/param with "
                f"{'double' if double_quant else 'single'} quantisation); embeddings, head and "
                "norms in 16-bit"
            )
        else:
            weights = params * wbytes
            notes.append(f"LoRA: frozen base in {wbytes} B/param")
        grads = 4 * lora_params
        optim = opt_bytes * lora_params
        notes.append(
            f"Adapter r={lora_r} on {'all linear layers' if wanted is None else ', '.join(target)}"
            f": {lora_params / 1e6:,.1f} M params in fp32 (weights 4 + gradients 4 + "
            f"{opt_bytes:g} optimizer B/param)"
        )

    if shards > 1:
        if shard_grads_only:
            grads /= shards
            optim /= shards
            notes.append(f"Gradients and optimizer states sharded over {shards} GPUs (ZeRO-2)")
        else:
            weights /= shards
            grads /= shards
            optim /= shards
            notes.append(f"Weights, gradients and optimizer states sharded over {shards} GPUs")

    # Activations (16-bit unless the run is fp32).
    abytes = 4 if wbytes == 4 and method == "full" else 2
    tokens = batch_size * seq_len
    full_layer = 7 * a.hidden + 2 * a.kv_dim + 4 * a.intermediate
    if gradient_checkpointing:
        per_token = (a.layers * a.hidden + full_layer) * abytes
        notes.append(
            "Gradient checkpointing: one hidden state kept per layer, one layer recomputed"
        )
    else:
        per_token = a.layers * full_layer * abytes
        notes.append(
            "No gradient checkpointing: ~(7h + 2kv + 4·intermediate) values kept per token "
            "and layer"
        )
    logits = tokens * a.vocab * 8
    activations = tokens * per_token + logits
    notes.append(
        f"{batch_size} x {seq_len} tokens per step; a fused attention kernel (sdpa / flash), so "
        "no seq x seq attention matrix; logits at 8 B per vocabulary entry per token"
    )

    states = weights + (4 * lora_params) + grads + optim
    overhead = 0.8 * GB + 0.05 * (states + activations)
    notes.append("Overhead: 0.8 GB CUDA context + 5% allocator fragmentation")
    notes.append("Per GPU; data-parallel copies are not summed. A rough guide: ±20%")
    return MemoryEstimate(
        parameters=params,
        trainable_parameters=trainable,
        weights_gb=weights / GB,
        lora_gb=4 * lora_params / GB,
        gradients_gb=grads / GB,
        optimizer_gb=optim / GB,
        activations_gb=activations / GB,
        overhead_gb=overhead / GB,
        assumptions="\n".join(f"• {n}" for n in notes),
    )


def estimate_for_config(config: Any, model_config: dict[str, Any]) -> MemoryEstimate:
    """Estimate for a `TrainingConfig` (duck-typed to keep this module free of pydantic models).

    Uses the method, weights dtype, batch size, max length, gradient checkpointing, LoRA rank and
    targets, optimizer, double quantisation and the multi-GPU strategy of the config.
    """
    hw = config.hardware
    shards = hw.num_gpus if hw.device != "cpu" else 1
    strategy = hw.strategy
    sharded = strategy in ("fsdp", "deepspeed_zero3", "deepspeed_zero2") and shards > 1
    return estimate(
        model_config,
        method=config.method,
        dtype=config.model.dtype,
        batch_size=config.training.per_device_batch_size,
        seq_len=config.dataset.max_length,
        gradient_checkpointing=config.training.gradient_checkpointing,
        lora_r=config.lora.r,
        target=config.lora.target_modules,
        optimizer=config.training.optimizer,
        double_quant=config.quantization.double_quant,
        shards=shards if sharded else 1,
        shard_grads_only=strategy == "deepspeed_zero2",
    )


def fit_level(estimate_gb: float, gpu_gb: float) -> FitLevel:
    """Green below 85% of the GPU's memory, amber up to 100%, red above."""
    if gpu_gb <= 0:
        raise ValueError(f"gpu_gb must be positive, got {gpu_gb}")
    ratio = estimate_gb / gpu_gb
    if ratio <= 0.85:
        return "green"
    if ratio <= 1.0:
        return "amber"
    return "red"
