"""A pod's boot: `python -m trainer.pod_boot --workspace W --job ID --requirements FILE`.

Standard library only. The startup script that `desktop/providers/runpod/bootstrap.py` renders
writes this module and the agent (`trainer.agent`, `trainer.agent_files`,
`trainer.agent_watchdog`) to `<workspace>/<job>/.boot/trainer/` and runs it, its output
appended to `<workspace>/<job>/train.log`. In order:

1. **The restart guard.** A container that exits is restarted by RunPod, so this runs again.
   The marker `<job>/.bootstrap-started` says it ran before. Then, if the job has ended
   (`status.json`, or a final `agent.json`), it deletes its own pod through the API and exits;
   if training had started (`<job>/.training-started`), it starts only the agent, in recovery
   mode (training never starts twice; the app fetches logs and checkpoints and decides).
2. **The agent starts first**, before anything is installed: the trainer bundle, the config and
   the dataset arrive through it, so uploads run while the requirements install.
3. **The requirements** install only when missing: the pinned versions already installed
   (read from the packages' metadata, in milliseconds) or else `import transformers, peft, trl`
   succeeding with the image's Python decides. If something is missing, a venv on the workspace
   (`<workspace>/.ftdesk-venv`, created with `--system-site-packages` so it sees the image's
   torch) gets `pip install -r FILE` (the versions the repo pins, never torch; extra pip
   arguments from `FTDESK_PIP_ARGS`). `<job>/.runtime.json` tells the agent the state
   (`installing`, `ready` with the Python to train with, or `failed` with the reason); the
   agent refuses `/start` until it is `ready`.
4. It waits for the agent, whose exit ends the container.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from trainer.agent_watchdog import DEFAULT_API_URL, PodApi

__all__ = [
    "BOOT_MARKER",
    "CHECK_IMPORTS",
    "boot",
    "ensure_runtime",
    "job_has_ended",
    "main",
    "pins_present",
]

BOOT_MARKER = ".bootstrap-started"
CHECK_IMPORTS = ("transformers", "peft", "trl")
VENV_DIR = ".ftdesk-venv"


def _say(message: str) -> None:
    print(f"[pod-boot] {message}", flush=True)


def job_has_ended(job_dir: Path) -> bool:
    """The trainer wrote its last word (`status.json`) or the watchdog a final `agent.json`."""
    if (job_dir / "status.json").exists():
        return True
    try:
        record = json.loads((job_dir / "agent.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("final") is True


def imports_ok(python: str, modules: tuple[str, ...]) -> bool:
    """`python -c "import <modules>"` succeeds."""
    code = "import " + ", ".join(modules)
    result = subprocess.run([python, "-c", code], capture_output=True, check=False)
    return result.returncode == 0


# Reads each pinned distribution's installed version without importing it (milliseconds, where
# importing transformers, peft and trl takes seconds): argv[1] is the requirements file.
_PINS_CHECK = """
import importlib.metadata as m, sys
for line in open(sys.argv[1], encoding="utf-8"):
    name, _, version = line.split("#")[0].strip().partition("==")
    if name and m.version(name.strip()) != version.strip():
        sys.exit(1)
