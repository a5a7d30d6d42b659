"""`python -m trainer doctor` (trainer/doctor.py)."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import time
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from trainer import doctor

ROOT = Path(__file__).parent.parent
KEYS = {
    "python",
    "executable",
    "torch",
    "cuda_available",
    "cuda_version",
    "gpus",
    "bitsandbytes",
    "flash_attn",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "ok",
    "problems",
}


def test_doctor_json_has_every_key_and_the_real_versions() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", "doctor", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    info = json.loads(proc.stdout)
    assert set(info) >= KEYS
    assert info["executable"] == sys.executable
    assert info["python"] == ".".join(str(v) for v in sys.version_info[:3])
    import torch

    assert info["torch"] == str(torch.__version__)
    assert info["cuda_available"] == torch.cuda.is_available()
    assert len(info["gpus"]) == (torch.cuda.device_count() if info["cuda_available"] else 0)
    for gpu in info["gpus"]:
        assert set(gpu) >= {"index", "name", "memory_gb"} and gpu["memory_gb"] > 0
    for name in ("transformers", "peft", "trl", "accelerate", "datasets"):
        assert info[name] == importlib.metadata.version(name)
    # This environment has the whole train extra: it can train (on the CPU at least).
    assert info["ok"] is True and info["problems"] == []
    assert proc.returncode == 0
    assert elapsed < 30  # generous for a shared CI core; about 2 s on an idle machine


def test_doctor_without_torch_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = doctor._find_spec

    def without_torch_and_trl(name: str) -> ModuleSpec | None:
        return None if name in ("torch", "trl") else real(name)

    monkeypatch.setattr(doctor, "_find_spec", without_torch_and_trl)
    assert doctor.main(["--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert info["ok"] is False
    assert info["torch"] is None and info["trl"] is None
    assert info["cuda_available"] is False and info["gpus"] == []
    assert info["problems"] == [
        "torch is not installed: install the train extra (pip install '.[train]')",
        "trl is not installed: install the train extra",
    ]


def test_doctor_flags_a_library_that_is_too_old(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version

    def old_peft(name: str) -> str:
        return "0.10.0" if name == "peft" else real(name)

    monkeypatch.setattr(importlib.metadata, "version", old_peft)
    info = doctor.collect()
    assert info.ok is False
    assert info.problems == ["peft 0.10.0 is too old: the trainer needs peft>=0.17"]


def test_doctor_text_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor.main([]) == 0
    out = capsys.readouterr().out
    assert f"transformers  {importlib.metadata.version('transformers')}" in out
    assert out.rstrip().endswith("ready to train")
