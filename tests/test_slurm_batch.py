"""The Slurm provider's pure parts: time limits, profiles, the batch script, Slurm's answers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from desktop.models import ClusterProfile, JobState, SlurmOptions
from desktop.models.slurm_options import parse_time_limit
from desktop.providers.slurm.batch import (
    BatchPlan,
    parse_sacct,
    parse_squeue,
    render_batch_script,
)


def _profile(**fields: object) -> ClusterProfile:
    return ClusterProfile.model_validate(
        {"host": "login", "user": "me", "work_dir": "/scratch/me", **fields}
    )


def _plan(**fields: object) -> BatchPlan:
    values: dict[str, object] = {
        "job_id": "20261202-120000-abcd",
        "remote_dir": "/scratch/me/ftdesk-20261202-120000-abcd",
        "python": "/opt/venv/bin/python",
        "nodes": 1,
        "tasks_per_node": 1,
        "gpus_per_node": 0,
        "time_limit": "4:00:00",
        "partition": "gpu",
        "resume": False,
    }
    values.update(fields)
    return BatchPlan(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 1800), ("1", 60), ("5:30", 330), ("4:00:00", 14400), ("2-12", 216000),
     ("1-02:03", 93780), ("1-02:03:04", 93784)],
)  # fmt: skip
def test_slurm_time_limits_read_as_slurm_reads_them(text: str, seconds: int) -> None:
    assert parse_time_limit(text) == seconds


@pytest.mark.parametrize("bad", ["", "four hours", "1:2:3:4", "0", "-5"])
def test_a_bad_time_limit_names_the_value_and_the_forms(bad: str) -> None:
    with pytest.raises(ValueError, match="time limit") as caught:
        parse_time_limit(bad)
    assert repr(bad) in str(caught.value)


def test_a_profile_refuses_what_would_go_wrong_on_the_cluster() -> None:
    with pytest.raises(ValidationError, match="not an absolute path"):
        _profile(work_dir="scratch/me")
    with pytest.raises(ValidationError, match="must be one option"):
        _profile(extra_sbatch=("mem=64G",))
    with pytest.raises(ValidationError, match="time limit"):
        _profile(time_limit="soon")
    with pytest.raises(ValidationError, match="cluster name"):
        SlurmOptions.model_validate({"clusters": {"my lab": _profile().model_dump()}})
    with pytest.raises(KeyError, match="finetune-desk clusters add"):
        SlurmOptions().profile("lab")


def test_the_batch_script_warns_before_the_limit_and_requeues_itself() -> None:
    profile = _profile(
        account="proj", qos="high", extra_sbatch=("--mem=64G",), setup_lines=("module load cuda",)
    )
    script = render_batch_script(profile, _plan(gpus_per_node=4))
    for line in (
        "#SBATCH --signal=B:TERM@120",
        "#SBATCH --requeue",
        "#SBATCH --time=4:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj",
        "#SBATCH --qos=high",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --mem=64G",
        "module load cuda",
        'scontrol requeue "$SLURM_JOB_ID"',
        # a run that completed before a late SIGTERM is never requeued
        'grep -q \'"state": *"completed"\' "$JOB_DIR/status.json"',
        "srun --ntasks-per-node=1",
    ):
        assert line in script, line
    assert "/opt/venv/bin/python -m trainer run --job-dir" in script
    # A limit shorter than twice the warning still leaves the trainer half of it.
    assert "#SBATCH --signal=B:TERM@30" in render_batch_script(profile, _plan(time_limit="1"))


def test_several_nodes_meet_at_a_rendezvous_on_the_first_node() -> None:
    script = render_batch_script(_profile(), _plan(nodes=2, tasks_per_node=4))
    assert "#SBATCH --nodes=2" in script
    assert "-m trainer.launch --nnodes=$SLURM_JOB_NUM_NODES --nproc_per_node=4" in script
    assert '--rdzv_backend=c10d --rdzv_endpoint="$first:29500"' in script
    assert 'first="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"' in script


def test_squeue_and_sacct_answers_are_read_faithfully() -> None:
    pending = parse_squeue("PENDING|Priority|\n")
    assert pending is not None and pending.waiting and pending.reason == "Priority"
    assert pending.job_state(JobState.QUEUED) is JobState.PROVISIONING
    running = parse_squeue("RUNNING|None|node[01-02]\n")
    assert running is not None and running.running and running.nodes == "node[01-02]"
    assert running.job_state(JobState.PROVISIONING) is JobState.STARTING
    assert running.job_state(JobState.TRAINING) is None
    assert parse_squeue("") is None
    # A requeued job: one row per attempt; the newest decides, the count is the restarts.
    rows = "41|REQUEUED|0:0|node01|None\n41|COMPLETED|0:0|node01|None\n"
    done = parse_sacct(rows, "41")
    assert done is not None and done.ended and done.exit_code == 0 and done.restarts == 1
    killed = parse_sacct("41|CANCELLED by 0|0:15|node01|None\n", "41")
    assert killed is not None and killed.state == "CANCELLED" and killed.exit_code == 128 + 15
    oom = parse_sacct("41|OUT_OF_MEMORY|0:125|node01|None\n", "41")
    assert oom is not None and oom.state == "OUT_OF_MEMORY"
    assert parse_sacct("42|COMPLETED|0:0|n|None\n", "41") is None
