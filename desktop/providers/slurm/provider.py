"""The Slurm provider: a job runs through a lab cluster's own Slurm, reached over SSH.

`launch` makes the job's folder on the cluster's shared file system (`<work_dir>/ftdesk-<id>`),
uploads the trainer source, the config and the dataset (each checked by sha256; a dataset path
that already exists on the cluster is used where it is), writes the batch script
(`batch.render_batch_script`) and submits it with `sbatch --parsable`. Everything a restarted
app needs is in the job's `slurm.json`.

`poll` asks Slurm first (`squeue`, then `sacct` once the job has left the queue: its final state,
exit code and how often it was requeued), then mirrors the remote `events.jsonl` and
`train.log` into the job folder from their byte offsets over SFTP, and reads the mirrored events
with the local rules (`desktop.providers.mirrored`). Slurm's states are kept as they are in the
handle (`slurm_state`, `queue_reason`, `nodes`, `restarts`) for the window's details. A job that
Slurm ended is final only then: artifacts pulled and verified (`output/` and the newest
checkpoint), the whole log already mirrored, and the remote folder removed only after a
completed job's artifacts arrived (a cancelled or failed job keeps it, so a resume continues
there).

`cancel` marks the cancel in the remote folder (the batch script then does not requeue), sends
SIGTERM to the batch shell (`scancel --batch --signal=TERM`: the trainer checkpoints), and
after the grace period cancels the job outright. A job still pending is simply cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import tempfile
from pathlib import Path, PurePosixPath

from desktop.core.errors import ConfigError, ProviderError, UnreachableError
from desktop.models import Job, JobState, JobUpdate, LogChunk, ProviderHandle, Settings
from desktop.providers.base import Capability, ProviderContext
from desktop.providers.local.logs import read_log
from desktop.providers.mirrored import append_bytes, last_status, read_mirrored, trainer_bundle
from desktop.providers.slurm.batch import (
    CANCEL_MARKER,
    REQUEUE_LIMIT_MARKER,
    BatchPlan,
    SlurmStatus,
    parse_sacct,
    parse_squeue,
    render_batch_script,
)
from desktop.providers.slurm.records import SlurmRecord, load_slurm_record, save_slurm_record
from desktop.providers.slurm.ssh import SshSession, file_sha256
from trainer.protocol import EVENTS_FILE

__all__ = ["SlurmProvider", "build_slurm_provider"]

log = logging.getLogger(__name__)

_MIRROR_PIECE = 4 << 20


class SlurmProvider:
    """Jobs on a Slurm cluster (see the module docstring).

    Args:
        context: the app's settings (clusters in `settings.slurm`), data folder and runtime.
        passphrase: the SSH key file's passphrase, where the profile's key needs one.
        ssh_retry_s: how long one SSH call re-opens a dropped connection before the poll says
            the cluster is unreachable.
    """

    name = "slurm"
    capabilities = frozenset({Capability.MULTI_GPU, Capability.REATTACH})

    def __init__(
        self,
        context: ProviderContext,
        *,
        passphrase: str | None = None,
        ssh_retry_s: float = 30.0,
    ) -> None:
        self._settings: Settings = context.settings
        self._passphrase = passphrase
        self._retry_s = ssh_retry_s
        self._sessions: dict[tuple[str, str], SshSession] = {}

    def apply_context(self, context: ProviderContext) -> None:
        """New settings from the next launch on; running jobs keep their `slurm.json`."""
        self._settings = context.settings

    def _session(self, record: SlurmRecord) -> SshSession:
        key = (record.cluster, record.profile.model_dump_json())
        session = self._sessions.get(key)
        if session is None:
            session = SshSession(record.profile, self._passphrase, retry_s=self._retry_s)
            self._sessions[key] = session
        return session

    async def aclose(self) -> None:
        """Close the SSH connections; jobs keep running on the cluster."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.aclose()

    async def gpu_slots(self) -> tuple[int, ...]:
        """Not asked (no `Capability.GPU`): Slurm hands out the GPUs."""
        return ()

    def queue_position(self, job_id: str) -> int | None:
        """Not asked (no `Capability.QUEUE`): Slurm's queue reason is in the handle."""
        return None

    # -- launch ----------------------------------------------------------------------------

    def _plan(self, job: Job, existing: SlurmRecord | None) -> tuple[SlurmRecord, BatchPlan]:
        options = self._settings.slurm
        try:
            name, profile = options.profile(existing.cluster if existing else None)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
        if existing is not None:
            profile = existing.profile
        remote_dir = existing.remote_dir if existing else f"{profile.work_dir}/ftdesk-{job.id}"
        plan = BatchPlan(
            job_id=job.id,
            remote_dir=remote_dir,
            python=profile.python,
            nodes=options.nodes,
            tasks_per_node=options.tasks_per_node,
            gpus_per_node=(
                options.gpus_per_node
                if options.gpus_per_node is not None
                else profile.gpus_per_node
            ),
            time_limit=options.time_limit or profile.time_limit,
            partition=options.partition or profile.partition,
            resume=job.resume,
        )
        record = existing or SlurmRecord(cluster=name, profile=profile, remote_dir=remote_dir)
        return record, plan

    async def launch(self, job: Job) -> ProviderHandle:
        """Upload the job and submit it (see the module docstring).

        Raises:
            ConfigError: no such cluster, or a dataset neither here nor on the cluster.
            ProviderError: SSH, an upload or `sbatch` failed (nothing was submitted).
        """
        existing = await asyncio.to_thread(load_slurm_record, job.job_dir)
        record, plan = self._plan(job, existing)
        record = record.model_copy(
            update={
                "final_state": None,
                "final_reason": "",
                "exit_code": None,
                "cancel_requested": False,
                "artifacts_pulled": False,
                "slurm_job_id": None,
            }
        )
        session = self._session(record)
        remote = plan.remote_dir
        q = shlex.quote
        stale = " ".join(
            f"{q(remote)}/{n}" for n in (CANCEL_MARKER, REQUEUE_LIMIT_MARKER, "status.json")
        )
        await session.run(f"mkdir -p {q(remote)}/data {q(remote)}/src && rm -f {stale}")
        config = await self._remote_config(job, session, remote, plan)
        with tempfile.TemporaryDirectory(prefix="ftdesk-slurm-") as scratch:
            bundle = Path(scratch) / "trainer.tar.gz"
            bundle.write_bytes(await asyncio.to_thread(trainer_bundle))
            await session.put(bundle, f"{remote}/trainer.tar.gz")
            cfg_file = Path(scratch) / "config.json"
            cfg_file.write_text(config, encoding="utf-8")
            await session.put(cfg_file, f"{remote}/config.json")
            script = Path(scratch) / "job.sbatch"
            script.write_text(render_batch_script(record.profile, plan), encoding="utf-8")
            await session.put(script, f"{remote}/job.sbatch")
        await session.run(
            f"rm -rf {q(remote)}/src/trainer && "
            f"tar -xzf {q(remote)}/trainer.tar.gz -C {q(remote)}/src",
            timeout=600,
        )
        slurm_id = await self._submit(session, job, remote)
        record = record.model_copy(
            update={
                "slurm_job_id": slurm_id,
                "time_limit": plan.time_limit,
                "submissions": [*record.submissions, slurm_id],
                "slurm_state": "PENDING",
            }
        )
        await asyncio.to_thread(save_slurm_record, job.job_dir, record)
        log.info("job %s: Slurm job %s on %s", job.id, slurm_id, record.cluster)
        return self._handle(record)

    async def _submit(self, session: SshSession, job: Job, remote: str) -> str:
        """`sbatch` once; when its answer is lost with the connection, the job is looked up
        by its unique name and adopted, so a job is never submitted twice."""
        q = shlex.quote
        try:
            submitted = await session.run(
                f"cd {q(remote)} && sbatch --parsable job.sbatch", retry=False
            )
        except UnreachableError:
            for _ in range(3):  # the connection comes back; the queue may lag a moment
                found = await session.run(f"squeue -h -n ftdesk-{job.id} -o %i", check=False)
                ids = found.stdout.split()
                if len(ids) == 1 and ids[0].isdigit():
                    log.info("job %s: the lost sbatch answer was Slurm job %s", job.id, ids[0])
                    return ids[0]
                await asyncio.sleep(2.0)
            raise ProviderError(
                f"job {job.id}: the connection dropped while submitting and Slurm lists no job "
                f"named ftdesk-{job.id}: nothing was submitted; start it again"
            ) from None
        slurm_id = submitted.stdout.strip().split(";")[0]
        if not slurm_id.isdigit():
            raise ProviderError(f"sbatch answered {submitted.stdout.strip()!r}, not a job id")
        return slurm_id

    async def _remote_config(
        self, job: Job, session: SshSession, remote: str, plan: BatchPlan
    ) -> str:
        """The config the cluster trains with; uploads the dataset when it is a local file."""
        cfg = job.config
        if "://" in cfg.dataset.path or "://" in (cfg.dataset.eval_path or ""):
            raise ConfigError(
                "dataset.path: a dataset URL is fetched only by RunPod pods; download it and "
                "give its file (here or on the cluster)"
            )
        data = Path(cfg.dataset.path)
        local = data if data.is_absolute() else job.job_dir / data
        if local.is_file():
            name = f"data/{local.name}"
            await session.put(local, f"{remote}/{name}")
            cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"path": name})})
        elif data.is_absolute():
            found = await session.run(f"test -e {shlex.quote(str(data))}", check=False)
            if found.returncode != 0:
                raise ConfigError(
                    f"dataset.path {str(data)!r} is neither a file here nor on "
                    f"{session.profile.host}: point it at a file on either"
                )
        model = Path(cfg.model.name_or_path)
        model_dir = model if model.is_absolute() else job.job_dir / model
        if model_dir.is_dir():
            # A model on this machine travels with the job (a Hub id is fetched there).
            for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
                rel = path.relative_to(model_dir).as_posix()
                await session.put(path, f"{remote}/model/{rel}")
            moved = cfg.model.model_copy(update={"name_or_path": "model"})
            cfg = cfg.model_copy(update={"model": moved})
        if plan.nodes == 1 and plan.tasks_per_node > 1:
            hardware = cfg.hardware
            field = "cpu_processes" if hardware.device == "cpu" else "num_gpus"
            cfg = cfg.model_copy(
                update={"hardware": hardware.model_copy(update={field: plan.tasks_per_node})}
            )
        return cfg.to_json()

    @staticmethod
    def _handle(record: SlurmRecord) -> ProviderHandle:
        return ProviderHandle(
            provider="slurm",
            extra={
                "cluster": record.cluster,
                "slurm_job_id": record.slurm_job_id or "",
                "slurm_state": record.slurm_state,
                "queue_reason": record.queue_reason,
                "nodes": record.nodes,
                "restarts": str(record.restarts),
            },
        )

    # -- poll ------------------------------------------------------------------------------

    async def _status(self, session: SshSession, slurm_id: str) -> SlurmStatus | None:
        """Slurm's view of the job: squeue while it is listed, else sacct."""
        listed = await session.run(f"squeue -h -t all -j {slurm_id} -o '%T|%r|%N'", check=False)
        live = parse_squeue(listed.stdout) if listed.returncode == 0 else None
        if live is not None and live.running:
            return live  # one command per poll while it runs; sacct when it waits or ended
        accounted = await session.run(
            f"sacct -n -X -D -P -j {slurm_id} -o JobID,State,ExitCode,NodeList,Reason", check=False
        )
        final = parse_sacct(accounted.stdout, slurm_id) if accounted.returncode == 0 else None
        if live is not None and not live.ended:
            # Waiting: perhaps requeued, which only accounting counts.
            restarts = final.restarts if final else 0
            return SlurmStatus(live.state, live.reason, live.nodes, None, restarts)
        if final is not None and final.ended:
            return final
        return live if live is not None else final

    async def _ended_by_its_files(self, session: SshSession, record: SlurmRecord) -> SlurmStatus:
        """What the job's own folder says when Slurm no longer knows the job (no accounting
        and past MinJobAge): the batch script's last words in `train.log`.

        Raises:
            ProviderError: nothing there says the job ended (the job reads `unknown`).
        """
        tail = await session.run(
            "grep -E '^\\[slurm [^]]*\\] (trainer exited with code|requeueing|Slurm job)' "
            f"{shlex.quote(record.remote_dir)}/train.log | tail -n 1",
            check=False,
        )
        words = tail.stdout.strip()
        if "trainer exited with code" in words:
            last = words.rsplit(" ", 1)[-1]
            code = int(last) if last.isdigit() else 1
            return SlurmStatus("COMPLETED" if code == 0 else "FAILED", exit_code=code)
        raise ProviderError(
            f"Slurm knows no job {record.slurm_job_id} any more and its folder does not say it "
            f"ended; see {record.remote_dir}/train.log on {record.cluster}"
        )

    async def _mirror(self, session: SshSession, job: Job, record: SlurmRecord) -> SlurmRecord:
        """Append the remote events and log to the job folder from where the mirror stands."""
        for remote_name, local_name, field in (
            (EVENTS_FILE, EVENTS_FILE, "events_offset"),
            ("train.log", "train.log", "log_offset"),
        ):
            while True:
                offset = int(getattr(record, field))
                data = await session.read_from(
                    f"{record.remote_dir}/{remote_name}", offset, _MIRROR_PIECE
                )
                if not data:
                    break
                await asyncio.to_thread(append_bytes, job.job_dir / local_name, data)
                record = record.model_copy(update={field: offset + len(data)})
                await asyncio.to_thread(save_slurm_record, job.job_dir, record)
                if len(data) < _MIRROR_PIECE:
                    break
        return record

    async def poll(self, job: Job) -> JobUpdate:
        """Slurm's state, the new mirrored events, and the final word once Slurm ended the job.

        Raises:
            ProviderError: the cluster cannot be reached (the job reads `unknown` meanwhile).
        """
        record = await asyncio.to_thread(load_slurm_record, job.job_dir)
        if record is None or record.slurm_job_id is None:
            return JobUpdate(
                state=JobState.FAILED if job.state != JobState.FAILED else None,
                reason="no Slurm submission is recorded for this job (slurm.json)",
            )
        session = self._session(record)
        status = await self._status(session, str(record.slurm_job_id))
        if status is None:
            status = await self._ended_by_its_files(session, record)
        record = await self._mirror(session, job, record)
        if status is not None:
            record = record.model_copy(
                update={
                    "slurm_state": status.state,
                    "queue_reason": status.reason if status.waiting else "",
                    "nodes": status.nodes or record.nodes,
                    "restarts": max(record.restarts, status.restarts),
                }
            )
            await asyncio.to_thread(save_slurm_record, job.job_dir, record)
        ended = status is not None and status.ended
        update = await asyncio.to_thread(read_mirrored, job, ended)
        handle = self._handle(record)
        if job.handle is None or job.handle.extra != handle.extra:
            update = update.model_copy(update={"handle": handle})
        if not ended:
            if update.state is None and status is not None:
                observed = status.job_state(job.state)
                if observed is not None:
                    update = update.model_copy(update={"state": observed})
            return update
        assert status is not None
        record = await self._finish(session, job, record, status)
        state = JobState(record.final_state or "failed")
        return update.model_copy(
            update={
                "state": None if state == job.state else state,
                "reason": record.final_reason,
                "exit_code": record.exit_code,
                "handle": handle,
            }
        )

    async def _finish(
        self, session: SshSession, job: Job, record: SlurmRecord, status: SlurmStatus
    ) -> SlurmRecord:
        """Decide the final word, pull the artifacts, clean up after a completed job."""
        if record.final_state is None:
            limit_hit = (
                await session.size(f"{record.remote_dir}/{REQUEUE_LIMIT_MARKER}")
            ) is not None
            state, reason = _verdict(job, record, status, limit_hit)
            record = record.model_copy(
                update={"final_state": state, "final_reason": reason, "exit_code": status.exit_code}
            )
            await asyncio.to_thread(save_slurm_record, job.job_dir, record)
        if not record.artifacts_pulled:
            pulled = await self._pull_artifacts(session, job, record)
            record = record.model_copy(update={"artifacts_pulled": True})
            await asyncio.to_thread(save_slurm_record, job.job_dir, record)
            log.info("job %s: %d artifacts pulled from %s", job.id, pulled, record.cluster)
            if record.final_state == "completed":
                await session.run(f"rm -rf {shlex.quote(record.remote_dir)}")
        return record

    async def _pull_artifacts(self, session: SshSession, job: Job, record: SlurmRecord) -> int:
        """Download `output/` and the newest checkpoint, each file checked by its sha256."""
        q = shlex.quote(record.remote_dir)
        newest = await session.run(
            f"cd {q} && ls -d checkpoints/checkpoint-* 2>/dev/null | sort -t- -k2 -n | tail -n 1",
            check=False,
        )
        folders = ["output"] + ([newest.stdout.strip()] if newest.stdout.strip() else [])
        listed = await session.run(
            f"cd {q} && for d in {' '.join(shlex.quote(f) for f in folders)}; do "
            '[ -d "$d" ] && find "$d" -type f -exec sha256sum {} +; done; true',
            timeout=3600,  # a full fine-tune's weights take minutes to hash
        )
        count = 0
        for line in listed.stdout.splitlines():
            digest, _, rel = line.partition("  ")
            parts = PurePosixPath(rel).parts
            if not rel or rel.startswith("/") or ".." in parts:
                raise ProviderError(f"the cluster listed an artifact outside the job: {rel!r}")
            target = job.job_dir.joinpath(*parts)
            if target.is_file() and await asyncio.to_thread(file_sha256, target) == digest:
                count += 1
                continue
            await session.get(f"{record.remote_dir}/{rel}", target, digest)
            count += 1
        return count

    # -- cancel, logs, artifacts -------------------------------------------------------------

    async def cancel(self, job: Job) -> None:
        """Ask the trainer to checkpoint and stop; cancel the Slurm job after the grace period."""
        record = await asyncio.to_thread(load_slurm_record, job.job_dir)
        if record is None or record.slurm_job_id is None or record.final_state is not None:
            return
        record = record.model_copy(update={"cancel_requested": True})
        await asyncio.to_thread(save_slurm_record, job.job_dir, record)
        session = self._session(record)
        sid = str(record.slurm_job_id)
        await session.run(f"touch {shlex.quote(record.remote_dir)}/{CANCEL_MARKER}")
        status = await self._status(session, sid)
        if status is None:
            await session.run(f"scancel {sid}", check=False)  # whatever Slurm still has
            return
        if status.ended:
            return
        if status.waiting:
            await session.run(f"scancel {sid}", check=False)
            return
        await session.run(f"scancel --batch --signal=TERM {sid}", check=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.cancel_grace_s
        while loop.time() < deadline:
            await asyncio.sleep(1.0)
            status = await self._status(session, sid)
            if status is None or status.ended:
                return
        log.info("job %s: Slurm job %s still running after the grace; scancel", job.id, sid)
        await session.run(f"scancel {sid}", check=False)

    async def logs(self, job: Job, since: int) -> LogChunk:
        """The job's `train.log` (the cluster's, mirrored at each poll) from byte `since`."""
        return await asyncio.to_thread(read_log, job.job_dir / "train.log", since)

    async def fetch_artifacts(self, job: Job, dest: Path) -> None:
        """The artifacts are pulled into the job folder when the job ends: nothing to do."""


def _verdict(
    job: Job, record: SlurmRecord, status: SlurmStatus, limit_hit: bool
) -> tuple[str, str]:
    """The final state and its reason from Slurm's final state and the trainer's last word."""
    said = last_status(job.job_dir)
    trainer_state, message = said if said else ("", "")
    final_said = trainer_state in ("completed", "failed", "cancelled")
    where = f"Slurm job {record.slurm_job_id}"
    if record.cancel_requested:
        if trainer_state == "completed":
            # It finished (output whole) before the cancel reached it; the signal may still
            # have cut the launcher's teardown short, so the exit code does not decide.
            return "completed", message
        return "cancelled", message if trainer_state == "cancelled" else f"cancelled ({where})"
    if limit_hit:
        return "failed", (
            f"{where} was stopped by Slurm (time limit or preemption) after "
            f"{record.profile.max_requeues} requeues, the limit; resume continues from the "
            "newest checkpoint"
        )
    slurm = status.state
    if slurm == "COMPLETED" and final_said:
        if trainer_state == "completed" and status.exit_code not in (0, None):
            return "failed", f"the trainer reported completed but {where} exited {status.exit_code}"
        return trainer_state, message
    if slurm == "TIMEOUT":
        return (
            "failed",
            f"{where} reached its time limit ({record.time_limit or record.profile.time_limit}) "
            "and was not requeued",
        )
    if slurm == "OUT_OF_MEMORY":
        return (
            "failed",
            f"{where} ran out of memory on {status.nodes or 'its node'}: ask for more (--mem) "
            "or use a smaller batch",
        )
    if slurm in ("NODE_FAIL", "BOOT_FAIL"):
        return "failed", f"{where} lost its node {status.nodes} ({slurm})"
    if slurm == "PREEMPTED":
        return "failed", f"{where} was preempted and not requeued"
    if slurm == "CANCELLED":
        return "cancelled", f"{where} was cancelled in Slurm (scancel), not by this app"
    if final_said and trainer_state != "completed":
        return trainer_state, message
    return (
        "failed",
        f"{where} ended {slurm} (exit code {status.exit_code}) without the trainer's final "
        "status; see train.log",
    )


def build_slurm_provider(context: ProviderContext) -> SlurmProvider:
    """The registry's factory: a Slurm provider from the app's context, with the SSH key's
    passphrase from the keychain when a cluster profile names a key file."""
    from desktop.providers.slurm.keys import ssh_passphrase

    passphrase = ssh_passphrase(context.settings.slurm.clusters.values())
    return SlurmProvider(context, passphrase=passphrase)
