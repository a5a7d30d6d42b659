"""What `python -m trainer run` costs per training step over the libraries it drives.

Three programs train the same tiny demo model (`python -m trainer make-demo`) on the same data
with the same settings (batch 8, max length 64, fp32, no activation checkpointing, LoRA r 8 /
alpha 32 / dropout 0.05 on all linear layers, answers-only loss, linear schedule with 5%
warm-up, a log line every step, a checkpoint every 10 steps with 3 kept, seed 42, one torch
thread):

- ours: `python -m trainer run --job-dir DIR` (events, status, checkpoints, output);
- trl: a bare `trl.SFTTrainer` script, TRL's defaults for everything not listed above;
- plain: a transformers `Trainer` + PEFT script: the chat template's assistant mask as labels,
  a pad-to-longest collator, the model's own loss.

`--trl-defaults` adds a fourth, `trl_defaults`: the TRL script without the two settings TRL
changes from `TrainingArguments` (it turns on bf16 autocast and activation checkpointing by
default, which on this CPU workload is what makes TRL run at a third of a plain Trainer).

Each program runs as its own process, `--reps` times, interleaved (the order rotates every
round). What is timed is the steady-state training loop, never process start-up: one observer
polls each program's per-step log (ours: the metric events; the baselines: a line written by a
`TrainerCallback.on_log`) and notes wall time and the process's CPU time whenever a new step
appears. Steps are counted from step `--warmup` to the last one, checkpoint saves included (all
three save alike). The ratio uses steps per CPU second: the machine is shared, and a descheduled
process loses wall time but not CPU time; wall-clock rates are printed as well. Medians over the
repetitions are compared.

    python bench/trainer_overhead.py [--reps 5] [--steps 80] [--warmup 5] [--trl-defaults]
                                     [--profile] [--top 30]

`--profile` also runs each program once with `Trainer.train()` under cProfile (CPU-time clock)
and prints the top entries by cumulative and by own time. The last line reads
`ratio vs TRL: X; ratio vs plain Trainer: Y` (ours / theirs; target X >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROGRAMS = ("ours", "trl", "plain")
BASELINES = ("trl", "plain", "trl_defaults")

# The demo's settings (trainer/demo.py), shared by the three programs.
BATCH = 8
MAX_LENGTH = 64
LORA = {"r": 8, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}
LEARNING_RATE = 1e-2
WARMUP = 0.05
SAVE_STEPS = 10
SAVE_LIMIT = 3
SEED = 42
# Set by --baseline trl_defaults: TRL's own defaults for precision and checkpointing.
TRL_DEFAULTS = False


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
        PYTHONPATH=str(ROOT),
    )
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(name, None)
    return env


# --------------------------------------------------------------------------------------------
# The baselines (run in their own process by `--baseline NAME`)


def _records(demo: Path) -> list[dict[str, Any]]:
    lines = (demo / "train.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _common_args(out: Path, steps: int) -> dict[str, Any]:
    return {
        "output_dir": str(out / "checkpoints"),
        "max_steps": steps,
        "per_device_train_batch_size": BATCH,
        "gradient_accumulation_steps": 1,
        "learning_rate": LEARNING_RATE,
        "lr_scheduler_type": "linear",
        "warmup_steps": WARMUP,
        "logging_strategy": "steps",
        "logging_steps": 1,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": SAVE_STEPS,
        "save_total_limit": SAVE_LIMIT,
        "seed": SEED,
        "data_seed": SEED,
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
    }


def _timing_callback(log_path: Path) -> Any:
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        """Every training log step, written as a JSON line when it is logged."""

        def __init__(self) -> None:
            self.fh = open(log_path, "a", encoding="utf-8")  # noqa: SIM115

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.fh.write(json.dumps({"step": state.global_step, "time": time.time()}) + "\n")
                self.fh.flush()

    return StepTimes()


def _train_maybe_profiled(trainer: Any, out: Path, profile: bool) -> None:
    if not profile:
        trainer.train()
        return
    import cProfile

    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    trainer.train()
    profiler.disable()
    profiler.dump_stats(str(out / "train.prof"))


def _checkpointing_field(config_class: Any) -> str:
    # transformers 5.2x renamed gradient_checkpointing to activation_checkpointing.
    fields = config_class.__dataclass_fields__
    return (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )


def baseline_trl(demo: Path, out: Path, steps: int, profile: bool) -> None:
    """A bare TRL SFTTrainer script on the demo."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(demo / "model")
    model = AutoModelForCausalLM.from_pretrained(demo / "model", dtype=torch.float32)
    matched: dict[str, Any] = (
        {} if TRL_DEFAULTS else {"bf16": False, _checkpointing_field(SFTConfig): False}
    )
    args = SFTConfig(
        **_common_args(out, steps), max_length=MAX_LENGTH, assistant_only_loss=True, **matched
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(_records(demo)),
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),  # type: ignore[arg-type]
        callbacks=[_timing_callback(out / "steps.jsonl")],
    )
    _train_maybe_profiled(trainer, out, profile)


