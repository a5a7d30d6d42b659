"""The trainer on a CUDA GPU: trained tokens/s and peak memory, and the fit badge checked.

Two modes; both exit with one line, status 1, where torch sees no CUDA GPU.

`throughput` (default): the data of bench/throughput_data.py (2,000 chat records, log-normal
lengths 20..1,000 tokens) on a randomly initialised ~0.5B Llama-shaped model (24 layers x
1024 wide, MLP 4096, 16 heads / 4 KV heads, vocabulary 32,768; the benchmark's tokenizer uses
its first 2,048 ids), LoRA r 8 on all linear layers, batch 8, bf16. Interleaved runs of

- ours: `python -m trainer run` with its defaults (padding-free batches, fused AdamW);
- ours_padded: the same with `dataset.padding_free` off;
- ours_liger: the same as ours with `training.liger_kernels` (only with `--liger`);
- plain: transformers `Trainer` + PEFT, answers-only labels, padding to the longest record
  (bench/trainer_throughput.py's baseline, in bf16 on the GPU).

It prints trained tokens per wall second (medians) and each of ours' peak GPU memory (the
trainer's `peak_gpu_memory_mb` metric: `torch.cuda.max_memory_allocated`), and
`ratio vs plain Trainer: X` last.

`fit-8b`: a randomly initialised model of the QLoRA 8B preset's shape
(resources/presets/qlora-8b-16gb.json: Llama 3.1 8B, 4-bit NF4, LoRA r 16, batch 1, max
length 2048, gradient checkpointing, paged 8-bit AdamW) trains a few steps on records of
~2,000 tokens (the preset's worst case), and the measured peak is set against the fit badge's
estimate (`desktop.core.memory_fit.estimate_for_config`) for the same config. The estimate
counts the CUDA context and fragmentation (`overhead_gb`), which `max_memory_allocated` does
not see; both figures are printed.

    python bench/gpu_throughput.py [--steps 30] [--reps 2] [--liger]
    python bench/gpu_throughput.py --mode fit-8b [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NO_CUDA = "gpu_throughput: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); nothing measured."  # noqa: E501

SMALL_LLAMA = {
    "vocab_size": 32768,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
}
PRESET = ROOT / "resources" / "presets" / "qlora-8b-16gb.json"


def write_random_llama(folder: Path, shape: dict[str, Any], tokenizer_from: Path) -> int:
    """A Llama of `shape` with random weights (bf16, made on the GPU) and the benchmark's
    tokenizer, saved in `folder`; returns its parameter count."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = LlamaConfig(
        **shape,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    count = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return count


def _peak_mb(job: Path) -> float | None:
    from trainer.protocol import MetricEvent, read_all_events

    peaks = [
        e.peak_gpu_memory_mb
        for e in read_all_events(job / "events.jsonl")
        if isinstance(e, MetricEvent) and e.peak_gpu_memory_mb is not None
    ]
    return max(peaks) if peaks else None


