"""Time to the first streamed token: the model server (`python -m trainer serve`) against a bare
`transformers` `generate` in the same run.

The bench writes a Llama model of 4 layers × 512 wide with random weights (the demo's
tokenizer, `trainer.demo`), so a forward pass over the prompt costs tens of milliseconds on the
CPU. Then, interleaved `--reps` times (the order alternates every round):

- server: the app's client (`desktop.core.model_server.ModelServer`) sends a generate request
  to a warm server (started and asked twice before timing) and waits for the first `token`
  event; timed from just before the request is written to the moment the event is parsed, so
  it holds the JSON round trip, the chat template and the tokenizer, and the pipe both ways;
- bare: in this process, the same chat template and tokenizer, then `model.generate` with a
  streamer; timed from before the template to the streamer's first new token.

Both use greedy decoding, the same prompt (about 200 tokens) and `--threads` torch threads
(default 1: the machine is shared). The medians are compared; the last line reads
`ratio vs bare generate: X` (server / bare; target <= 1.2).

    python bench/first_token.py [--reps 15] [--threads 1] [--new-tokens 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _write_model(folder: Path) -> None:
    """A 4 × 512 Llama with random weights and the demo's tokenizer, saved in `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.demo import _train_tokenizer, demo_records

    texts = [m["content"] for r in demo_records() for m in r["messages"]]
    tokenizer = _train_tokenizer([*texts, "user\n", "assistant\n", "system\n"], vocab_size=512)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


class _FirstToken:
    """A streamer noting when the first new token arrives (generate puts the prompt first)."""

    def __init__(self) -> None:
        self.puts = 0
        self.at: float | None = None

    def put(self, value: Any) -> None:
        self.puts += 1
        if self.puts == 2 and self.at is None:
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


def main() -> int:
    """Run the bench; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=4)
    args = parser.parse_args()
    # Before torch loads, here and in the server (it inherits the environment).
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from desktop.core.model_server import ModelServer
    from desktop.core.runtime import TrainerRuntime
    from trainer.serve_protocol import GenerationSettings, TokenEvent

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="ftdesk-first-token-"))
    model_dir = work / "model"
    _write_model(model_dir)
    prompt = "count on from 17: " + " ".join(str(17 + k) for k in range(90))
    settings = GenerationSettings(temperature=0.0, max_new_tokens=args.new_tokens)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": prompt}]

    def bare() -> float:
        started = time.perf_counter()
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        streamer = _FirstToken()
        with torch.inference_mode():
            model.generate(
                **ids,
                max_new_tokens=args.new_tokens,
                do_sample=False,
                streamer=streamer,
                pad_token_id=tokenizer.pad_token_id,
            )
        assert streamer.at is not None
        return streamer.at - started

    with ModelServer(TrainerRuntime(), model=str(model_dir), device="cpu") as server:
        ready = server.start(timeout_s=600)

        def served() -> float:
            started = time.perf_counter()
            reply = server.generate(prompt=prompt, settings=settings)
            first: float | None = None
            for event in reply:
                if first is None and isinstance(event, TokenEvent):
                    first = time.perf_counter()
            assert first is not None
            return first - started

        prompt_tokens = len(tokenizer(prompt)["input_ids"])
        print(f"model: 4 layers x 512, {model.num_parameters() / 1e6:.1f}M parameters, random")
        print(f"prompt: {prompt_tokens} tokens; server pid {ready.pid} on {ready.device}")
        for _ in range(2):  # warm both: first calls pay for lazy initialisation
            served()
            bare()
        times: dict[str, list[float]] = {"server": [], "bare": []}
        for rep in range(args.reps):
            order = ("server", "bare") if rep % 2 == 0 else ("bare", "server")
            for name in order:
                times[name].append(served() if name == "server" else bare())
    for name, values in times.items():
        ms = sorted(v * 1000 for v in values)
        print(
            f"{name:>6}: median {statistics.median(ms):.1f} ms "
            f"(min {ms[0]:.1f}, max {ms[-1]:.1f}; {len(ms)} runs)"
        )
    shutil.rmtree(work, ignore_errors=True)
    ratio = statistics.median(times["server"]) / statistics.median(times["bare"])
    print(f"ratio vs bare generate: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
