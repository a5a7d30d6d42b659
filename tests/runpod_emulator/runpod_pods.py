"""The emulator's pods as local processes: the real bootstrap runs as the pod's container.

`LocalPodRunner` plugs into `RunpodEmulator(runner=...)`. On create it decodes the pod's `args`
(what `desktop.providers.runpod.bootstrap.container_args` made), writes the startup script into
a sandbox folder of its own and runs it with `sh`, in a new process group, with the container's
env (the job token, `RUNPOD_POD_ID`, the pod-scoped `RUNPOD_API_KEY`) plus what a sandbox needs:
`FTDESK_POD_WORKSPACE` (a folder per pod), `FTDESK_AGENT_PORT` (a free port of its own),
`FTDESK_RUNPOD_API_URL` (the emulator) and `FTDESK_PYTHON` (the test environment's Python: the
pod's image, which already holds the trainer's requirements as RunPod's PyTorch image holds
torch). The agent's URL is published as the pod's proxy for port 8000. What the container
prints goes to `<sandbox>/container.log` and, as on RunPod, into the pod's log stream
(`GET /v2/pods/{id}/logs`). On terminate the whole process tree goes: the script's group and the
trainer the agent started in a session of its own. A restart (`RunpodEmulator.restart_container`)
kills that tree and runs the same script again with the same workspace, env and port, as RunPod
restarts a container that exited.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from runpod_emulator.runpod_server import EmulatedPod, RunpodEmulator

AGENT_PORT = 8000
STOP_DELAY_S = 0.5
_ENCODED = re.compile(r"echo ([A-Za-z0-9+/=]+) \| base64 -d")
# What the sandboxed container keeps of the test process's own environment.
_KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TOKENIZERS_PARALLELISM")


def free_port() -> int:
    """A TCP port nobody listens on right now (the agent binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def boot_script(args: str) -> str:
    """The startup script carried base64-encoded in a create request's `args`.

    Raises:
        ValueError: when `args` is not what `container_args` makes.
    """
    command = " ".join(json.loads(args)["cmd"])
    found = _ENCODED.search(command)
    if found is None:
        raise ValueError(f"pod args carry no base64 script: {args[:80]!r}")
    return base64.b64decode(found.group(1)).decode()


@dataclass
class LocalPod:
    """One running "container": its process, sandbox and agent port."""

    process: subprocess.Popen[bytes]
    workspace: Path
    port: int
    env: dict[str, str]
    starts: int = 1


class LocalPodRunner:
    """Runs each created pod's bootstrap as a local process (see the module docstring).

    Args:
        root: Where each pod's sandbox folder goes (`<root>/<pod id>/`).
        api_url: The emulator's API base, the pod's `FTDESK_RUNPOD_API_URL`.
        extra_env: More environment for every pod (e.g. a short watchdog interval).
    """

    def __init__(self, root: Path, api_url: str = "", extra_env: dict[str, str] | None = None):
        self.root = root
        self.api_url = api_url
        self.extra_env = dict(extra_env or {})
        self.pods: dict[str, LocalPod] = {}
        self.created: list[str] = []
        self._stoppers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.emulator: RunpodEmulator | None = None

    def attach(self, emulator: RunpodEmulator) -> None:
        """The emulator whose pods this runs: their containers' output is their log stream."""
        self.emulator = emulator

    def _run(self, pod_id: str, sandbox: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Run the container's command (the boot script) with its output teed to the log."""
        process = subprocess.Popen(
            ["sh", str(sandbox / "boot.sh")],
            cwd=sandbox,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(
            target=self._tee, args=(pod_id, process, sandbox / "container.log"), daemon=True
        ).start()
        return process

    def _tee(self, pod_id: str, process: subprocess.Popen[bytes], path: Path) -> None:
        assert process.stdout is not None
        with open(path, "ab") as sink:
            for raw in process.stdout:
                sink.write(raw)
                sink.flush()
                if self.emulator is not None:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    self.emulator.append_log(pod_id, line)

    def on_create(self, pod: EmulatedPod, env: dict[str, str]) -> None:
        """Start the pod's container: the real bootstrap script, sandboxed."""
        sandbox = self.root / pod.id
        workspace = sandbox / "workspace"
        workspace.mkdir(parents=True)
        script = sandbox / "boot.sh"
        script.write_text(boot_script(str(pod.body["args"])), encoding="utf-8")
        port = free_port()
        full = {k: os.environ[k] for k in _KEPT if k in os.environ}
        full.update(env)
        full.update(
            FTDESK_POD_WORKSPACE=str(workspace),
            FTDESK_AGENT_PORT=str(port),
            FTDESK_AGENT_HOST="127.0.0.1",
            FTDESK_PYTHON=sys.executable,
            **({"FTDESK_RUNPOD_API_URL": self.api_url} if self.api_url else {}),
            **self.extra_env,
        )
        process = self._run(pod.id, sandbox, full)
        with self._lock:
            self.pods[pod.id] = LocalPod(process, workspace, port, full)
            self.created.append(pod.id)
        pod.proxy[AGENT_PORT] = f"http://127.0.0.1:{port}"

    def on_terminate(self, pod: EmulatedPod) -> None:
        """Stop the pod's container and everything it started."""
        with self._lock:
            local = self.pods.pop(pod.id, None)
        if local is not None:
            # Stopped from a thread, a moment later: the container's own agent may be the one
            # deleting its pod, and it must get its answer (as from RunPod) before it dies.
            stopper = threading.Thread(
                target=stop_tree, args=(local.process, STOP_DELAY_S), daemon=True
            )
            stopper.start()
            with self._lock:
                self._stoppers.append(stopper)

    def on_restart(self, pod: EmulatedPod, start: bool) -> None:
        """The container exited: its processes are killed (at once), and with `start` the same
        script runs again in the same sandbox with the same env and port."""
        with self._lock:
            local = self.pods.get(pod.id)
        if local is None:
            return
        if local.process.poll() is None:
            stop_tree(local.process)
        if start:
            process = self._run(pod.id, self.root / pod.id, local.env)
            with self._lock:
                local.process = process
                local.starts += 1

    def join(self) -> None:
        """Wait until every terminated pod's processes are gone."""
        with self._lock:
            stoppers, self._stoppers = self._stoppers, []
        for stopper in stoppers:
            stopper.join(timeout=60)

    def running(self) -> list[str]:
        """Ids of the pods whose container process is still alive."""
        with self._lock:
            return [pid for pid, local in self.pods.items() if local.process.poll() is None]

    def close(self) -> None:
        """Stop every container still running (a test's teardown)."""
        with self._lock:
            left, self.pods = list(self.pods.values()), {}
        for local in left:
            stop_tree(local.process)
        self.join()


def stop_tree(process: subprocess.Popen[bytes], delay_s: float = 0.0) -> None:
    """SIGKILL a process group and every descendant (a trainer runs in a session of its own),
    after `delay_s`."""
    time.sleep(delay_s)
    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait(timeout=30)
    psutil.wait_procs(family, timeout=30)
