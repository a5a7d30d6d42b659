"""The batch script a Slurm job runs, and Slurm's states read faithfully.

The script (`render_batch_script`) runs the trainer through `srun` in the job's remote folder,
its output appended to `train.log`. `--signal=B:TERM@LEAD` gives the batch shell SIGTERM that
long before the time limit; the shell passes it on to the trainer's tasks (`scancel --signal`
on the step, not to `srun`, which would end the step with SIGKILL after Slurm's KillWait), the
trainer checkpoints and ends, and the script then requeues its own job with
`scontrol requeue` (`--requeue` alone does not requeue a job that hit its time limit), up to the
profile's limit, unless the app asked for the cancel (`cancel-requested` in the folder). A
requeued attempt (`SLURM_RESTART_COUNT` > 0) resumes from the newest checkpoint. Several nodes
run `python -m trainer.launch` once per node with a c10d rendezvous on the first node of
`$SLURM_JOB_NODELIST`; one node with several processes runs it `--standalone`. That launcher
ignores SIGTERM, so Slurm's step signal reaches each worker exactly once. Rank 0 alone writes
events.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from desktop.models import ClusterProfile, JobState
from desktop.models.slurm_options import parse_time_limit

__all__ = [
    "CANCEL_MARKER",
    "FINAL_SLURM_STATES",
    "REQUEUE_LIMIT_MARKER",
    "BatchPlan",
    "SlurmStatus",
    "parse_sacct",
    "parse_squeue",
    "render_batch_script",
]

CANCEL_MARKER = "cancel-requested"  # the app asked for the cancel: never requeue
REQUEUE_LIMIT_MARKER = "requeue-limit-reached"  # stopped by Slurm with no requeue left
RENDEZVOUS_PORT = 29500

# Slurm's job states (squeue %T / sacct State) and what each means for the job.
_WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING"}
_RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED"}
FINAL_SLURM_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)


@dataclass(frozen=True)
class BatchPlan:
    """What one submission asks of Slurm."""

    job_id: str
    remote_dir: str
    python: str
    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    time_limit: str
    partition: str | None
    resume: bool


def _sbatch_lines(profile: ClusterProfile, plan: BatchPlan) -> list[str]:
    lead = min(profile.signal_lead_s, max(parse_time_limit(plan.time_limit) // 2, 10))
    # One Slurm task per node runs every training process of that node: give it a core each.
    cpus = profile.cpus_per_task or plan.tasks_per_node
    lines = [
        f"--job-name=ftdesk-{plan.job_id}",
        f"--chdir={plan.remote_dir}",
        f"--output={plan.remote_dir}/slurm-%j.out",
        "--open-mode=append",
        f"--nodes={plan.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={cpus}",
        f"--time={plan.time_limit}",
        f"--signal=B:TERM@{lead}",
        "--requeue",
    ]
    if plan.partition:
        lines.append(f"--partition={plan.partition}")
    if profile.account:
        lines.append(f"--account={profile.account}")
    if profile.qos:
        lines.append(f"--qos={profile.qos}")
    if plan.gpus_per_node:
        lines.append(f"--gpus-per-node={plan.gpus_per_node}")
    lines.extend(line.strip() for line in profile.extra_sbatch)
    return [f"#SBATCH {line}" for line in lines]


def render_batch_script(profile: ClusterProfile, plan: BatchPlan) -> str:
    """The batch script for `plan` (see the module docstring)."""
    q = shlex.quote
    job_dir = plan.remote_dir
    run_args = f"-m trainer run --job-dir {q(job_dir)}"
    # Several processes run under `trainer.launch` (torchrun that ignores SIGTERM), so Slurm's
    # step signal reaches each worker exactly once; a second SIGTERM would make a worker stop
    # without its checkpoint.
    if plan.nodes > 1:
        trainer = (
            f"{q(plan.python)} -m trainer.launch --nnodes=$SLURM_JOB_NUM_NODES "
            f"--nproc_per_node={plan.tasks_per_node} --rdzv_backend=c10d "
            f'--rdzv_endpoint="$first:{RENDEZVOUS_PORT}" --rdzv_id="$SLURM_JOB_ID" '
            f"--signals_to_handle SIGHUP,SIGQUIT {run_args}"
        )
    elif plan.tasks_per_node > 1:
        trainer = (
            f"{q(plan.python)} -m trainer.launch --standalone "
            f"--nproc_per_node={plan.tasks_per_node} --signals_to_handle SIGHUP,SIGQUIT {run_args}"
        )
    else:
        trainer = f"{q(plan.python)} {run_args}"
    setup = "\n".join(profile.setup_lines)
    return f"""#!/bin/bash
{chr(10).join(_sbatch_lines(profile, plan))}
# Written by Finetune Desk for job {plan.job_id}. The trainer's output goes to train.log.
set -u
JOB_DIR={q(job_dir)}
cd "$JOB_DIR" || exit 1
export PYTHONPATH="$JOB_DIR/src${{PYTHONPATH:+:$PYTHONPATH}}"
export PYTHONUNBUFFERED=1
say() {{ echo "[slurm $(date -u +%Y-%m-%dT%H:%M:%SZ)] $*" >> "$JOB_DIR/train.log"; }}
{setup}
restarts="${{SLURM_RESTART_COUNT:-0}}"
say "Slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, attempt $((restarts + 1))"
resume={"--resume" if plan.resume else '""'}
if [ "$restarts" -gt 0 ]; then
  if ls -d "$JOB_DIR"/checkpoints/checkpoint-* >/dev/null 2>&1; then
    resume=--resume
    say "requeued: resuming from the newest checkpoint"
  else
    say "requeued before the first checkpoint: training starts again from step 0"
  fi