def baseline_plain(demo: Path, out: Path, steps: int, profile: bool) -> None:
    """A plain transformers Trainer + PEFT script on the demo (answers-only labels)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(demo / "model")
    base = AutoModelForCausalLM.from_pretrained(demo / "model", dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", **LORA))  # type: ignore[arg-type]

    def tokenize(example: dict[str, Any]) -> dict[str, Any]:
        enc: Any = tokenizer.apply_chat_template(
            example["messages"],
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        ids = list(enc["input_ids"])[:MAX_LENGTH]
        mask = list(enc["assistant_masks"])[:MAX_LENGTH]
        labels = [t if m else -100 for t, m in zip(ids, mask, strict=True)]
        return {"input_ids": ids, "labels": labels}

    dataset = Dataset.from_list(_records(demo)).map(tokenize, remove_columns=["messages"])
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

    trainer = Trainer(
        model=model,
        args=TrainingArguments(**_common_args(out, steps), remove_unused_columns=False),
        train_dataset=dataset,
        data_collator=collate,
        callbacks=[_timing_callback(out / "steps.jsonl")],
    )
    _train_maybe_profiled(trainer, out, profile)


# --------------------------------------------------------------------------------------------
# The driver


Sample = tuple[int, float, float]  # (step, wall seconds, process CPU seconds)


def _watch(argv: list[str], log: Path, steps_file: Path, is_step: Any) -> list[Sample]:
    """Run `argv`; each time a new step line shows up in `steps_file`, note wall and CPU time.

    The same observer times all three programs: it polls the file every millisecond and reads
    the process's CPU time (user + system, all its threads) with psutil. CPU time is what the
    steady-state rate is computed from, because this machine is shared: a descheduled process
    loses wall time but not CPU time. Wall-time rates are printed next to it.
    """
    import psutil

    samples: list[Sample] = []
    offset = 0
    pending = b""
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)
        ps = psutil.Process(proc.pid)
        while True:
            done = proc.poll() is not None
            try:
                with open(steps_file, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                offset += len(chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                step = None
                for line in lines:
                    record = json.loads(line)
                    if is_step(record):
                        step = int(record["step"])
                if step is not None and not done:
                    try:
                        cpu = ps.cpu_times()
                    except psutil.Error:
                        break
                    samples.append((step, time.perf_counter(), cpu.user + cpu.system))
            if done:
                break
            time.sleep(0.001)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed ({proc.returncode}); see {log}")
    return samples


def _prepare_job(demo: Path, job: Path, steps: int) -> None:
    shutil.copytree(demo, job, ignore=shutil.ignore_patterns("checkpoints", "output"))
    cfg = json.loads((job / "config.json").read_text(encoding="utf-8"))
    cfg["training"]["max_steps"] = steps
    (job / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")


def profile_ours(job: Path, out: Path) -> int:
    """`trainer run` on `job` in this process, with its `Trainer.train()` under cProfile."""
    import cProfile

    import transformers

    import trainer.run

    original = transformers.Trainer.train
    profiler = cProfile.Profile(time.process_time)

    def train(self: Any, *args: Any, **kwargs: Any) -> Any:
        profiler.enable()
        try:
            return original(self, *args, **kwargs)
        finally:
            profiler.disable()
            profiler.dump_stats(str(out / "train.prof"))

    transformers.Trainer.train = train  # type: ignore[method-assign]
    return trainer.run.main(["--job-dir", str(job)])


def _run_ours(demo: Path, work: Path, steps: int) -> list[Sample]:
    job = work / "job"
    _prepare_job(demo, job, steps)
    argv = [sys.executable, "-m", "trainer", "run", "--job-dir", str(job)]

    def is_step(record: dict[str, Any]) -> bool:
        return record.get("kind") == "metric" and "loss" in record

    samples = _watch(argv, work / "console.log", job / "events.jsonl", is_step)
    from trainer.protocol import MetricEvent, read_all_events

    logged = [
        e.step
        for e in read_all_events(job / "events.jsonl")
        if isinstance(e, MetricEvent) and e.loss is not None
    ]
    if logged != list(range(1, steps + 1)):
        raise SystemExit(f"trainer run logged steps {logged}, expected 1..{steps}")
    return samples


def _run_baseline(name: str, demo: Path, work: Path, steps: int, profile: bool) -> list[Sample]:
    argv = [sys.executable, __file__, "--baseline", name, "--demo", str(demo), "--out", str(work)]
    argv += ["--steps", str(steps)] + (["--profile"] if profile else [])
    return _watch(argv, work / "console.log", work / "steps.jsonl", lambda r: "step" in r)


def steady_rates(samples: list[Sample], warmup: int) -> tuple[float, float]:
    """(steps per CPU second, steps per wall second) from step `warmup` to the last one seen.

    Checkpoint saves inside that window are included: all three programs save alike.
    """
    kept = [s for s in samples if s[0] >= warmup]
    if len(kept) < 2 or kept[-1][0] - kept[0][0] < 10:
        raise SystemExit(f"too few steps observed after the warm-up: {samples}")
    (s0, w0, c0), (s1, w1, c1) = kept[0], kept[-1]
    return (s1 - s0) / (c1 - c0), (s1 - s0) / (w1 - w0)


def _print_profile(path: Path, top: int) -> None:
    import pstats

    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="runs of each program")
    parser.add_argument("--steps", type=int, default=80, help="training steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="log steps not timed")
    parser.add_argument("--profile", action="store_true", help="cProfile one run of each baseline")
    parser.add_argument("--top", type=int, default=30, help="profile entries printed")
    parser.add_argument(
        "--trl-defaults",
        action="store_true",
        help="also time the TRL script with TRL's defaults (bf16 autocast, checkpointing)",
    )
    parser.add_argument("--baseline", choices=BASELINES, help=argparse.SUPPRESS)
    parser.add_argument("--profile-ours", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--demo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.profile_ours:
        return profile_ours(args.profile_ours, args.out)
    if args.baseline:
        global TRL_DEFAULTS
        TRL_DEFAULTS = args.baseline == "trl_defaults"
        run = baseline_plain if args.baseline == "plain" else baseline_trl
        run(args.demo, args.out, args.steps, args.profile)
        return 0
    programs = PROGRAMS + (("trl_defaults",) if args.trl_defaults else ())

    from trainer.demo import make_demo

    root = Path(tempfile.mkdtemp(prefix="trainer-overhead-"))
    try:
        demo = root / "demo"
        make_demo(demo)
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        print(f"cpus: {os.cpu_count()}, load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"{args.steps} steps per run, {args.reps} runs each, first {args.warmup} untimed")
        rates: dict[str, list[float]] = {p: [] for p in programs}
        wall: dict[str, list[float]] = {p: [] for p in programs}
        for rep in range(args.reps):
            shift = rep % len(programs)
            order = programs[shift:] + programs[:shift]
            for program in order:
                work = root / f"{program}-{rep}"
                work.mkdir()
                if program == "ours":
                    samples = _run_ours(demo, work, args.steps)
                else:
                    samples = _run_baseline(program, demo, work, args.steps, profile=False)
                cpu_rate, wall_rate = steady_rates(samples, args.warmup)
                rates[program].append(cpu_rate)
                wall[program].append(wall_rate)
                print(
                    f"  run {rep + 1} {program:>12}: {cpu_rate:6.2f} steps per CPU second "
                    f"({wall_rate:6.2f} steps/s wall)",
                    flush=True,
                )
        if args.profile:
            for program in programs:
                work = root / f"{program}-profile"
                work.mkdir()
                if program == "ours":
                    job = work / "job"
                    _prepare_job(demo, job, args.steps)
                    argv = [
                        sys.executable,
                        __file__,
                        "--profile-ours",
                        str(job),
                        "--out",
                        str(work),
                    ]
                    _watch(argv, work / "console.log", job / "events.jsonl", lambda r: False)
                else:
                    _run_baseline(program, demo, work, args.steps, profile=True)
                print(f"\n===== cProfile (CPU time) of {program}: Trainer.train() =====")
                _print_profile(work / "train.prof", args.top)
        med = {p: statistics.median(rates[p]) for p in programs}
        med_wall = {p: statistics.median(wall[p]) for p in programs}
        print()
        for p in programs:
            print(
                f"{p:>12}: {med[p]:6.2f} steps per CPU second, {med_wall[p]:6.2f} steps/s wall "
                f"(medians; wall ratio {med_wall['ours'] / med_wall[p]:.2f})"
            )
        print(
            f"ratio vs TRL: {med['ours'] / med['trl']:.2f}; "
            f"ratio vs plain Trainer: {med['ours'] / med['plain']:.2f}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
