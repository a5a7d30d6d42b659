"""Several training processes through torchrun: the command, the strategy, the supervisor.

When a job asks for more than one process (`TrainingConfig.world_size`: `hardware.num_gpus` on
CUDA, `hardware.cpu_processes` on the CPU), `python -m trainer run --job-dir DIR` does not train
itself. It becomes the supervisor of an existing launcher, PyTorch's elastic launcher
(`torch.distributed.run`, the program behind `torchrun`), which starts one worker per device,
each running `python -m trainer run --job-dir DIR` again with the usual RANK / LOCAL_RANK /
WORLD_SIZE variables:

    python -m trainer.launch --standalone --nproc_per_node N --signals_to_handle SIGHUP,SIGQUIT
        --shutdown_timeout S -m trainer run --job-dir DIR [--resume]

`python -m trainer.launch` is torchrun itself (`torch.distributed.run` run as `__main__`, every
argument passed through), with one difference: SIGTERM and SIGINT do not stop it. torchrun would
otherwise answer them by signalling its workers, and a cancel that reaches the whole process
group (the local provider signals the group) would then reach each worker twice, which the
trainer reads as "stop now, without a checkpoint". Instead the supervisor forwards each signal
it gets to every worker exactly once, so a cancel still finishes the step, checkpoints (all ranks
agree on the step, see `trainer.callbacks`) and ends `cancelled`. torchrun puts its workers in
sessions of their own; a worker exits by itself when its launcher disappears
(`watch_launcher`), so a SIGKILL of the job's process group leaves nothing behind.

The strategy is carried by the training arguments every worker builds (`trainer.strategy`).
What was launched is written to `DIR/distributed.json`.

Only rank 0 writes events, status and output (`trainer.ranks`); the supervisor writes only what
rank 0 could not: a final status (and an error event) when the workers ended without one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from trainer.config import TrainingConfig
from trainer.job_dir import find_checkpoints
from trainer.strategy import strategy_training_args

__all__ = [
    "LAUNCHER_SIGNALS",
    "LAUNCH_FILE",
    "LaunchPlan",
    "build_launch_plan",
    "run_distributed",
    "watch_launcher",
]

LAUNCH_FILE = "distributed.json"  # not launch.json: the local provider records its handle there
# The signals torchrun itself still handles (forwarding them to the workers); SIGTERM and SIGINT
# go through the supervisor instead.
LAUNCHER_SIGNALS = "SIGHUP,SIGQUIT"
_SHUTDOWN_MARGIN_S = 60
_LAUNCHER_PID_ENV = "FTDESK_LAUNCHER_PID"


# --------------------------------------------------------------------------------------------
# The command


@dataclass(frozen=True)
class LaunchPlan:
    """What the supervisor starts: the command line and the variables it adds."""

    argv: list[str]
    nproc: int
    strategy: str
    device: str
    env: dict[str, str] = field(default_factory=dict)
    training_args: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The plan as written to `DIR/distributed.json`."""
        return {
            "argv": self.argv,
            "nproc": self.nproc,
            "strategy": self.strategy,
            "device": self.device,
            "env": self.env,
            "training_args": self.training_args,
        }


def _planned_device(config: TrainingConfig) -> str:
    """'cpu' or 'cuda' without importing torch: num_gpus > 1 only makes sense on CUDA."""
    return "cpu" if config.hardware.device == "cpu" else "cuda"


def build_launch_plan(
    config: TrainingConfig,
    job_dir: Path,
    *,
    resume: bool = False,
    python: str | None = None,
    grace_s: float = 120.0,
) -> LaunchPlan:
    """The torchrun command that runs `config.world_size` workers on one machine.

    Raises:
        ValueError: the config asks for a single process.
    """
    nproc = config.world_size
    if nproc <= 1:
        raise ValueError(
            "a launch plan needs more than one process (hardware.num_gpus or cpu_processes)"
        )
    device = _planned_device(config)
    argv = [
        python or sys.executable,
        "-m",
        "trainer.launch",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "--signals_to_handle",
        LAUNCHER_SIGNALS,
        # Time a worker gets to finish its step and checkpoint when torchrun stops the others
        # after one of them failed.
        "--shutdown_timeout",
        str(int(grace_s) + _SHUTDOWN_MARGIN_S),
        "-m",
        "trainer",
        "run",
        "--job-dir",
        str(job_dir),
    ]
    if resume:
        argv.append("--resume")
    env: dict[str, str] = {}
    if device == "cpu":
        # No GPU for a CPU job, even where one is visible (gloo, CPU tensors).
        env["CUDA_VISIBLE_DEVICES"] = ""
    return LaunchPlan(
        argv=argv,
        nproc=nproc,
        strategy=config.hardware.strategy,
        device=device,
        env=env,
        training_args=strategy_training_args(config, device),
    )


# --------------------------------------------------------------------------------------------
# The supervisor (the process the app started)


