"""What a cluster offers, asked over SSH: its partitions (`sinfo`) and the trainer runtime there
(`python -m trainer doctor --json` with the profile's Python).

`clusters test` and the window's Slurm panel use these; they reuse the provider's pieces (the
`SshSession`, the trainer bundle it uploads, `PYTHONPATH` at the unpacked bundle as the batch
script sets it), so a cluster that passes the test runs jobs the same way.
"""

from __future__ import annotations

import asyncio
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desktop.core.errors import ProviderError
from desktop.providers.mirrored import trainer_bundle
from desktop.providers.slurm.ssh import SshSession
from trainer.reports import DoctorReport

__all__ = ["DOCTOR_DIR", "Partition", "parse_sinfo", "partitions", "remote_doctor"]

DOCTOR_DIR = "ftdesk-doctor"  # inside the profile's work folder, removed after the doctor
SINFO = "sinfo -h -o '%P|%a|%D|%T'"


@dataclass(frozen=True)
class Partition:
    """One Slurm partition as `sinfo` lists it.

    Attributes:
        name: the partition's name (without sinfo's `*`).
        default: whether it is the cluster's default partition.
        available: `up`, `down`, `drain` or `inact`.
        nodes: node counts by state, e.g. `{"idle": 1}`.
    """

    name: str
    default: bool
    available: str
    nodes: dict[str, int]

    def describe(self) -> str:
        """`debug (default): up, 1 idle` for people."""
        counts = ", ".join(f"{n} {state}" for state, n in sorted(self.nodes.items())) or "no nodes"
        return f"{self.name}{' (default)' if self.default else ''}: {self.available}, {counts}"


def parse_sinfo(text: str) -> list[Partition]:
    """Partitions from `sinfo -h -o '%P|%a|%D|%T'` (one line per partition and node state).

    Raises:
        ProviderError: a line that is not `partition|availability|count|state`.
    """
    found: dict[str, Partition] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split("|")
        if len(parts) != 4 or not parts[2].isdigit():
            raise ProviderError(f"sinfo printed {line.strip()!r}, not partition|avail|nodes|state")
        raw, available, count, state = parts
        name = raw.rstrip("*")
        known = found.get(name) or Partition(name, raw.endswith("*"), available, {})
        nodes = {**known.nodes, state.lower(): known.nodes.get(state.lower(), 0) + int(count)}
        found[name] = Partition(name, known.default, known.available, nodes)
    return list(found.values())


async def partitions(session: SshSession) -> list[Partition]:
    """The cluster's partitions, asked with `sinfo` on its login node.

    Raises:
        ProviderError: SSH or `sinfo` failed (the message names which).
    """
    listed = await session.run(SINFO)
    return parse_sinfo(listed.stdout)


async def remote_doctor(session: SshSession) -> DoctorReport:
    """`python -m trainer doctor --json` with the profile's Python, from this app's trainer
    source uploaded into `<work_dir>/ftdesk-doctor` (as a job's is).

    Raises:
        ProviderError: the upload failed, or the runtime printed no report (the message has
            its last line of output and the command to try by hand).
    """
    profile = session.profile
    folder = f"{profile.work_dir}/{DOCTOR_DIR}"
    q = shlex.quote
    await session.run(f"rm -rf {q(folder)} && mkdir -p {q(folder)}/src")
    with tempfile.TemporaryDirectory(prefix="ftdesk-slurm-") as scratch:
        bundle = Path(scratch) / "trainer.tar.gz"
        bundle.write_bytes(await asyncio.to_thread(trainer_bundle))
        await session.put(bundle, f"{folder}/trainer.tar.gz")
    await session.run(f"tar -xzf {q(folder)}/trainer.tar.gz -C {q(folder)}/src")
    command = f"cd {q(folder)} && PYTHONPATH=src {q(profile.python)} -m trainer doctor --json"
    done = await session.run(command, check=False, timeout=300.0)
    await session.run(f"rm -rf {q(folder)}", check=False)  # nothing left behind on the cluster
    try:
        return DoctorReport.parse(_last_json(done.stdout))
    except ValueError:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise ProviderError(
            f"{profile.python} -m trainer doctor on {profile.host} exited {done.returncode} "
            f"without a report ({said[-1] if said else 'no output'}); set the cluster's python "
            "to a venv with the trainer's requirements (finetune-desk clusters add NAME "
            "--python /path/to/venv/bin/python)"
        ) from None


def _last_json(stdout: str) -> Any:
    """The JSON object the doctor printed (a login banner may precede it)."""
    import json

    start = stdout.find("{")
    if start < 0:
        raise ValueError("no JSON object")
    return json.loads(stdout[start:])
