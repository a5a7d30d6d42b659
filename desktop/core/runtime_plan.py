"""Planning a trainer runtime setup: which torch, what to install, where, how much space.

`plan_setup` turns the machine's facts (`nvidia-smi`, the free space, a wheelhouse) and the
app's own metadata (the `train-core` extra, pinned by the shipped `constraints.txt`) into a
`SetupPlan`: the uv commands `desktop.core.runtime_setup.SetupRun` runs, and the lines shown
before anything starts. The driver-matching decisions (`torch_build_for`) take `nvidia-smi`'s
text, so tests give them recorded answers. `<data>/runtime/setup.json` records how far a setup
came (`read_setup_state`). Qt-free; `nvidia_smi_output` is the only call that starts a process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desktop.core.errors import RuntimeNotReadyError
from desktop.core.paths import data_home
from desktop.core.runtime import MIN_PYTHON, SUPPORTED_PYTHONS, source_root, venv_python
from trainer.protocol import write_json_atomic

__all__ = [
    "GB",
    "SetupPlan",
    "SetupStep",
    "TorchBuild",
    "constraints_file",
    "find_uv",
    "gb_text",
    "managed_venv",
    "nvidia_smi_output",
    "plan_setup",
    "read_setup_state",
    "runtime_requirements",
    "state_path",
    "torch_build_for",
    "unpack_uv",
    "write_state",
]

UV_ENV = "FTDESK_UV"  # the uv program to use instead of the bundled one
TORCH_INDEX = "https://download.pytorch.org/whl/{build}"
GB = 1024**3

# The CUDA builds torch publishes, newest first: (driver's CUDA major, minor, build tag). A
# driver runs every build made for its CUDA version or an older one.
_CUDA_BUILDS = ((13, 0, "cu130"), (12, 8, "cu128"), (12, 6, "cu126"), (11, 8, "cu118"))
# What a runtime takes on disk once installed, plus uv's cache of the same wheels (measured:
# the CPU build's venv is ~1.6 GB; a CUDA build's libraries are ~5 GB more).
_NEED_CPU = 3.0 * GB
_NEED_CUDA = 9.0 * GB
# A wheelhouse's wheels unpack to about 2.5 times their size; the cache holds them once more.
_WHEELHOUSE_FACTOR = 3.5
_SMI_TIMEOUT_S = 20.0


# ---------------------------------------------------------------------------------------------
# Which torch


@dataclass(frozen=True)
class TorchBuild:
    """The torch build a setup installs, and why.

    Attributes:
        name: "cpu" or a CUDA tag such as "cu128".
        index_url: the package index that serves it.
        reason: one sentence for the person (what was found).
    """

    name: str
    index_url: str
    reason: str

    @property
    def cuda(self) -> bool:
        """Whether this is a CUDA build."""
        return self.name != "cpu"


def nvidia_smi_output(timeout_s: float = _SMI_TIMEOUT_S) -> tuple[bool, str]:
    """Run `nvidia-smi` (the machine's edge): (found, what it printed).

    `found` is False when no `nvidia-smi` is on PATH; the text holds its output, or why it
    failed (its own message, or a timeout).
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False, ""
    try:
        proc = subprocess.run(
            [exe],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return True, f"nvidia-smi did not answer: {exc}"
    return True, (proc.stdout + proc.stderr)


def torch_build_for(found: bool, smi_text: str, *, platform: str = sys.platform) -> TorchBuild:
    """The torch build for this machine, decided from `nvidia-smi`'s answer.

    Args:
        found: whether `nvidia-smi` exists.
        smi_text: what it printed (its header names the highest CUDA version the driver runs).
        platform: `sys.platform`; macOS has no CUDA (PyPI's torch uses the Apple GPU).
    """
    if platform == "darwin":
        return TorchBuild("default", "https://pypi.org/simple", "macOS: PyPI's torch (Apple GPU)")
    cpu = TORCH_INDEX.format(build="cpu")
    if not found:
        return TorchBuild("cpu", cpu, "no NVIDIA GPU found (no nvidia-smi): the CPU build")
    match = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", smi_text)
    if match is None:
        first = smi_text.strip().splitlines()[0] if smi_text.strip() else "no output"
        return TorchBuild(
            "cpu", cpu, f"nvidia-smi does not reach the driver ({first}): the CPU build"
        )
    driver = (int(match.group(1)), int(match.group(2)))
    for major, minor, tag in _CUDA_BUILDS:
        if driver >= (major, minor):
            return TorchBuild(
                tag,
                TORCH_INDEX.format(build=tag),
                f"NVIDIA driver for CUDA {driver[0]}.{driver[1]}: the {tag} build",
            )
    return TorchBuild(
        "cpu",
        cpu,
        f"the NVIDIA driver only runs CUDA {driver[0]}.{driver[1]} (torch needs 11.8 or newer): "
        "the CPU build; update the driver and set the runtime up again to train on the GPU",
    )


# ---------------------------------------------------------------------------------------------
# What to install


def runtime_requirements() -> list[str]:
    """The trainer's requirements, from the app's own metadata (frozen apps carry it).

    The `train-core` extra plus the app's dependencies the trainer imports itself (pydantic and
    PyYAML for the config contract).
    """
    from importlib.metadata import PackageNotFoundError, requires

    try:
        lines = requires("finetune-desk") or []
    except PackageNotFoundError as exc:
        raise RuntimeNotReadyError(
            "this app has no package metadata (finetune-desk is not installed); install it with "
            "`pip install -e .` in the checkout, then set the runtime up again"
        ) from exc
    wanted: list[str] = []
    for line in lines:
        spec, _, marker = line.partition(";")
        name = re.split(r"[<>=!~\[ ]", spec.strip(), maxsplit=1)[0].lower()
        if "extra ==" in marker:
            if re.search(r"extra\s*==\s*['\"]train-core['\"]", marker):
                wanted.append(spec.strip())
        elif name in ("pydantic", "pyyaml"):
            wanted.append(spec.strip())
    if not any(w.lower().startswith("torch") for w in wanted):
        raise RuntimeNotReadyError(
            "this app's metadata lists no train-core requirements; reinstall the app"
        )
    return wanted


def constraints_file() -> Path | None:
    """The pins CI tested (`constraints.txt`), shipped with the app; None when absent."""
    bundle = getattr(sys, "_MEIPASS", None)
    candidates = [Path(bundle) / "constraints.txt"] if bundle else []
    root = source_root()
    if root is not None:
        candidates.append(root / "constraints.txt")
    return next((p for p in candidates if p.is_file()), None)


def find_uv() -> str:
    """The uv program: `$FTDESK_UV`, the bundle's own, the `uv` package's, or PATH's.

    Raises:
        RuntimeNotReadyError: no uv anywhere.
    """
    override = os.environ.get(UV_ENV)
    if override:
        return override
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle is not None:
        for name in ("uv", "uv.exe"):
            if (Path(bundle) / name).is_file():
                return str(Path(bundle) / name)
        if (Path(bundle) / "uv.xz").is_file():
            return str(unpack_uv(Path(bundle) / "uv.xz", data_home() / "runtime" / "bin"))
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found:
        return found
    raise RuntimeNotReadyError(
        "uv (which sets the runtime up) is missing from this installation; reinstall the app, "
        "or pick a Python with the train extra in Settings → Trainer runtime → Use existing…"
    )


def unpack_uv(packed: Path, folder: Path) -> Path:
    """The bundle's xz-compressed uv, unpacked into `folder` once (again when the bundle's
    copy changes: a stamp file holds its size and time).

    Raises:
        RuntimeNotReadyError: it cannot be unpacked (the folder is not writable, the file is
            damaged).
    """
    target = folder / ("uv.exe" if os.name == "nt" else "uv")
    stamp = folder / "uv.source"
    info = packed.stat()
    source = f"{packed} {info.st_size} {info.st_mtime_ns}"
    try:
        if target.is_file() and stamp.read_text(encoding="utf-8") == source:
            return target
    except OSError:
        pass  # no stamp yet: unpack
    import lzma

    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(lzma.decompress(packed.read_bytes()))
        partial.chmod(0o755)
        os.replace(partial, target)
        stamp.write_text(source, encoding="utf-8")
    except (OSError, lzma.LZMAError) as exc:
        raise RuntimeNotReadyError(
            f"cannot unpack the app's uv into {folder}: {exc}; free some space or reinstall "
            "the app, or pick a Python with the train extra in Settings → Trainer runtime → "
            "Use existing…"
        ) from exc
    return target


def managed_venv(home: Path) -> Path:
    """Where the runtime the app sets up lives."""
    return home / "runtime" / "venv"


def state_path(home: Path) -> Path:
    """The setup's record file."""
    return home / "runtime" / "setup.json"


def read_setup_state(home: Path) -> dict[str, Any]:
    """How far the last setup came (`{}` when none ran): state, steps done, python, torch."""
    try:
        data = json.loads(state_path(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(home: Path, **fields: Any) -> None:
    """Update the setup's record with `fields` (atomically)."""
    data = read_setup_state(home)
    data.update(fields, updated_at=time.time())
    state_path(home).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state_path(home), data)


def _wheelhouse_python(wheelhouse: Path) -> str | None:
    """The Python version a wheelhouse was made for, read from its torch wheel's tag."""
    for wheel in sorted(wheelhouse.glob("torch-*.whl")):
        match = re.search(r"-cp(\d)(\d+)-", wheel.name)
        if match:
            return f"{match.group(1)}.{match.group(2)}"
    return None


def _free_bytes(folder: Path) -> int:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def gb_text(n: float) -> str:
    """`n` bytes as "1.5 GB"."""
    return f"{n / GB:.1f} GB"


@dataclass(frozen=True)
class SetupStep:
    """One command of a setup.

    Attributes:
        name: "venv", "torch" or "requirements".
        title: what the person reads while it runs.
        argv: the uv command line.
    """

    name: str
    title: str
    argv: list[str]


@dataclass(frozen=True)
class SetupPlan:
    """What a setup will do, shown before it starts.

    Attributes:
        home: the data folder.
        venv: the venv folder it makes (or keeps).
        base_python: the Python request given to `uv venv` (a path or a version).
        torch: the torch build.
        wheelhouse: the wheelhouse folder (offline), or None for the package indexes.
        requirements: what is installed after torch.
        constraints: the pins, or None.
        uv: the uv program.
        need_bytes: the disk space the setup needs (estimate).
        free_bytes: the space free where the venv goes.
        resumes: the steps a previous attempt finished (kept, not redone).
    """

    home: Path
    venv: Path
    base_python: str
    torch: TorchBuild
    wheelhouse: Path | None
    requirements: list[str]
    constraints: Path | None
    uv: str
    need_bytes: int
    free_bytes: int
    resumes: list[str] = field(default_factory=list)

    @property
    def python(self) -> Path:
        """The venv's interpreter."""
        return venv_python(self.venv)

    def fits(self) -> bool:
        """Whether the free space covers the estimate."""
        return self.free_bytes >= self.need_bytes

    def describe(self) -> list[str]:
        """The plan for a person, one line per fact (disk space first)."""
        lines = [
            f"disk space: needs about {gb_text(self.need_bytes)} in {self.venv.parent}, "
            f"{gb_text(self.free_bytes)} free",
            f"venv: {self.venv} (Python {self.base_python})",
            f"torch: {self.torch.reason}",
            "packages from: "
            + (
                f"the wheelhouse {self.wheelhouse} (index switched off)"
                if self.wheelhouse
                else f"{self.torch.index_url} (torch) and PyPI"
            ),
        ]
        if self.resumes:
            lines.append(f"resuming: kept from the last attempt: {', '.join(self.resumes)}")
        return lines

    def steps(self) -> list[SetupStep]:
        """The uv commands, in order; the venv step is left out when the venv works."""
        install = [self.uv, "pip", "install", "--python", str(self.python)]
        if self.constraints is not None:
            install += ["--constraints", str(self.constraints)]
        if self.wheelhouse is not None:
            torch_source = ["--no-index", "--find-links", str(self.wheelhouse)]
            rest_source = torch_source
        elif self.torch.name == "default":
            torch_source, rest_source = [], []
        else:
            # torch alone from its index; the rest from PyPI, where torch is then satisfied.
            torch_source, rest_source = ["--index-url", self.torch.index_url], []
        steps = []
        if not _venv_works(self.venv):
            steps.append(
                SetupStep(
                    "venv",
                    f"making the venv {self.venv}",
                    [self.uv, "venv", "--allow-existing", "--python", self.base_python,
                     str(self.venv)],
                )
            )  # fmt: skip
        torch_req = next(r for r in self.requirements if r.lower().startswith("torch"))
        steps.append(
            SetupStep("torch", f"installing torch ({self.torch.name})",
                      [*install, *torch_source, torch_req])
        )  # fmt: skip
        steps.append(
            SetupStep("requirements", "installing the trainer's requirements",
                      [*install, *rest_source, *self.requirements])
        )  # fmt: skip
        return steps


def _venv_works(venv: Path) -> bool:
    return (venv / "pyvenv.cfg").is_file() and venv_python(venv).is_file()


def plan_setup(
    home: Path,
    *,
    wheelhouse: Path | None = None,
    base_python: str | None = None,
    smi: Callable[[], tuple[bool, str]] = nvidia_smi_output,
    free_bytes: Callable[[Path], int] = _free_bytes,
) -> SetupPlan:
    """Work out a setup: where, which Python, which torch, how much space.

    Args:
        home: the data folder (the venv goes in `<home>/runtime/venv`).
        wheelhouse: a folder of wheels to install from with the index switched off.
        base_python: the Python for the venv (a path or a version such as "3.12"); default:
            the wheelhouse's Python version, else any Python 3.11 to 3.13 uv finds or fetches.
        smi: asks `nvidia-smi` (tests give it a recorded answer).
        free_bytes: the free space of a folder's drive.

    Raises:
        RuntimeNotReadyError: the wheelhouse is missing or holds no torch wheel, or uv is
            missing; the sentence says what to do.
    """
    if wheelhouse is not None:
        if not wheelhouse.is_dir():
            raise RuntimeNotReadyError(
                f"the wheelhouse {wheelhouse} is not a folder; give the folder the wheelhouse "
                "command wrote (see docs/runtime.md)"
            )
        wheels = list(wheelhouse.glob("*.whl"))
        if not any(w.name.lower().startswith("torch-") for w in wheels):
            raise RuntimeNotReadyError(
                f"the wheelhouse {wheelhouse} holds no torch wheel; fill it with the wheelhouse "
                "command in docs/runtime.md"
            )
        torch = TorchBuild("wheelhouse", "", f"the torch wheel in {wheelhouse}")
        need = int(sum(w.stat().st_size for w in wheels) * _WHEELHOUSE_FACTOR)
        python = base_python or _wheelhouse_python(wheelhouse) or _default_python()
    else:
        torch = torch_build_for(*smi())
        need = int(_NEED_CUDA if torch.cuda else _NEED_CPU)
        python = base_python or _default_python()
    venv = managed_venv(home)
    state = read_setup_state(home)
    resumes = [s for s in state.get("steps_done", []) if isinstance(s, str)]
    if _venv_works(venv) and "venv" not in resumes:
        resumes.insert(0, "venv")
    return SetupPlan(
        home=home,
        venv=venv,
        base_python=python,
        torch=torch,
        wheelhouse=wheelhouse,
        requirements=runtime_requirements(),
        constraints=constraints_file(),
        uv=find_uv(),
        need_bytes=need,
        free_bytes=free_bytes(venv),
        resumes=resumes if state.get("state") != "ready" else [],
    )


def _default_python() -> str:
    """ ">=3.11,<3.14": any Python the trainer supports (patch releases of the newest too)."""
    major, minor = (int(part) for part in SUPPORTED_PYTHONS[-1].split("."))
    return f">={MIN_PYTHON[0]}.{MIN_PYTHON[1]},<{major}.{minor + 1}"
