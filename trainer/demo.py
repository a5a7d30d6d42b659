"""`python -m trainer make-demo DIR [--json]`: a complete, tiny, offline training job.

It writes

- `DIR/model/`: a Llama-architecture model with random weights (2 layers, hidden size 64) and a
  byte-level BPE tokenizer trained on the spot on the demo text, with a ChatML-style chat
  template whose assistant turns sit inside `{% generation %}` markers (what TRL needs to train
  on answers only);
- `DIR/train.jsonl`: a few hundred chat records with patterns a tiny model learns in seconds
  ("count on from 17" -> "18 19 20 21", "reverse: red cat blue" -> "blue cat red");
- `DIR/config.json`: a `TrainingConfig` that trains a LoRA adapter on them on the CPU.

Nothing is downloaded and the result only depends on the seed. The app's built-in demo is this
folder; the tests train on it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from trainer.reports import DemoReport

__all__ = [
    "CHAT_TEMPLATE",
    "DEMO_SEED",
    "demo_config",
    "demo_records",
    "demo_report",
    "main",
    "make_demo",
]

DEMO_SEED = 1234

# ChatML-style. The assistant's end-of-turn token is inside the generation block so that a model
# trained on answers only also learns to stop.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{%- else -%}"
    "{{ message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

SPECIAL_TOKENS = ["<|pad|>", "<|begin_of_text|>", "<|im_start|>", "<|im_end|>"]

_WORDS = [
    "red", "blue", "green", "cat", "dog", "bird", "sun", "moon", "tree", "river",
    "stone", "fire", "rain", "snow", "wind", "star",
]  # fmt: skip


def demo_records(n: int = 320, seed: int = DEMO_SEED) -> list[dict[str, Any]]:
    """Chat records with two learnable tasks: counting on from a number, reversing words."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for i in range(n):
        if i % 2 == 0:
            start = rng.randrange(0, 90)
            length = rng.randrange(3, 6)
            user = f"count on from {start}"
            answer = " ".join(str(start + k) for k in range(1, length + 1))
        else:
            words = [rng.choice(_WORDS) for _ in range(rng.randrange(3, 6))]
            user = "reverse: " + " ".join(words)
            answer = " ".join(reversed(words))
        records.append(
            {
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return records


def demo_config() -> dict[str, Any]:
    """The demo's `config.json`: LoRA on the CPU, about 40 quick steps."""
    return {
        "schema_version": 1,
        "name": "demo",
        "model": {"name_or_path": "model", "dtype": "fp32", "attn_implementation": "sdpa"},
        "method": "lora",
        "lora": {"r": 8, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
        "dataset": {
            "path": "train.jsonl",
            "format": "messages",
            "max_length": 64,
            "train_on_completions_only": True,
        },
        "training": {
            "max_steps": 40,
            "per_device_batch_size": 8,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1e-2,
            "lr_scheduler": "linear",
            "warmup_ratio": 0.05,
            "logging_steps": 1,
            "save_steps": 10,
            "save_total_limit": 3,
            "seed": 42,
            "pretokenize": True,
        },
        "hardware": {"device": "cpu"},
    }


def _train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on `texts`, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
        padding_side="right",
    )


def make_demo(directory: Path, seed: int = DEMO_SEED) -> Path:
    """Write the demo model, data and config into `directory`; returns the config path."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    records = demo_records(seed=seed)
    with open(directory / "train.jsonl", "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")

    texts = []
    for record in records:
        for message in record["messages"]:
            texts.append(message["content"])
    texts += [f"{r}\n" for r in ("user", "assistant", "system")]
    tokenizer = _train_tokenizer(texts, vocab_size=512)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        # Wider than the usual 0.02 so that a frozen random output head still spans logits
        # large enough for a LoRA adapter to move the loss visibly within 40 steps.
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model_dir = directory / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    config_path = directory / "config.json"
    config_path.write_text(json.dumps(demo_config(), indent=2) + "\n", encoding="utf-8")
    return config_path


def demo_report(config_path: Path) -> DemoReport:
    """What `make_demo` wrote, given the config path it returned (absolute paths)."""
    folder = config_path.parent.resolve()
    return DemoReport(
        folder=folder,
        config=folder / "config.json",
        model=folder / "model",
        train_data=folder / "train.jsonl",
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer make-demo DIR [--json]`; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m trainer make-demo",
        description="Write a tiny random model, a chat dataset and a config that trains on "
        "the CPU.",
    )
    parser.add_argument("dir", type=Path, help="folder to write (created if needed)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help="seed for weights and data")
    parser.add_argument(
        "--json", action="store_true", help="print what was written as JSON (a DemoReport)"
    )
    args = parser.parse_args(argv)
    if (args.dir / "config.json").exists():
        print(f"{args.dir}: already holds a config.json; choose an empty folder", file=sys.stderr)
        return 2
    config_path = make_demo(args.dir, seed=args.seed)
    if args.json:
        print(json.dumps(demo_report(config_path).to_json_dict(), indent=2))
        return 0
    print(f"demo written: {config_path.parent}")
    print(f"train it: python -m trainer run --job-dir {config_path.parent}")
    return 0
