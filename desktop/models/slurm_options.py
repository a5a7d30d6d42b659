"""Slurm clusters and what a Slurm job is submitted with.

A `ClusterProfile` is one cluster a person reaches over SSH: host, user, port, the remote work
folder (on the shared file system), the trainer runtime there, and the submission defaults
(partition, account, QoS, time limit, GPUs per node, extra `#SBATCH` lines). `Settings.slurm`
holds the profiles by name; the CLI's `--cluster`, `--partition`, `--nodes`, ... choose and
replace them for one run, and the provider copies what it submitted into the job's folder
(`slurm.json`), so a job keeps the options it started with.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ClusterProfile", "SlurmOptions", "parse_time_limit"]

_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Slurm names (partition, account, QoS): one word, so nothing else reaches the batch script.
_WORD = r"^[A-Za-z0-9_.,+-]+$"


def parse_time_limit(text: str) -> int:
    """Seconds in a Slurm time limit (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM[:SS]`).

    Raises:
        ValueError: naming the value and the accepted forms.
    """
    found = _TIME.match(text.strip())
    if not found or text.strip() == "":
        raise ValueError(
            f"time limit {text!r} is not a Slurm time: use MM, HH:MM:SS or D-HH:MM (e.g. 4:00:00)"
        )
    days, a, b, c = found.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    elif b is None:  # MM
        total = int(a) * 60
    elif c is None:  # MM:SS
        total = int(a) * 60 + int(b)
    else:  # HH:MM:SS
        total = int(a) * 3600 + int(b) * 60 + int(c)
    if total <= 0:
        raise ValueError(f"time limit {text!r} must be longer than zero")
    return total


class ClusterProfile(BaseModel):
    """One Slurm cluster reached over SSH (frozen; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(title="Host", min_length=1, description="The login node's host name.")
    user: str = Field(title="User", min_length=1)
    port: int = Field(default=22, title="SSH port", ge=1, le=65535)
    work_dir: str = Field(
        title="Remote work folder",
        description="An absolute path on the cluster's shared file system; each job gets a "
        "folder inside it.",
    )
    python: str = Field(
        default="python3",
        title="Trainer runtime on the cluster",
        description="The Python on the compute nodes with the trainer's requirements (a venv's "
        "bin/python); checked with `python -m trainer doctor` by `clusters test`.",
    )
    key_file: str | None = Field(
        default=None,
        title="SSH key file",
        description="Empty: the keys of your ssh-agent and ~/.ssh. A passphrase is read from "
        "the keychain (`finetune-desk keys set ssh_passphrase`).",
    )
    known_hosts: str | None = Field(
        default=None,
        title="known_hosts file",
        description="Empty: ~/.ssh/known_hosts. Host keys are always checked.",
    )
    partition: str | None = Field(default=None, title="Partition", pattern=_WORD)
    account: str | None = Field(default=None, title="Account", pattern=_WORD)
    qos: str | None = Field(default=None, title="QoS", pattern=_WORD)
    cpus_per_task: int | None = Field(
        default=None,
        title="CPUs per node",
        description="Cores for the training processes of one node; empty: one per process.",
        ge=1,
        le=1024,
    )
    time_limit: str = Field(default="4:00:00", title="Time limit")
    gpus_per_node: int = Field(default=0, title="GPUs per node", ge=0, le=64)
    extra_sbatch: tuple[str, ...] = Field(
        default=(),
        title="Extra #SBATCH lines",
        description="Options added to the batch script as they are, e.g. '--constraint=a100'.",
    )
    setup_lines: tuple[str, ...] = Field(
        default=(),
        title="Setup lines",
        description="Shell lines run before the trainer (e.g. 'module load cuda/12.4').",
    )
    signal_lead_s: int = Field(
        default=120,
        title="Checkpoint warning (s)",
        description="The trainer gets SIGTERM this long before the time limit, to checkpoint.",
        ge=10,
        le=3600,
    )
    max_requeues: int = Field(
        default=3,
        title="Requeue limit",
        description="Times a job is requeued after a time limit or preemption before it fails.",
        ge=0,
        le=100,
    )

    @field_validator("work_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not an absolute path on the cluster (start with /)")
        if any(c.isspace() for c in value):
            raise ValueError(f"{value!r}: #SBATCH lines cannot hold spaces; pick a folder without")
        return value.rstrip("/") or "/"

    @field_validator("time_limit")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_time_limit(value)
        return value

    @field_validator("extra_sbatch")
    @classmethod
    def _sbatch(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for line in value:
            if "\n" in line or not line.strip().startswith("-"):
                raise ValueError(f"extra #SBATCH line {line!r} must be one option like '--mem=64G'")
        return value


class SlurmOptions(BaseModel):
    """The clusters a person set up and the options of one Slurm launch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clusters: dict[str, ClusterProfile] = Field(default_factory=dict, title="Clusters")
    cluster: str | None = Field(default=None, title="Cluster", description="The one to use.")
    partition: str | None = Field(default=None, title="Partition (this run)", pattern=_WORD)
    nodes: int = Field(default=1, title="Nodes", ge=1, le=1024)
    tasks_per_node: int = Field(
        default=1,
        title="Processes per node",
        description="Training processes per node (one per GPU; on CPU nodes, gloo processes).",
        ge=1,
        le=64,
    )
    gpus_per_node: int | None = Field(default=None, title="GPUs per node (this run)", ge=0)
    time_limit: str | None = Field(default=None, title="Time limit (this run)")

    @field_validator("clusters")
    @classmethod
    def _names(cls, value: dict[str, ClusterProfile]) -> dict[str, ClusterProfile]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(
                    f"cluster name {name!r}: use letters, digits, '.', '_' or '-' (max 63)"
                )
        return value

    @field_validator("time_limit")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time_limit(value)
        return value

    def profile(self, name: str | None = None) -> tuple[str, ClusterProfile]:
        """The chosen cluster's name and profile.

        Raises:
            KeyError: with a sentence naming what exists and how to add one.
        """
        chosen = name or self.cluster or (next(iter(self.clusters)) if self.clusters else None)
        if chosen is None or chosen not in self.clusters:
            known = ", ".join(sorted(self.clusters)) or "none"
            raise KeyError(
                f"no cluster named {chosen!r} (known: {known}); add one with: "
                "finetune-desk clusters add NAME --host HOST --user USER --work-dir /path"
            )
        return chosen, self.clusters[chosen]
