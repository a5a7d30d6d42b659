"""The pod's startup script and environment, rendered on this side; nothing here runs in a pod.

`render_script` returns a POSIX sh script (about 14 KB) that carries the pod-side programs, the
standard-library-only `trainer.agent`, `trainer.agent_fetch`, `trainer.agent_files`,
`trainer.agent_watchdog` and `trainer.pod_boot`, as one compressed blob (docstrings and comments
dropped), writes them to `<workspace>/<job>/.boot/`, and runs `python -m trainer.pod_boot`,
everything appended to `<workspace>/<job>/train.log`.
`container_args` puts it base64-encoded into the create request's `args`, which avoids quoting
bugs. `pod_env` is the environment the pod gets: the job token and the watchdog's limits, and
never the user's RunPod key (RunPod gives every pod its own pod-scoped `RUNPOD_API_KEY`).

The order, decided here and carried out by `trainer.pod_boot` (see its docstring): the restart
guard first (a marker on the workspace, so a restarted container never trains twice and a pod
whose job ended deletes itself), then **the agent starts before anything is installed**,
because the trainer bundle, the config and the dataset come through it; the requirements
install (only when `import transformers, peft, trl` fails; into a venv on the workspace that
sees the image's torch; never torch itself) while the uploads run, and `/start` waits for them.

This module reads the pod-side sources as files and never imports them: the app reaches the
trainer only through its contract modules.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path

__all__ = [
    "BOOT_FILES",
    "TRAINER_REQUIREMENTS",
    "container_args",
    "default_requirements",
    "pinned_requirements",
    "pod_env",
    "render_script",
]

BOOT_FILES = (
    "__init__.py",
    "agent.py",
    "agent_fetch.py",
    "agent_files.py",
    "agent_watchdog.py",
    "pod_boot.py",
)
# What a RunPod PyTorch image lacks of the trainer's runtime (torch is the image's own).
TRAINER_REQUIREMENTS = ("transformers", "peft", "trl", "accelerate", "datasets", "pyarrow")
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements(constraints: str, names: Sequence[str] = TRAINER_REQUIREMENTS) -> list[str]:
    """`name==version` for each of `names`, as a constraints file (`constraints.txt`) pins it.

    Raises:
        ValueError: naming a requirement the constraints do not pin, or torch (never installed
            over the image's own).
    """
    pins: dict[str, str] = {}
    for line in constraints.splitlines():
        text = line.split("#", 1)[0].strip()
        if "==" in text:
            name, version = text.split("==", 1)
            pins[_normal(name.strip())] = f"{name.strip()}=={version.strip()}"
    result = []
    for name in names:
        if _normal(name) == "torch":
            raise ValueError("torch is never installed on a pod: the image's torch is used")
        if _normal(name) not in pins:
            raise ValueError(f"the constraints pin no version of {name!r}; add {name}==<version>")
        result.append(pins[_normal(name)])
    return result


def _trainer_dir() -> Path:
    spec = importlib.util.find_spec("trainer")  # a top-level spec: found, not imported
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the trainer package is not installed next to the app")
    return Path(next(iter(spec.submodule_search_locations)))


def default_requirements() -> list[str]:
    """The trainer's requirements pinned by the repository's `constraints.txt`.

    Raises:
        FileNotFoundError: when no constraints.txt sits next to the packages (an installed app
            passes its own list to `render_script`).
    """
    path = _trainer_dir().parent / "constraints.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; pass the requirements to render_script")
    return pinned_requirements(path.read_text(encoding="utf-8"))


def _without_docstrings(source: str) -> str:
    """The same program without docstrings and comments: the pod needs no documentation, and
    the script stays small (RunPod carries it in the create request)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
            and isinstance(node.body[0].value.value, str)
        ):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


