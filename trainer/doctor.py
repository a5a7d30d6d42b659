"""`python -m trainer doctor [--json]`: can this Python train, and on what?

Reports Python, torch and CUDA, each GPU with its memory, whether bitsandbytes and flash-attn
are installed, and the versions of the training libraries. Versions come from package metadata,
so only torch is imported (to ask about CUDA); the whole check takes a couple of seconds.

The JSON is a `trainer.reports.DoctorReport`, which the app parses with the same model (in a
worker thread). Exit code 0 when the runtime can train, 1 when it cannot.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import platform
import sys
from typing import Any

from trainer.reports import DoctorReport

__all__ = ["MIN_VERSIONS", "collect", "main"]

# The lower bounds of the `train` extra in pyproject.toml.
MIN_VERSIONS = {
    "torch": "2.4",
    "transformers": "4.56",
    "peft": "0.17",
    "trl": "0.24",
    "accelerate": "1.0",
    "datasets": "3.0",
}
_LIBRARIES = ("transformers", "peft", "trl", "accelerate", "datasets")
MIN_PYTHON = (3, 11)

# Looked up through this name so a test can present a runtime without a package.
_find_spec = importlib.util.find_spec


def _version(distribution: str, module: str | None = None) -> str | None:
    """Installed version of a distribution, or None when its module cannot be found."""
    if _find_spec(module or distribution) is None:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _too_old(version: str, minimum: str) -> bool:
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # packaging comes with transformers; without it, do not guess
        return False
    try:
        return Version(version) < Version(minimum)
    except InvalidVersion:
        return False


def _torch_info(info: dict[str, Any], problems: list[str], warnings: list[str]) -> None:
    """Fill the torch, CUDA and GPU fields by importing torch (the only import here)."""
    if _find_spec("torch") is None:
        problems.append("torch is not installed: install the train extra (pip install '.[train]')")
        return
    try:
        import torch
    except Exception as exc:  # a broken install raises anything from OSError to ImportError
        problems.append(f"torch is installed but does not import: {exc}")
        return
    info["torch"] = str(torch.__version__)
    info["cuda_version"] = torch.version.cuda
    try:
        available = bool(torch.cuda.is_available())
    except Exception as exc:
        warnings.append(f"CUDA check failed: {exc}")
        available = False
    info["cuda_available"] = available
    if available:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info["gpus"].append(
                {
                    "index": index,
                    "name": props.name,
                    "memory_gb": round(props.total_memory / 1024**3, 1),
                    "compute_capability": f"{props.major}.{props.minor}",
                }
            )
    mps = getattr(torch.backends, "mps", None)
    info["mps_available"] = bool(mps is not None and mps.is_available())
    if not available:
        where = "the Apple GPU (MPS) or the CPU" if info["mps_available"] else "the CPU"
        warnings.append(f"no CUDA GPU: training runs on {where}, which suits only tiny models")
        if info["cuda_version"] is None:
            warnings.append("this torch build has no CUDA support (a CPU-only wheel)")


def collect() -> DoctorReport:
    """Describe the runtime: the report that `doctor --json` prints."""
    problems: list[str] = []
    warnings: list[str] = []
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "torch": None,
        "cuda_available": False,
        "cuda_version": None,
        "mps_available": False,
        "gpus": [],
        "bitsandbytes": _version("bitsandbytes"),
        "flash_attn": _version("flash-attn", "flash_attn") or _version("flash_attn"),
    }
    if sys.version_info[:2] < MIN_PYTHON:
        problems.append(f"Python {info['python']} is too old: the trainer needs Python 3.11+")
    _torch_info(info, problems, warnings)
    for name in _LIBRARIES:
        info[name] = _version(name)
        if info[name] is None:
            problems.append(f"{name} is not installed: install the train extra")
    for name, minimum in MIN_VERSIONS.items():
        installed = info.get(name)
        if installed and installed != "unknown" and _too_old(installed, minimum):
            problems.append(f"{name} {installed} is too old: the trainer needs {name}>={minimum}")
    if info["bitsandbytes"] is None:
        warnings.append("bitsandbytes is not installed: QLoRA and 8-bit optimizers are unavailable")
    elif not info["cuda_available"]:
        warnings.append("bitsandbytes is installed but there is no CUDA GPU: QLoRA needs one")
    if info["cuda_available"] and info["flash_attn"] is None:
        warnings.append("flash-attn is not installed: attention 'flash_attention_2' is unavailable")
    info["ok"] = not problems
    info["problems"] = problems
    info["warnings"] = warnings
    return DoctorReport.parse(info)


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer doctor [--json]`: exit 0 when this runtime can train, 1 when not."""
    parser = argparse.ArgumentParser(
        prog="python -m trainer doctor",
        description="Describe this Python runtime: torch, CUDA, GPUs and training libraries.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = collect()
    print(json.dumps(report.to_json_dict(), indent=2) if args.json else report.to_text())
    return 0 if report.ok else 1