def throughput(steps: int, reps: int, warmup: int, liger: bool) -> int:
    """The throughput mode (see the module docstring); returns 0."""
    from bench import trainer_throughput as tt
    from bench.throughput_data import make_bench_job

    root = Path(tempfile.mkdtemp(prefix="gpu-throughput-"))
    try:
        template = root / "bench"
        make_bench_job(template, records=2000)
        shutil.rmtree(template / "model.small", ignore_errors=True)
        (template / "model").rename(template / "model.small")
        params = write_random_llama(template / "model", SMALL_LLAMA, template / "model.small")
        print(f"model: random Llama, {params / 1e6:.0f}M parameters, bf16; data: 2,000 records")

        def gpu_config(cfg: dict[str, Any]) -> None:
            cfg["model"]["dtype"] = "auto"
            cfg["hardware"]["device"] = "cuda"

        variants: dict[str, Any] = {
            "ours": gpu_config,
            "ours_padded": lambda c: (gpu_config(c), c["dataset"].update(padding_free=False)),
        }
        if liger:
            variants["ours_liger"] = lambda c: (
                gpu_config(c),
                c["training"].update(liger_kernels=True),
            )
        programs = (*variants, "plain")
        rates: dict[str, list[float]] = {p: [] for p in programs}
        peaks: dict[str, list[float]] = {p: [] for p in variants}
        for rep in range(reps):
            shift = rep % len(programs)
            for program in programs[shift:] + programs[:shift]:
                work = root / f"{program}-{rep}"
                work.mkdir()
                if program == "plain":
                    samples, tokens = tt._run_baseline("plain", template, work, steps, gpu=True)
                else:
                    samples, tokens = tt._run_ours(template, work, steps, variants[program])
                    peak = _peak_mb(work / "job")
                    if peak is not None:
                        peaks[program].append(peak)
                _, per_wall, step_rate = tt.token_rates(samples, tokens, warmup)
                rates[program].append(per_wall)
                print(
                    f"  run {rep + 1} {program:>12}: {per_wall:10.0f} trained tokens/s "
                    f"({step_rate:5.2f} steps/s)",
                    flush=True,
                )
        med = {p: statistics.median(rates[p]) for p in programs}
        for p in programs:
            peak = f", peak GPU memory {max(peaks[p]):,.0f} MiB" if peaks.get(p) else ""
            print(f"{p:>12}: {med[p]:10.0f} trained tokens/s (median){peak}")
        print(f"ratio vs plain Trainer: {med['ours'] / med['plain']:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def fit_8b(steps: int) -> int:
    """The fit-8b mode (see the module docstring); returns 0."""
    import subprocess

    from bench.throughput_data import bench_records, make_bench_job
    from desktop.core.memory_fit import estimate_for_config, read_model_config
    from trainer.config import TrainingConfig

    preset = json.loads(PRESET.read_text(encoding="utf-8"))
    shape_of = read_model_config(preset["model"]["name_or_path"])  # the badge's own table
    shape = {k: v for k, v in shape_of.items() if k != "tie_word_embeddings"}
    root = Path(tempfile.mkdtemp(prefix="gpu-fit-8b-"))
    try:
        job = root / "job"
        make_bench_job(job, records=8, layers=1, hidden=32, high=160)
        max_length = preset["dataset"]["max_length"]
        records = bench_records([max_length - 8] * 64, seed=1, vocabulary=128)
        with open(job / "train.jsonl", "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record) + "\n")
        (job / "model").rename(job / "model.small")
        params = write_random_llama(job / "model", shape, job / "model.small")
        config = dict(preset)
        config["model"] = {**preset["model"], "name_or_path": "model"}
        config["dataset"] = {**preset["dataset"], "path": "train.jsonl"}
        config["dataset"].pop("split", None)
        config["dataset"].pop("eval_split", None)
        config["training"] = {
            **preset["training"],
            "max_steps": steps,
            "gradient_accumulation_steps": 2,  # memory does not depend on it; time does
            "logging_steps": 1,
            "save_total_limit": 0,
        }
        config["training"].pop("eval_steps", None)
        (job / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "trainer", "run", "--job-dir", str(job)],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        if result.returncode != 0:
            print(result.stdout[-3000:] + result.stderr[-3000:])
            print(f"fit-8b: the trainer failed ({result.returncode})")
            return 1
        measured = _peak_mb(job)
        loaded = TrainingConfig.model_validate(config)
        estimate = estimate_for_config(loaded, read_model_config(job / "model"))
        print(f"model: random {params / 1e9:.2f}B Llama 3.1 8B shape, preset {PRESET.name}")
        print(estimate.summary())
        measured_gb = (measured or 0) * 2**20 / 1e9
        print(
            f"measured peak (max_memory_allocated): {measured_gb:.2f} GB; fit badge estimate "
            f"{estimate.total_gb:.2f} GB, of which CUDA overhead {estimate.overhead_gb:.2f} GB; "
            f"estimate without overhead / measured: "
            f"{(estimate.total_gb - estimate.overhead_gb) / max(measured_gb, 1e-9):.2f}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the chosen mode; returns the exit status (1 without CUDA)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("throughput", "fit-8b"), default="throughput")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (30; fit-8b 4)")
    parser.add_argument("--reps", type=int, default=2, help="runs of each program")
    parser.add_argument("--warmup", type=int, default=3, help="log steps not timed")
    parser.add_argument("--liger", action="store_true", help="also time Liger's kernels")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 1
    if args.mode == "fit-8b":
        return fit_8b(args.steps or 4)
    return throughput(args.steps or 30, args.reps, args.warmup, args.liger)


if __name__ == "__main__":
    raise SystemExit(main())