"""


def pins_present(python: str, requirements: Path) -> bool:
    """Every `name==version` of `requirements` is installed at that version for `python`."""
    argv = [python, "-c", _PINS_CHECK, str(requirements)]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def ready_in(python: str, modules: tuple[str, ...], requirements: Path) -> bool:
    """`python` can train: the pinned versions are installed (checked without importing,
    which is what keeps a pod's boot off the critical path to the first step), or else the
    `modules` import (an image with other versions that work)."""
    return pins_present(python, requirements) or imports_ok(python, modules)


def ensure_runtime(
    python: str,
    venv_dir: Path,
    modules: tuple[str, ...],
    requirements: Path,
    pip_args: list[str],
) -> str:
    """The Python to train with: `python` when `modules` import there, else a venv on the
    workspace that sees `python`'s packages (its torch) plus `requirements`, installed once.

    Raises:
        RuntimeError: saying what failed (venv, pip, or the modules still not importing).
    """
    if ready_in(python, modules, requirements):
        _say(f"requirements present in {python}; nothing to install")
        return python
    venv_python = str(venv_dir / "bin" / "python")
    if Path(venv_python).exists() and ready_in(venv_python, modules, requirements):
        _say(f"requirements present in {venv_dir}; nothing to install")
        return venv_python
    _say(f"installing the trainer's requirements into {venv_dir}")
    steps = [
        [python, "-m", "venv", "--system-site-packages", str(venv_dir)],
        [venv_python, "-m", "pip", "install", "--disable-pip-version-check", *pip_args,
         "-r", str(requirements)],
    ]  # fmt: skip
    for argv in steps:
        if subprocess.run(argv, check=False).returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:4])} ... failed; see the lines above")
    if not imports_ok(venv_python, modules):
        raise RuntimeError(f"{', '.join(modules)} still do not import in {venv_dir}")
    return venv_python


def _write_runtime(job_dir: Path, record: dict[str, str]) -> None:
    temp = job_dir / ".runtime.json.tmp"
    temp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(temp, job_dir / ".runtime.json")


def _delete_own_pod(env: dict[str, str]) -> bool:
    pod_id, key = env.get("RUNPOD_POD_ID"), env.get("RUNPOD_API_KEY")
    if not pod_id or not key:
        _say("no RUNPOD_POD_ID/RUNPOD_API_KEY here: nothing to delete")
        return False
    api = PodApi(env.get("FTDESK_RUNPOD_API_URL") or DEFAULT_API_URL, pod_id, key)
    for attempt in range(6):
        status = api.delete_pod().status
        if 200 <= status < 300 or status == 404:
            _say(f"pod {pod_id} deleted")
            return True
        _say(f"deleting pod {pod_id} answered {status}; retrying")
        time.sleep(min(2**attempt, 30))
    return False


def boot(workspace: Path, job_id: str, requirements: Path, env: dict[str, str], python: str) -> int:
    """The boot sequence (module docstring); returns the exit code."""
    job_dir = workspace / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    marker = job_dir / BOOT_MARKER
    recovery = False
    if marker.exists():
        if job_has_ended(job_dir):
            _say("this container restarted after the job ended: deleting the pod")
            return 0 if _delete_own_pod(env) else 1
        recovery = (job_dir / ".training-started").exists()
        if recovery:
            _say("this container restarted while training ran: agent only, no training")
    else:
        marker.write_text(f"{time.time()}\n", encoding="utf-8")
    _write_runtime(job_dir, {"state": "skipped" if recovery else "installing"})
    agent_env = dict(env, FTDESK_POD_WORKSPACE=str(workspace), FTDESK_JOB_ID=job_id)
    agent_env["FTDESK_AGENT_RECOVERY"] = "1" if recovery else "0"
    agent_env["FTDESK_BOOT_DIR"] = str(Path(__file__).resolve().parents[1])
    agent = subprocess.Popen([sys.executable, "-m", "trainer.agent"], env=agent_env)
    if not recovery:
        try:
            venv = workspace / VENV_DIR
            pip_args = shlex.split(env.get("FTDESK_PIP_ARGS", ""))
            ready = ensure_runtime(python, venv, CHECK_IMPORTS, requirements, pip_args)
            _write_runtime(job_dir, {"state": "ready", "python": ready})
        except (RuntimeError, OSError) as exc:
            _say(f"the trainer's requirements could not be installed: {exc}")
            _write_runtime(job_dir, {"state": "failed", "error": str(exc)})
    return agent.wait()


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and boot."""
    parser = argparse.ArgumentParser(prog="python -m trainer.pod_boot")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--requirements", type=Path, required=True)
    args = parser.parse_args(argv)
    env = dict(os.environ)
    return boot(args.workspace, args.job, args.requirements, env, sys.executable)


if __name__ == "__main__":
    sys.exit(main())
