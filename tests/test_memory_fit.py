"""Memory-fit estimates held to published rules of thumb and known parameter counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desktop.core.errors import ConfigError
from desktop.core.memory_fit import (
    GPUS,
    count_parameters,
    estimate,
    fit_level,
    read_model_config,
)


@pytest.mark.parametrize(
    ("model", "billions"),
    [
        ("meta-llama/Llama-2-7b-hf", 6.74),
        ("meta-llama/Llama-3.1-8B-Instruct", 8.03),
        ("meta-llama/Llama-3.1-70B-Instruct", 70.55),
        ("meta-llama/Llama-3.2-1B-Instruct", 1.24),
        ("mistralai/Mistral-7B-v0.1", 7.24),
        ("Qwen/Qwen2.5-7B-Instruct", 7.62),
    ],
)
def test_parameter_counts_match_published_sizes(model: str, billions: float) -> None:
    assert count_parameters(read_model_config(model)) / 1e9 == pytest.approx(billions, abs=0.02)


def test_full_finetune_adam_mixed_precision_is_16_bytes_per_param() -> None:
    cfg = read_model_config("meta-llama/Llama-2-7b-hf")
    params = count_parameters(cfg)
    for dtype in ("bf16", "fp32"):
        est = estimate(cfg, "full", dtype, batch_size=1, seq_len=512)
        assert est.model_states_gb * 1e9 / params == pytest.approx(16.0)
        assert est.trainable_parameters == params
    # "A 7B model needs ~112 GB plus activations."
    est = estimate(cfg, "full", "bf16", batch_size=1, seq_len=512)
    assert 100 < est.model_states_gb < 125
    assert est.total_gb > est.model_states_gb + est.activations_gb * 0.99


def test_full_finetune_8bit_adam_saves_optimizer_memory() -> None:
    cfg = read_model_config("meta-llama/Llama-3.2-1B")
    adam = estimate(cfg, "full", "bf16", optimizer="adamw_torch")
    adam8 = estimate(cfg, "full", "bf16", optimizer="adamw_8bit")
    params = count_parameters(cfg)
    assert (adam.optimizer_gb - adam8.optimizer_gb) * 1e9 / params == pytest.approx(6.0)


def test_lora_8b_bf16_is_weights_plus_a_small_adapter() -> None:
    cfg = read_model_config("meta-llama/Llama-3.1-8B-Instruct")
    params = count_parameters(cfg)
    est = estimate(cfg, "lora", "bf16", batch_size=1, seq_len=1024, gradient_checkpointing=True)
    assert est.weights_gb * 1e9 / params == pytest.approx(2.0)
    adapter = est.lora_gb + est.gradients_gb + est.optimizer_gb
    assert 0 < adapter < 0.1 * est.weights_gb
    # r=16 on all linear layers of Llama 3 8B is ~42 M parameters (PEFT prints 41,943,040).
    assert est.trainable_parameters == 41_943_040
    assert est.total_gb < 24


def test_qlora_7b_fits_16gb_at_modest_sequence_length() -> None:
    cfg = read_model_config("meta-llama/Llama-2-7b-hf")
    params = count_parameters(cfg)
    est = estimate(cfg, "qlora", "bf16", batch_size=1, seq_len=1024, gradient_checkpointing=True)
    assert 0.5 <= est.weights_gb * 1e9 / params <= 0.65
    assert est.total_gb < 16
    assert fit_level(est.total_gb, GPUS["T4 16 GB"]) == "green"


def test_qlora_70b_needs_35_to_48_gb() -> None:
    cfg = read_model_config("meta-llama/Llama-3.1-70B")
    est = estimate(
        cfg,
        "qlora",
        "bf16",
        batch_size=1,
        seq_len=512,
        gradient_checkpointing=True,
        lora_r=16,
        target=["q_proj", "v_proj"],
        optimizer="paged_adamw_8bit",
    )
    assert 35 <= est.total_gb <= 48
    assert fit_level(est.total_gb, GPUS["A6000 48 GB"]) in ("green", "amber")
    assert fit_level(est.total_gb, GPUS["RTX 4090 24 GB"]) == "red"


def test_activations_grow_with_tokens_and_shrink_with_checkpointing() -> None:
    cfg = read_model_config("mistralai/Mistral-7B-v0.1")
    small = estimate(cfg, "lora", "bf16", batch_size=1, seq_len=512)
    long = estimate(cfg, "lora", "bf16", batch_size=1, seq_len=2048)
    wide = estimate(cfg, "lora", "bf16", batch_size=4, seq_len=512)
    ckpt = estimate(cfg, "lora", "bf16", batch_size=1, seq_len=2048, gradient_checkpointing=True)
    assert long.activations_gb == pytest.approx(4 * small.activations_gb)
    assert wide.activations_gb == pytest.approx(long.activations_gb)
    assert ckpt.activations_gb < long.activations_gb / 3
    assert long.weights_gb == small.weights_gb


def test_sharding_divides_model_states() -> None:
    cfg = read_model_config("meta-llama/Llama-3.1-8B")
    one = estimate(cfg, "full", "bf16")
    four = estimate(cfg, "full", "bf16", shards=4)
    assert four.model_states_gb == pytest.approx(one.model_states_gb / 4)


def test_fit_levels() -> None:
    assert fit_level(10, 24) == "green"
    assert fit_level(22, 24) == "amber"
    assert fit_level(24.5, 24) == "red"
    with pytest.raises(ValueError, match="gpu_gb"):
        fit_level(1, 0)


def test_local_config_json_is_read_and_unknown_ids_are_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps(
            {
                "vocab_size": 1000,
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "intermediate_size": 128,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "tie_word_embeddings": True,
            }
        )
    )
    cfg = read_model_config(model)
    # 2 x (q 64x64 + k 64x32 + v 64x32 + o 64x64 + 3 x 64x128 + 2 norms) + embed + final norm
    expected = 2 * (4096 + 2048 + 2048 + 4096 + 3 * 8192 + 128) + 64_000 + 64
    assert count_parameters(cfg) == expected
    with pytest.raises(ConfigError, match="not in the built-in table"):
        read_model_config("someone/unknown-model")
    (model / "config.json").write_text("{broken")
    with pytest.raises(ConfigError, match=r"config\.json"):
        read_model_config(model)


def test_assumptions_are_stated() -> None:
    est = estimate(read_model_config("meta-llama/Llama-3.1-8B"), "qlora", "bf16")
    assert "4-bit" in est.assumptions and "Overhead" in est.assumptions
    assert "Total:" in est.summary()
