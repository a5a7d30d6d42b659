"""How records become batches: padding-free where exact, padded otherwise.

A padded batch is as wide as its longest record: on chat data whose lengths run from 20 to
1,000 tokens most of its compute goes to padding. A padding-free batch concatenates the same
records into one row without padding, with position ids that restart at 0 for each record
(`PaddingFreeCollator`, TRL's collator in its padding-free mode). The records trained per step,
their tokens and their labels are the same, so the loss and gradients are those of the padded
batch, provided no token attends to another record's tokens.

Whether the model keeps records apart depends on its attention code, so it is asked, not
assumed: `records_kept_apart` runs the loaded model on two packed records and checks that the
second record's logits do not change when the first one does. On transformers 5 the models
built on `masking_utils` (Llama, Qwen, Mistral, Gemma, ...) do: with no attention mask and
packed `position_ids`, `create_causal_mask` finds the records (`find_packed_sequence_indices`)
and builds a block-diagonal causal mask for sdpa, eager and flex attention; FlashAttention 2/3
use the sequence boundaries (`cu_seq_lens_*`) the collator computes. With sdpa the trainer
goes one better than the block-diagonal mask (which still computes every score of the row):
`per_record_sdpa_attention` runs sdpa once per record. A model whose attention
ignores them (remote code, older architectures) fails the check and trains with padded batches,
said in the log; so does `dataset.packing` (TRL's best-fit packing, padding-free as well).

This module is imported only by the training process (`trainer.run`, inside `_train`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from trainer.config import TrainingConfig

__all__ = [
    "PER_RECORD_SDPA",
    "Batching",
    "PaddingFreeCollator",
    "choose_batching",
    "per_record_sdpa_attention",
    "records_kept_apart",
    "use_per_record_sdpa",
]


@dataclass
class PaddingFreeCollator(DataCollatorForLanguageModeling):
    """TRL's collator in padding-free mode: a batch's records concatenated into one row,
    position ids restarting per record, each record's first label ignored (it would be
    predicted from the previous record's last token), and the sequence boundaries for
    varlen kernels.

    `reset_positions=False` is for tests only: positions run on across records, which is
    what a collator that forgot the reset would produce (the model then sees one sequence).
    """

    padding_free: bool = True
    reset_positions: bool = True

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """The padding-free batch of `examples` (see the class docstring)."""
        output: dict[str, Any] = super().torch_call(examples)
        if not self.reset_positions:
            width = output["input_ids"].shape[1]
            output["position_ids"] = torch.arange(width)[None]
            bounds = torch.tensor([0, width], dtype=torch.int32)
            output["cu_seq_lens_q"] = output["cu_seq_lens_k"] = bounds
            output["max_length_q"] = output["max_length_k"] = width
            output["seq_idx"] = torch.zeros((1, width), dtype=torch.int32)
        return output


def records_kept_apart(model: Any, collator: PaddingFreeCollator) -> bool:
    """Whether `model` keeps records of a padding-free batch from attending to each other.

    Two batches [A, B] and [A', B] (A' differs from A in every token, same length) go
    through the model; B's logits must not change. Same shapes, so the same kernels run and
    an isolated B gives the same numbers; a leak moves them by far more than the tolerance.
    """
    vocab = int(model.get_input_embeddings().weight.shape[0])
    generator = torch.Generator().manual_seed(0)
    high = max(8, min(vocab, 1000))
    first = torch.randint(4, high, (7,), generator=generator)
    shift = 1 + torch.randint(0, high - 5, (7,), generator=generator)  # never 0 mod high - 4
    other = (first - 4 + shift) % (high - 4) + 4
    second = torch.randint(4, high, (6,), generator=generator)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        logits = []
        for head in (first, other):
            batch = collator([{"input_ids": head.tolist()}, {"input_ids": second.tolist()}])
            batch.pop("labels", None)
            batch.pop("seq_idx", None)  # only linear-attention layers read it
            inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with torch.no_grad():
                out = model(**inputs, use_cache=False)
            logits.append(out.logits[0, len(first) :].float().cpu())
    finally:
        model.train(was_training)
    scale = float(logits[0].abs().max()) or 1.0
    return float((logits[0] - logits[1]).abs().max()) <= 1e-4 * scale


# sdpa, run once per record of a padding-free batch (see `use_per_record_sdpa`).
PER_RECORD_SDPA = "ftdesk_per_record_sdpa"


def per_record_sdpa_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' sdpa attention, computed record by record in a padding-free batch.

    With sdpa and packed `position_ids`, transformers masks a padding-free batch with one
    block-diagonal mask over the whole row: the kernel still computes all N x N scores of
    the row and throws most away (8 records of ~170 tokens: 1,350^2 scores where the
    records need 8 x 170^2, four times fewer). Here each record, found from the sequence
    boundaries the collator passes (`cu_seq_lens_q`, as FlashAttention's varlen kernels
    use them), gets its own causal sdpa call: the same numbers as the masked row, only the
    scores that count. Anything else (no boundaries, several rows) is sdpa as usual.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None or query.shape[0] != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    edges = [int(x) for x in bounds.tolist()]
    parts = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            dropout_p=dropout,
            scale=scaling,
            is_causal=end - start > 1,
        )
        for start, end in itertools.pairwise(edges)
        if end > start
    ]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def use_per_record_sdpa(model: Any) -> bool:
    """Switch a model that uses sdpa to `per_record_sdpa_attention`; True when switched.

    Registered under its own name with transformers' sdpa mask, so batches without record
    boundaries get exactly what sdpa gives them. The name is not saved with the model
    (transformers keeps the attention implementation out of `config.json`).
    """
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PER_RECORD_SDPA, per_record_sdpa_attention)
    AttentionMaskInterface.register(PER_RECORD_SDPA, sdpa_mask)
    model.set_attn_implementation(PER_RECORD_SDPA)
    return True


@dataclass(frozen=True)
class Batching:
    """What the run trains with: a collator (None: TRL's own), whether TRL packs, and the
    log line that says which and why (`level` 'warning' for a fallback)."""

    collator: Any
    packing: bool
    message: str
    level: str = "info"


def _pad_token_id(tokenizer: Any) -> int | None:
    # The pad token TRL picks: the tokenizer's, else its end-of-sequence token.
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else tokenizer.eos_token_id


def choose_batching(config: TrainingConfig, model: Any, tokenizer: Any) -> Batching:
    """Padding-free batches (or TRL's packing) where the model keeps records apart; padded
    batches, said in a warning, where it does not or cannot be asked."""
    ds = config.dataset
    attention = getattr(model.config, "_attn_implementation", None) or "default"
    if not ds.padding_free and not ds.packing:
        return Batching(None, False, "batches: padded to the longest record (padding-free off)")
    pad = _pad_token_id(tokenizer)
    wanted = "packing" if ds.packing else "padding-free batches"
    why = ""
    if pad is None:
        why = "the tokenizer has neither a pad nor an end-of-sequence token"
    else:
        collator = PaddingFreeCollator(pad_token_id=pad)
        per_record = use_per_record_sdpa(model)
        if per_record:
            attention = "sdpa (per record)"
        try:
            if records_kept_apart(model, collator):
                if ds.packing:
                    return Batching(
                        None,
                        True,
                        f"batches: packed to dataset.max_length {ds.max_length}, positions "
                        f"restarting per record; {attention} attention keeps records apart",
                    )
                return Batching(
                    collator,
                    False,
                    "batches: padding-free (records concatenated without padding, positions "
                    f"restarting per record; {attention} attention keeps records apart)",
                )
            why = (
                f"this model's {attention} attention lets concatenated records attend to each other"
            )
        except Exception as exc:  # a model that cannot run the check trains padded
            why = f"the check that records stay apart could not run ({type(exc).__name__}: {exc})"
        if per_record:
            model.set_attn_implementation("sdpa")  # padded batches: sdpa as it was
    return Batching(
        None,
        False,
        f"batches: padded to the longest record instead of {wanted}: {why}, so they would not "
        "be exact",
        level="warning",
    )