class _Supervisor:
    """Starts the launcher, forwards cancel signals to the workers, waits for them."""

    def __init__(self, plan: LaunchPlan) -> None:
        self.plan = plan
        self.proc: Any = None
        self.signals: list[str] = []
        self._forwarded: dict[int, int] = {}  # worker pid -> signals forwarded to it

    def workers(self) -> list[int]:
        """The worker processes: the launcher's children."""
        if self.proc is None:
            return []
        return _children(self.proc.pid)

    def forward(self) -> None:
        """Send each worker every signal the supervisor got that it was not yet sent."""
        wanted = len(self.signals)
        if not wanted:
            return
        sig = signal.Signals[self.signals[-1]]
        for pid in self.workers():
            while self._forwarded.get(pid, 0) < wanted:
                self._forwarded[pid] = self._forwarded.get(pid, 0) + 1
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.signals.append(name)
        print(f"supervisor: {name} received, forwarding it to the workers", flush=True)
        self.forward()

    def run(self) -> int:
        """Run the launcher to its end; returns its exit code."""
        import subprocess

        env = dict(os.environ)
        env.update(self.plan.env)
        env[_LAUNCHER_PID_ENV] = str(os.getpid())
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.proc = subprocess.Popen(self.plan.argv, env=env, stdin=subprocess.DEVNULL)
            while True:
                try:
                    code: int = self.proc.wait(timeout=0.5)
                    return code
                except subprocess.TimeoutExpired:
                    self.forward()  # workers that started after a signal arrived
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _children(pid: int) -> list[int]:
    """Child process ids of `pid` (psutil; /proc where psutil is not installed)."""
    try:
        import psutil
    except ImportError:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # The command name may hold spaces; the fields after its ')' are fixed.
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(stat.parent.name))
        return found
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def _tail(path: Path, lines: int = 50) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def run_distributed(job_dir: Path, config: TrainingConfig, *, resume: bool) -> int:
    """Supervise a multi-process run of the job in `job_dir`; returns the job's exit code.

    Rank 0 writes events, status and output. The supervisor only writes a final status (with an
    error or status event) when the launcher ended and rank 0 had not written one for this run.
    """
    from trainer.protocol import (
        EVENTS_FILE,
        EXIT_FAILED,
        EXIT_OK,
        EventWriter,
        StatusFile,
        read_status,
        write_json_atomic,
        write_status,
    )

    grace = float(os.environ.get("FTDESK_CANCEL_GRACE_SECONDS", "120"))
    plan = build_launch_plan(config, job_dir, resume=resume, grace_s=grace)
    write_json_atomic(job_dir / LAUNCH_FILE, plan.to_json())
    print(
        f"launching {plan.nproc} {plan.device} processes ({plan.strategy}): " + " ".join(plan.argv),
        flush=True,
    )
    started = time.time()
    supervisor = _Supervisor(plan)
    code = supervisor.run()

    status = read_status(job_dir)
    if status is not None and status.finished_at >= started:
        if code != 0:
            print(
                f"launcher exited with code {code} after rank 0 reported {status.state}", flush=True
            )
        return status.exit_code

    # Rank 0 did not get to write its final word: say what is known.
    checkpoints = find_checkpoints(job_dir)
    last = checkpoints[-1] if checkpoints else None
    if supervisor.signals:
        state, exit_code = "cancelled", EXIT_OK
        message = f"cancelled ({supervisor.signals[0]}) before rank 0 could report; " + (
            "run with --resume to continue" if last else "no checkpoint was written"
        )
    else:
        state, exit_code = "failed", EXIT_FAILED
        message = (
            f"the distributed launcher exited with code {code} before rank 0 reported a result; "
            "the worker tracebacks are in train.log"
        )
    writer = EventWriter(job_dir / EVENTS_FILE)
    try:
        if state == "failed":
            writer.emit(
                "error",
                message=message,
                exception_type="trainer.launch.LauncherFailed",
                traceback="",
                last_log_lines=_tail(job_dir / "train.log"),
            )
        writer.emit("status", state=state, message=message)
    finally:
        writer.close()
    write_status(
        job_dir,
        StatusFile(
            state=state,
            exit_code=exit_code,
            message=message,
            last_step=last[0] if last else None,
            last_checkpoint=str(last[1]) if last else None,
        ),
    )
    print(f"{state}: {message}", flush=True)
    return exit_code


# --------------------------------------------------------------------------------------------
# In the workers


def watch_launcher(poll_s: float = 1.0) -> None:
    """Exit this worker when its launcher is gone (torchrun gives workers their own session).

    Only for workers of `run_distributed` (they carry the supervisor's pid); a no-op elsewhere.
    """
    supervisor = os.environ.get(_LAUNCHER_PID_ENV, "")
    if not supervisor.isdigit():
        return
    parent = os.getppid()
    supervisor_pid = int(supervisor)

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent or not alive(supervisor_pid):
                print("the launcher is gone; this worker stops", file=sys.stderr, flush=True)
                os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def _launcher_main() -> None:
    """`python -m trainer.launch ARGS`: torchrun (`torch.distributed.run`) with ARGS.

    SIGTERM and SIGINT get a handler that does nothing, so they neither stop the launcher nor
    (being caught, not ignored) carry over to the workers it starts; pass
    `--signals_to_handle` without them so torchrun leaves that handler alone.
    """
    import runpy

    def ignore(signum: int, frame: FrameType | None) -> None:
        return None

    signal.signal(signal.SIGTERM, ignore)
    signal.signal(signal.SIGINT, ignore)
    sys.argv = ["torchrun", *sys.argv[1:]]
    runpy.run_module("torch.distributed.run", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _launcher_main()