fi
first="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
stopped=""
on_term() {{
  stopped=1
  say "SIGTERM from Slurm (time limit, preemption or cancel): the trainer checkpoints"
  # To the trainer's tasks, not to srun: srun would end the step (SIGKILL after KillWait),
  # cutting a checkpoint short. The trainer saves after its current step and exits.
  scancel --signal=TERM "$SLURM_JOB_ID.0" 2>/dev/null \
    || {{ [ -n "${{child:-}}" ] && kill -TERM "$child" 2>/dev/null; }}
}}
trap on_term TERM
srun --ntasks-per-node=1 --kill-on-bad-exit=1 {trainer} $resume >> "$JOB_DIR/train.log" 2>&1 &
child=$!
while true; do
  wait "$child"
  code=$?
  kill -0 "$child" 2>/dev/null || break
done
say "trainer exited with code $code"
if grep -q '"state": *"completed"' "$JOB_DIR/status.json" 2>/dev/null; then
  # It finished (output whole) before a late SIGTERM cut its exit short: never requeue a
  # completed run (the next attempt would refuse to train again and fail the job).
  say "the trainer had completed"
  exit 0
fi
if [ -n "$stopped" ] && [ ! -e "$JOB_DIR/{CANCEL_MARKER}" ]; then
  if [ "$restarts" -lt {profile.max_requeues} ]; then
    say "requeueing (restart $((restarts + 1)) of at most {profile.max_requeues})"
    if scontrol requeue "$SLURM_JOB_ID"; then
      exit 0
    fi
    say "scontrol requeue failed: the job ends here; resume it from the app"
    touch "$JOB_DIR/{REQUEUE_LIMIT_MARKER}"
    exit 1
  fi
  say "stopped by Slurm with no requeue left ({profile.max_requeues})"
  touch "$JOB_DIR/{REQUEUE_LIMIT_MARKER}"
fi
exit "$code"
"""


@dataclass(frozen=True)
class SlurmStatus:
    """One Slurm job as `squeue` or `sacct` sees it."""

    state: str
    reason: str = ""
    nodes: str = ""
    exit_code: int | None = None
    restarts: int = 0

    @property
    def waiting(self) -> bool:
        """In the queue (pending, or requeued and pending again)."""
        return self.state in _WAITING

    @property
    def running(self) -> bool:
        """Running (or completing) on its nodes."""
        return self.state in _RUNNING

    @property
    def ended(self) -> bool:
        """In a final Slurm state."""
        return self.state in FINAL_SLURM_STATES

    def job_state(self, current: JobState) -> JobState | None:
        """The job state this observation shows, None when it changes nothing."""
        if self.waiting and current in (JobState.QUEUED, JobState.UNKNOWN):
            return JobState.PROVISIONING
        if self.running and current in (JobState.QUEUED, JobState.PROVISIONING, JobState.UNKNOWN):
            return JobState.STARTING
        return None


def _state_word(text: str) -> str:
    # sacct writes "CANCELLED by 0"; squeue writes the bare name.
    return text.strip().split(" ")[0].rstrip("+").upper()


def parse_squeue(text: str) -> SlurmStatus | None:
    """`squeue -h -t all -o %T|%r|%N` for one job; None when Slurm no longer lists it."""
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 3 and parts[0].strip():
            reason = parts[1].strip()
            return SlurmStatus(
                _state_word(parts[0]),
                "" if reason in ("None", "(null)") else reason,
                parts[2].strip(),
            )
    return None


def parse_sacct(text: str, slurm_id: str) -> SlurmStatus | None:
    """`sacct -n -X -D -P -j ID -o JobID,State,ExitCode,NodeList,Reason` (every attempt of a
    requeued job is a row); the newest row's state, and how often the job was requeued.
    None when accounting has no row yet."""
    rows = [
        line.split("|")
        for line in text.splitlines()
        if line.strip() and line.split("|")[0].split(".")[0] == slurm_id
    ]
    if not rows:
        return None
    last = rows[-1]
    exit_code: int | None = None
    if len(last) > 2 and ":" in last[2]:
        code, sig = last[2].split(":", 1)
        exit_code = int(code) if code.isdigit() else None
        if sig.isdigit() and int(sig):
            exit_code = 128 + int(sig)
    return SlurmStatus(
        _state_word(last[1]),
        last[4].strip() if len(last) > 4 and last[4].strip() != "None" else "",
        last[3].strip() if len(last) > 3 else "",
        exit_code,
        restarts=len(rows) - 1,
    )
