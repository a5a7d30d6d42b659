"""Padding-free batches are exact: the same loss as padded ones, no attention across records.

The model is the throughput benchmark's (bench/throughput_data.py) at a tiny size, fp32,
with records from 20 to 160 tokens; the labels are built as TRL builds them (the chat
template's assistant mask: answers only).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.throughput_data import make_bench_job

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bench_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, list[dict[str, Any]]]:
    """(model in fp32 with sdpa attention, tokenizer, 8 tokenised records with labels)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("packing") / "bench"
    make_bench_job(folder, records=8, layers=2, hidden=32, high=160, seed=5)
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    model = AutoModelForCausalLM.from_pretrained(
        folder / "model", dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    examples = []
    for line in (folder / "train.jsonl").read_text(encoding="utf-8").splitlines():
        encoded = tokenizer.apply_chat_template(
            json.loads(line)["messages"],
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        ids, mask = encoded["input_ids"], encoded["assistant_masks"]
        labels = [t if m else -100 for t, m in zip(ids, mask, strict=True)]
        examples.append({"input_ids": ids, "labels": labels})
    return model, tokenizer, examples


@pytest.fixture(params=["sdpa", "per_record_sdpa"])
def attention(request: pytest.FixtureRequest, bench_model: Any) -> Any:
    """The bench model with transformers' sdpa (one block-diagonal mask over the row) or the
    trainer's sdpa per record; sdpa again afterwards."""
    from trainer.batching import use_per_record_sdpa

    model = bench_model[0]
    if request.param == "per_record_sdpa":
        assert use_per_record_sdpa(model)
    yield request.param
    model.set_attn_implementation("sdpa")


def _loss_per_trained_token(model: Any, batch: dict[str, Any]) -> tuple[float, int]:
    """Mean cross-entropy over the trained (shifted, non-ignored) tokens, and their count."""
    labels = batch.pop("labels")
    batch.pop("seq_idx", None)
    with torch.no_grad():
        logits = model(**batch, use_cache=False).logits.double()
    targets = labels[:, 1:]
    trained = targets != -100
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1][trained], targets[trained], reduction="sum"
    )
    count = int(trained.sum())
    return float(losses) / count, count


def test_padding_free_gives_the_padded_loss_per_trained_token(
    bench_model: Any, attention: str
) -> None:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from trainer.batching import PaddingFreeCollator

    model, tokenizer, examples = bench_model
    lengths = [len(e["input_ids"]) for e in examples]
    assert max(lengths) > 2 * min(lengths)  # padding matters in this batch
    padded = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(examples)
    flat = PaddingFreeCollator(pad_token_id=tokenizer.pad_token_id)(examples)
    assert flat["input_ids"].shape == (1, sum(lengths))  # no padding at all
    assert padded["input_ids"].numel() == len(examples) * max(lengths)

    padded_loss, padded_count = _loss_per_trained_token(model, dict(padded))
    flat_loss, flat_count = _loss_per_trained_token(model, dict(flat))
    assert flat_count == padded_count > 0
    assert flat_loss == pytest.approx(padded_loss, rel=1e-5)

    # The model's own loss (what the Trainer optimises) agrees too.
    with torch.no_grad():
        own_padded = float(model(**padded, use_cache=False).loss)
        flat.pop("seq_idx")
        own_flat = float(model(**flat, use_cache=False).loss)
    assert own_flat == pytest.approx(own_padded, rel=1e-5)
    assert own_flat == pytest.approx(flat_loss, rel=1e-5)


@pytest.mark.parametrize(
    "reset_positions",
    [
        True,
        # Proof that the test can fail: without the reset the model sees one long sequence.
        pytest.param(False, marks=pytest.mark.xfail(strict=True, raises=AssertionError)),
    ],
)
def test_changing_one_packed_record_leaves_the_others_logits_unchanged(
    bench_model: Any, attention: str, reset_positions: bool
) -> None:
    from trainer.batching import PaddingFreeCollator

    model, tokenizer, examples = bench_model
    collate = PaddingFreeCollator(
        pad_token_id=tokenizer.pad_token_id, reset_positions=reset_positions
    )
    records = examples[:3]
    changed = dict(records[0])
    vocab = model.get_input_embeddings().weight.shape[0]
    changed["input_ids"] = [(t * 7 + 3) % vocab for t in records[0]["input_ids"]]
    assert changed["input_ids"] != records[0]["input_ids"]

    def logits(batch_records: list[dict[str, Any]]) -> Any:
        batch = collate(batch_records)
        batch.pop("labels")
        batch.pop("seq_idx", None)
        with torch.no_grad():
            return model(**batch, use_cache=False).logits[0]

    start = len(records[0]["input_ids"])
    before, after = logits(records)[start:], logits([changed, *records[1:]])[start:]
    assert torch.allclose(before, after, rtol=0, atol=1e-6), float((before - after).abs().max())


def test_the_probe_tells_isolating_attention_from_leaking(bench_model: Any, attention: str) -> None:
    from trainer.batching import PaddingFreeCollator, records_kept_apart

    model, tokenizer, _ = bench_model
    pad = tokenizer.pad_token_id
    assert records_kept_apart(model, PaddingFreeCollator(pad_token_id=pad))
    assert not records_kept_apart(
        model, PaddingFreeCollator(pad_token_id=pad, reset_positions=False)
    )
    assert not model.training  # the probe restores the mode it found


def _config(**dataset: Any) -> Any:
    from trainer.config import TrainingConfig

    return TrainingConfig.model_validate(
        {"model": {"name_or_path": "m"}, "dataset": {"path": "d.jsonl", **dataset}}
    )


def test_batching_falls_back_to_padded_where_records_would_leak(
    bench_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.batching as batching

    model, tokenizer, _ = bench_model
    try:
        chosen = batching.choose_batching(_config(), model, tokenizer)
        assert isinstance(chosen.collator, batching.PaddingFreeCollator) and not chosen.packing
        assert chosen.level == "info" and "padding-free" in chosen.message
        assert "sdpa (per record) attention keeps records apart" in chosen.message
        assert model.config._attn_implementation == batching.PER_RECORD_SDPA
        model.set_attn_implementation("sdpa")
        packed = batching.choose_batching(_config(packing=True), model, tokenizer)
        assert packed.collator is None and packed.packing  # TRL's packing, itself padding-free
        model.set_attn_implementation("sdpa")
        off = batching.choose_batching(_config(padding_free=False), model, tokenizer)
        assert off.collator is None and not off.packing and "padded" in off.message
        assert model.config._attn_implementation == "sdpa"

        monkeypatch.setattr(batching, "records_kept_apart", lambda model, collator: False)
        for dataset in ({}, {"packing": True}):
            fallback = batching.choose_batching(_config(**dataset), model, tokenizer)
            assert fallback.collator is None and not fallback.packing
            assert fallback.level == "warning"
            assert "padded to the longest record" in fallback.message
            assert "attention lets concatenated records attend to each other" in fallback.message
            assert model.config._attn_implementation == "sdpa"  # padded: sdpa as it was
    finally:
        model.set_attn_implementation("sdpa")
