"""The pod's files, brought into the job folder: events, log and artifacts, and the final word.

The pod's `events.jsonl` and `train.log` are mirrored into the job folder (appended; where the
mirror stands is in `pod.json`), then the mirrored events are read with the same `EventReader`
rules as a local job: from the stored byte offset and seq, whole lines only. So the store,
`ingest` and the charts see a RunPod job exactly as a local one, and the logs outlive the pod.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath

from desktop.core.errors import ProviderError
from desktop.models import Job, JobState, JobUpdate
from desktop.providers.mirrored import append_bytes
from desktop.providers.runpod.agent_client import AgentClient
from desktop.providers.runpod.pod_files import PodRecord, save_record
from trainer.protocol import EVENTS_FILE

__all__ = ["final_word", "mirror", "pull_artifacts"]

_FINAL = ("completed", "failed", "cancelled")
HASH_WAIT_S = 600.0


async def mirror(agent: AgentClient, job_dir: Path, record: PodRecord) -> PodRecord:
    """Append the pod's new events and log to the job folder; the record says where it stands
    (saved after each piece, so nothing is appended twice)."""
    while True:
        answer = await agent.events(record.events_seq)
        events = answer.get("events") or []
        if events:
            lines = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
            await asyncio.to_thread(append_bytes, job_dir / EVENTS_FILE, lines.encode())
            record = record.model_copy(update={"events_seq": int(answer["last_seq"])})
            await asyncio.to_thread(save_record, job_dir, record)
        if not answer.get("more"):
            break
    while True:
        piece = await agent.log(record.log_offset)
        if piece.data:
            await asyncio.to_thread(append_bytes, job_dir / "train.log", piece.data)
            record = record.model_copy(update={"log_offset": piece.next_offset})
            await asyncio.to_thread(save_record, job_dir, record)
        if not piece.data or piece.next_offset >= piece.size:
            return record


async def pull_artifacts(
    agent: AgentClient, job_dir: Path, sleep: Callable[[float], Awaitable[None]]
) -> int:
    """Download every artifact the pod lists into the job folder, each verified by sha256;
    returns how many. Waits (real time, bounded) while the agent still hashes some.

    Raises:
        ProviderError: a path that leaves the job folder, a hash still missing at the
            deadline, or a download that does not match its hash.
    """
    deadline = time.monotonic() + HASH_WAIT_S
    while True:
        files, pending = await agent.artifacts()
        if not pending and all(f.sha256 for f in files):
            break
        if time.monotonic() > deadline:
            raise ProviderError(f"the pod still hashes {pending} artifacts after {HASH_WAIT_S} s")
        await asyncio.sleep(0.2)
    for remote in files:
        parts = PurePosixPath(remote.path).parts
        if (
            remote.path.startswith("/")
            or ".." in parts
            or parts[0] not in ("output", "checkpoints")
        ):
            raise ProviderError(f"the pod listed an artifact outside the job: {remote.path!r}")
        await agent.download(remote, job_dir.joinpath(*parts))
    return len(files)


def _trainer_final(job_dir: Path) -> tuple[str, str] | None:
    """The trainer's last final status event in the mirrored events, if any."""
    found = None
    try:
        with open(job_dir / EVENTS_FILE, encoding="utf-8") as handle:
            for line in handle:
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if data.get("kind") == "status" and data.get("state") in _FINAL:
                    found = (str(data["state"]), str(data.get("message", "")))
    except FileNotFoundError:
        return None
    return found


def final_word(job: Job, record: PodRecord, update: JobUpdate) -> JobUpdate:
    """`update` with the job's final state: the app's own verdict (budget, cancel, a lost pod)
    first, else the trainer's last status confirmed by its exit code."""
    if record.final_state is not None:
        state, reason = JobState(record.final_state), record.final_reason
    else:
        said = _trainer_final(job.job_dir)
        if said is not None and (said[0] != "completed" or record.exit_code == 0):
            state, reason = JobState(said[0]), said[1]
        else:
            state = JobState.FAILED
            reason = f"the trainer exited (code {record.exit_code}) without a final status"
    return update.model_copy(
        update={
            "state": None if state == job.state else state,
            "reason": reason,
            "exit_code": record.exit_code,
        }
    )