def _payload(requirements: Sequence[str]) -> str:
    trainer = _trainer_dir()
    files = {
        f"trainer/{name}": _without_docstrings((trainer / name).read_text(encoding="utf-8"))
        for name in BOOT_FILES
    }
    files["requirements.txt"] = "".join(f"{line}\n" for line in requirements)
    packed = zlib.compress(json.dumps(files, sort_keys=True).encode(), 9)
    return base64.b64encode(packed).decode("ascii")


def render_script(
    job_id: str, requirements: Sequence[str], *, workspace: str = "/workspace"
) -> str:
    """The pod's startup script for `job_id` (see the module docstring).

    `FTDESK_POD_WORKSPACE` in the pod overrides `workspace`; `FTDESK_PYTHON` the Python.

    Raises:
        ValueError: for a job id that is not a plain folder name.
    """
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} is not a plain folder name")
    for line in requirements:
        if not re.fullmatch(r"[A-Za-z0-9_.\-\[\],<>=!~ ;'\"]+", line):
            raise ValueError(f"requirement {line!r} has characters a requirements file refuses")
    blob = _payload(requirements)
    return f"""#!/bin/sh
# Finetune Desk pod bootstrap for job {job_id}, rendered by desktop/providers/runpod/bootstrap.py.
W="${{FTDESK_POD_WORKSPACE:-{workspace}}}"
J="$W/{job_id}"
PY="${{FTDESK_PYTHON:-$(command -v python3 || command -v python)}}"
mkdir -p "$J/.boot" || exit 1
echo "[pod-boot] $(date -u +%Y-%m-%dT%H:%M:%SZ) container start" >>"$J/train.log"
"$PY" - "$J/.boot" <<'FTDESK_BOOT' || exit 1
import base64, json, os, sys, zlib
root = sys.argv[1]
files = json.loads(zlib.decompress(base64.b64decode("{blob}")))
for name, text in files.items():
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)
FTDESK_BOOT
export FTDESK_POD_WORKSPACE="$W"
export PYTHONPATH="$J/.boot${{PYTHONPATH:+:$PYTHONPATH}}"
"$PY" -u -m trainer.pod_boot --workspace "$W" --job "{job_id}" \\
  --requirements "$J/.boot/requirements.txt" 2>&1 | tee -a "$J/train.log"
"""


def container_args(script: str) -> str:
    """The create request's `args`: the script base64-encoded, decoded and run by `sh`."""
    encoded = base64.b64encode(script.encode()).decode("ascii")
    command = f"echo {encoded} | base64 -d > /tmp/ftdesk-boot.sh && exec sh /tmp/ftdesk-boot.sh"
    return json.dumps({"entrypoint": ["sh", "-c"], "cmd": [command]})


def pod_env(
    job_id: str,
    job_token: str,
    *,
    budget_usd: Decimal,
    max_runtime_s: int,
    cost_per_hour: Decimal | None = None,
    keepalive_s: int = 1800,
    lease_s: int = 900,
    api_url: str | None = None,
    port: int = 8000,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The pod's environment for the agent and its watchdog.

    `extra` (an HF token, a W&B key) may not carry a RunPod key: RunPod gives the pod its own.

    Raises:
        ValueError: when `extra` holds a RunPod key or a name this function sets.
    """
    env = {
        "FTDESK_JOB_ID": job_id,
        "FTDESK_JOB_TOKEN": job_token,
        "FTDESK_AGENT_PORT": str(port),
        "FTDESK_BUDGET_USD": str(budget_usd),
        "FTDESK_MAX_RUNTIME_S": str(max_runtime_s),
        "FTDESK_KEEPALIVE_S": str(keepalive_s),
        "FTDESK_LEASE_S": str(lease_s),
    }
    if cost_per_hour is not None:
        env["FTDESK_COST_PER_HOUR"] = str(cost_per_hour)
    if api_url:
        env["FTDESK_RUNPOD_API_URL"] = api_url
    for name, value in (extra or {}).items():
        if "RUNPOD_API_KEY" in name.upper() or name in env:
            raise ValueError(f"{name} may not be passed to a pod")
        env[name] = value
    return env
