"""Trained tokens per second on chat data of realistic shape: ours against the peers.

The data and model are `bench/throughput_data.py`'s: 2,000 generated chat records whose
token lengths are log-normal (median 120, clipped to 20..1,000), a 4-layer x 256-wide Llama
with random weights and a tokenizer trained on the spot. Every program trains the same LoRA
(r 8, alpha 16, no dropout, all linear layers) with answers-only loss, batch 8, max length
1,024, fp32, constant learning rate 1e-3, no activation checkpointing, seed 42, one torch
thread, a log line every step and no checkpoint inside the timed window:

- ours: `python -m trainer run --job-dir DIR` with the trainer's defaults (padding-free
  batches);
- plain: a transformers `Trainer` + PEFT script, labels from the chat template's assistant
  mask (the same answers-only masking), a collator that pads to the longest record of each
  batch, the model's own loss;
- plain_grouped: the same with `group_by_length` (transformers 5:
  `train_sampling_strategy="group_by_length"`; batches of similar lengths: less padding, but
  not the data order a user asked for);
- trl: a bare `trl.SFTTrainer` with `assistant_only_loss`, precision matched (fp32: `bf16`
  off) and activation checkpointing off (TRL turns both on by default; see
  bench/README.md), TRL's defaults for everything else (padded batches).

What is compared is trained tokens (labels not ignored: answer tokens, never padding) per
second of the training loop, not steps: a padded step and a padding-free step train the same
tokens at very different costs. Each program runs `--reps` times, interleaved (the order
rotates every round); one observer notes wall and process CPU time as each step is logged
(bench/trainer_overhead.py's `_watch`), and each program reports the tokens it trained per
step (ours: `trained_tokens` in its log history; the baselines: the same count in their
training step). Rates run from step `--warmup` to the last step; the ratio uses CPU time
(the machine is shared: a descheduled process loses wall time, not CPU time). Medians of
the repetitions are compared; the last line reads `ratio vs plain Trainer: X`.

    python bench/trainer_throughput.py [--reps 3] [--steps 30] [--warmup 3] [--records 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput_data import (  # noqa: E402
    SPREAD,
    make_bench_job,
    record_token_lengths,
    spread_summary,
)
from bench.trainer_overhead import _checkpointing_field, _watch  # noqa: E402

PROGRAMS = ("ours", "plain", "plain_grouped", "trl")
BATCH = 8
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"}
LEARNING_RATE = 1e-3
SEED = 42
# bench/gpu_throughput.py runs the baselines on CUDA: bf16 weights and mixed precision.
GPU = False

Sample = tuple[int, float, float]  # (step, wall seconds, process CPU seconds)


def _max_length(job: Path) -> int:
    return int(json.loads((job / "config.json").read_text())["dataset"]["max_length"])


def _records(job: Path) -> list[dict[str, Any]]:
    lines = (job / "train.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _common_args(out: Path, steps: int) -> dict[str, Any]:
    return {
        "output_dir": str(out / "checkpoints"),
        "max_steps": steps,
        "per_device_train_batch_size": BATCH,
        "learning_rate": LEARNING_RATE,
        "lr_scheduler_type": "constant",
        "logging_strategy": "steps",
        "logging_steps": 1,
        "logging_first_step": True,
        "save_strategy": "no",
        "seed": SEED,
        "data_seed": SEED,
        "report_to": [],
        "use_cpu": not GPU,
        "bf16": GPU,
        "disable_tqdm": True,
    }


def _counting(trainer_class: Any, log_path: Path) -> Any:
    """`trainer_class` that counts trained tokens per step and writes each logged step as a
    JSON line {step, tokens} (tokens trained since the previous line)."""

    class Counting(trainer_class):  # type: ignore[misc, valid-type]
        _tokens = 0

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            self._tokens += int((inputs["labels"][..., 1:] != -100).sum())
            return super().training_step(model, inputs, num_items_in_batch)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            super().log(logs, start_time)
            if "loss" in logs:
                with open(log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"step": self.state.global_step, "tokens": self._tokens}))
                    fh.write("\n")
                self._tokens = 0

    return Counting


def baseline_plain(job: Path, out: Path, steps: int, grouped: bool) -> None:
    """Trainer + PEFT: answers-only labels, padding to the longest record of each batch."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    torch.set_num_threads(1)
    max_length = _max_length(job)
    tokenizer = AutoTokenizer.from_pretrained(job / "model")
    base = AutoModelForCausalLM.from_pretrained(
        job / "model", dtype=torch.bfloat16 if GPU else torch.float32, attn_implementation="sdpa"
    )
    model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", **LORA))  # type: ignore[arg-type]

    def tokenize(example: dict[str, Any]) -> dict[str, Any]:
        enc: Any = tokenizer.apply_chat_template(
            example["messages"],
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        ids = list(enc["input_ids"])[:max_length]
        mask = list(enc["assistant_masks"])[:max_length]
        labels = [t if m else -100 for t, m in zip(ids, mask, strict=True)]
        return {"input_ids": ids, "labels": labels}

    dataset = Dataset.from_list(_records(job)).map(tokenize, remove_columns=["messages"])
    pad = tokenizer.pad_token_id

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            attention[i, :n] = 1
        return {"input_ids": ids, "attention_mask": attention, "labels": labels}

    # transformers 5: group_by_length became train_sampling_strategy="group_by_length".
    grouping: dict[str, Any] = {}
    if grouped:
        fields = TrainingArguments.__dataclass_fields__
        grouping = (
            {"train_sampling_strategy": "group_by_length"}
            if "train_sampling_strategy" in fields
            else {"group_by_length": True}
        )
    args = TrainingArguments(**_common_args(out, steps), remove_unused_columns=False, **grouping)
    trainer = _counting(Trainer, out / "steps.jsonl")(
        model=model, args=args, train_dataset=dataset, data_collator=collate
    )
    trainer.train()


def baseline_trl(job: Path, out: Path, steps: int) -> None:
    """A bare TRL SFTTrainer: answers only, fp32 and no activation checkpointing."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(job / "model")
    model = AutoModelForCausalLM.from_pretrained(
        job / "model", dtype=torch.bfloat16 if GPU else torch.float32, attn_implementation="sdpa"
    )
    args = SFTConfig(
        **_common_args(out, steps),
        max_length=_max_length(job),
        assistant_only_loss=True,
        **{_checkpointing_field(SFTConfig): False},
    )
    trainer = _counting(SFTTrainer, out / "steps.jsonl")(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(_records(job)),
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),  # type: ignore[arg-type]
    )
    trainer.train()


# --------------------------------------------------------------------------------------------
# The driver


def _prepare_ours(template: Path, job: Path, steps: int, edit: Any = None) -> None:
    shutil.copytree(template, job)
    cfg = json.loads((job / "config.json").read_text(encoding="utf-8"))
    cfg["training"]["max_steps"] = steps
    cfg["training"]["save_total_limit"] = 0  # like the baselines: no checkpoint
    cfg["lora"] = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
    if edit is not None:
        edit(cfg)
    (job / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")


def _run_ours(
    template: Path, work: Path, steps: int, edit: Any = None
) -> tuple[list[Sample], dict[int, int]]:
    """`trainer run` on a copy of `template` (its config changed by `edit`, if given)."""
    job = work / "job"
    _prepare_ours(template, job, steps, edit)
    argv = [sys.executable, "-m", "trainer", "run", "--job-dir", str(job)]
    samples = _watch(
        argv,
        work / "console.log",
        job / "events.jsonl",
        lambda r: r.get("kind") == "metric" and "loss" in r,
    )
    summary = json.loads((job / "output" / "training_summary.json").read_text())
    tokens = {
        int(e["step"]): int(e["trained_tokens"])
        for e in summary["log_history"]
        if "trained_tokens" in e
    }
    return samples, tokens


def _run_baseline(
    name: str, template: Path, work: Path, steps: int, gpu: bool = False
) -> tuple[list[Sample], dict[int, int]]:
    argv = [sys.executable, __file__, "--baseline", name, "--job", str(template)]
    argv += ["--out", str(work), "--steps", str(steps)] + (["--gpu"] if gpu else [])
    samples = _watch(argv, work / "console.log", work / "steps.jsonl", lambda r: "step" in r)
    lines = (work / "steps.jsonl").read_text(encoding="utf-8").splitlines()
    tokens = {int(r["step"]): int(r["tokens"]) for r in map(json.loads, lines)}
    return samples, tokens


def token_rates(
    samples: list[Sample], tokens: dict[int, int], warmup: int
) -> tuple[float, float, float]:
    """(trained tokens per CPU second, per wall second, steps per wall second) from step
    `warmup` to the last step observed."""
    kept = [s for s in samples if s[0] >= warmup]
    if len(kept) < 2 or kept[-1][0] - kept[0][0] < 5:
        raise SystemExit(f"too few steps observed after the warm-up: {samples}")
    (s0, w0, c0), (s1, w1, c1) = kept[0], kept[-1]
    trained = sum(tokens.get(step, 0) for step in range(s0 + 1, s1 + 1))
    if trained <= 0:
        raise SystemExit(f"no trained tokens counted between steps {s0} and {s1}: {tokens}")
    return trained / (c1 - c0), trained / (w1 - w0), (s1 - s0) / (w1 - w0)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="runs of each program")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="log steps not timed")
    parser.add_argument("--records", type=int, default=2000, help="generated records")
    parser.add_argument("--baseline", choices=PROGRAMS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--gpu", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.baseline:
        global GPU
        GPU = args.gpu
        if args.baseline == "trl":
            baseline_trl(args.job, args.out, args.steps)
        else:
            baseline_plain(args.job, args.out, args.steps, args.baseline == "plain_grouped")
        return 0

    root = Path(tempfile.mkdtemp(prefix="trainer-throughput-"))
    failed = False
    try:
        template = root / "bench"
        make_bench_job(template, records=args.records)
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        print(f"cpus: {os.cpu_count()}, load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"data: {SPREAD}")
        print(f"measured: {spread_summary(record_token_lengths(template))}")
        print(f"{args.steps} steps per run, {args.reps} runs each, first {args.warmup} untimed")
        cpu: dict[str, list[float]] = {p: [] for p in PROGRAMS}
        wall: dict[str, list[float]] = {p: [] for p in PROGRAMS}
        steps_wall: dict[str, list[float]] = {p: [] for p in PROGRAMS}
        for rep in range(args.reps):
            shift = rep % len(PROGRAMS)
            for program in PROGRAMS[shift:] + PROGRAMS[:shift]:
                work = root / f"{program}-{rep}"
                work.mkdir()
                if program == "ours":
                    samples, tokens = _run_ours(template, work, args.steps)
                else:
                    samples, tokens = _run_baseline(program, template, work, args.steps)
                per_cpu, per_wall, step_rate = token_rates(samples, tokens, args.warmup)
                cpu[program].append(per_cpu)
                wall[program].append(per_wall)
                steps_wall[program].append(step_rate)
                print(
                    f"  run {rep + 1} {program:>13}: {per_cpu:8.0f} trained tokens per CPU s "
                    f"({per_wall:8.0f} per wall s, {step_rate:5.2f} steps/s)",
                    flush=True,
                )
        med = {p: statistics.median(cpu[p]) for p in PROGRAMS}
        print()
        for p in PROGRAMS:
            print(
                f"{p:>13}: {med[p]:8.0f} trained tokens per CPU s, "
                f"{statistics.median(wall[p]):8.0f} per wall s, "
                f"{statistics.median(steps_wall[p]):5.2f} steps/s (medians)"
            )
        grouped = med["ours"] / med["plain_grouped"]
        print(f"ratio vs plain Trainer with group_by_length: {grouped:.2f}")
        print(f"ratio vs TRL (fp32, no checkpointing): {med['ours'] / med['trl']:.2f}")
        print(f"ratio vs plain Trainer: {med['ours'] / med['plain']:.2f}")
    except BaseException:
        failed = True
        raise
    finally:
        if failed:
            print(f"kept for a look: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
