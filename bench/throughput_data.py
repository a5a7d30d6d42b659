"""Benchmark data of realistic shape for the trainer's throughput, generated (no download).

Chat records (one user turn, one assistant turn) whose token lengths follow a long-tailed
spread like real chat data:

    length = round(exp(N(ln 120, 0.8))) clipped to [20, 1000] tokens (chat template included)

a log-normal with median 120: about 10% of the records under 45 tokens, 10% over 330, 1% over
750, a mean near 165. A quarter of each record is the prompt, the rest the answer (trained
with answers-only loss). The words are made-up syllables drawn with Zipf frequencies; the
tokenizer (byte-level BPE, the demo's chat template with `{% generation %}` markers) is
trained on the records on the spot with a vocabulary large enough that each word is one
token, so a record's token length is its target length to within a token or two.

The model is a Llama with random weights, by default 4 layers x 256 wide (~4M parameters):
big enough that attention and the MLP, not the Python loop, dominate a CPU step; small
enough to train on a laptop's CPU.

`make_bench_job(DIR)` writes a complete job folder (model/, train.jsonl, config.json for
`python -m trainer run`). The tests use the same code at a tiny size
(`make_bench_job(DIR, records=..., layers=2, hidden=32, high=160)`).

    python bench/throughput_data.py DIR [--records 2000]    # writes DIR, prints the spread
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = [
    "SPREAD",
    "bench_config",
    "bench_records",
    "make_bench_job",
    "record_token_lengths",
    "spread_summary",
    "target_lengths",
]

SPREAD = "log-normal token lengths, median 120, sigma 0.8, clipped to [20, 1000]"
# Tokens the chat template adds around the two turns (role headers, end-of-turn markers).
_TEMPLATE_TOKENS = 8


def target_lengths(
    n: int,
    seed: int = 0,
    *,
    median: float = 120.0,
    sigma: float = 0.8,
    low: int = 20,
    high: int = 1000,
) -> list[int]:
    """`n` record lengths in tokens: log-normal (median, sigma) clipped to [low, high]."""
    rng = random.Random(seed)
    mu = math.log(median)
    return [min(high, max(low, round(math.exp(rng.gauss(mu, sigma))))) for _ in range(n)]


def _words(count: int, seed: int) -> list[str]:
    """`count` distinct made-up words of two or three syllables."""
    rng = random.Random(seed)
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    words: set[str] = set()
    while len(words) < count:
        syllables = rng.randrange(2, 4)
        words.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables)))
    return sorted(words)


def bench_records(lengths: list[int], seed: int = 0, vocabulary: int = 600) -> list[dict[str, Any]]:
    """One chat record per target length: a quarter prompt, the rest answer, one word per
    token (with the tokenizer `make_bench_job` trains)."""
    rng = random.Random(seed + 1)
    words = _words(vocabulary, seed)
    weights = [1.0 / (rank + 1) for rank in range(len(words))]  # Zipf
    records = []
    for length in lengths:
        body = max(2, length - _TEMPLATE_TOKENS)
        prompt = max(1, body // 4)
        answer = max(1, body - prompt)
        drawn = rng.choices(words, weights, k=prompt + answer)
        records.append(
            {
                "messages": [
                    {"role": "user", "content": " ".join(drawn[:prompt])},
                    {"role": "assistant", "content": " ".join(drawn[prompt:])},
                ]
            }
        )
    return records


def bench_config(max_length: int = 1024, steps: int = 40) -> dict[str, Any]:
    """The job's `config.json`: LoRA r 8 on all linear layers, batch 8, fp32 on the CPU, the
    trainer's defaults for everything else (padding-free batches among them)."""
    return {
        "schema_version": 1,
        "name": "throughput-bench",
        "model": {"name_or_path": "model", "dtype": "fp32", "attn_implementation": "sdpa"},
        "method": "lora",
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "dataset": {
            "path": "train.jsonl",
            "format": "messages",
            "max_length": max_length,
            "train_on_completions_only": True,
        },
        "training": {
            "max_steps": steps,
            "per_device_batch_size": 8,
            "learning_rate": 1e-3,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "logging_steps": 1,
            "save_steps": 1_000_000,
            "seed": 42,
        },
        "hardware": {"device": "cpu"},
    }


def make_bench_job(
    directory: Path,
    *,
    records: int = 2000,
    layers: int = 4,
    hidden: int = 256,
    high: int = 1000,
    seed: int = 0,
    steps: int = 40,
) -> Path:
    """Write model/, train.jsonl and config.json into `directory`; returns the config path.

    The tokenizer's vocabulary is sized so every word is one token (512 words in 2048 tokens;
    128 in 1024 for a model under 128 wide); `high` caps the record length and sets
    `dataset.max_length`.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from trainer.demo import _train_tokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_size, vocabulary = (2048, 512) if hidden >= 128 else (1024, 128)
    data = bench_records(target_lengths(records, seed, high=high), seed, vocabulary)
    with open(directory / "train.jsonl", "w", encoding="utf-8") as fh:
        for record in data:
            fh.write(json.dumps(record) + "\n")
    texts = [m["content"] for r in data for m in r["messages"]]
    texts += ["user\n", "assistant\n", "system\n"]
    tokenizer = _train_tokenizer(texts, vocab_size=vocab_size)
    tokenizer.model_max_length = max(2048, high * 2)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 16 * 16,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=max(2048, high * 2),
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(directory / "model")
    tokenizer.save_pretrained(directory / "model")
    config_path = directory / "config.json"
    config_path.write_text(
        json.dumps(bench_config(max_length=high + 24, steps=steps), indent=2) + "\n",
        encoding="utf-8",
    )
    return config_path


def record_token_lengths(directory: Path) -> list[int]:
    """The token length of each record of `directory/train.jsonl`, chat template applied."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(Path(directory) / "model"))
    lengths = []
    with open(Path(directory) / "train.jsonl", encoding="utf-8") as fh:
        for line in fh:
            ids = tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            lengths.append(len(ids))
    return lengths


def spread_summary(lengths: list[int]) -> str:
    """One line: count, min, percentiles, max and mean of `lengths`."""
    ordered = sorted(lengths)

    def pct(p: float) -> int:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return (
        f"{len(ordered)} records, tokens: min {ordered[0]}, p10 {pct(0.1)}, median {pct(0.5)}, "
        f"p90 {pct(0.9)}, p99 {pct(0.99)}, max {ordered[-1]}, "
        f"mean {statistics.fmean(ordered):.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    """Write a benchmark job folder and print its measured length spread."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args(argv)
    make_bench_job(args.dir, records=args.records)
    print(f"{args.dir}: {SPREAD}")
    print(spread_summary(record_token_lengths(args.dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
