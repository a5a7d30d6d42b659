"""The GPU path, checked where there is no GPU: Liger kernels refused clearly when they cannot
run, AdamW fused on CUDA, and bench/gpu_throughput.py saying in one line that it needs CUDA."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trainer.config import TrainingConfig
from trainer.errors import TrainerInputError
from trainer.recipe import (
    Precision,
    apply_liger_kernels,
    build_sft_config,
    check_liger_kernels,
    optimizer_for,
)

ROOT = Path(__file__).resolve().parent.parent


def _config(**training: Any) -> TrainingConfig:
    return TrainingConfig.model_validate(
        {"model": {"name_or_path": "m"}, "dataset": {"path": "d.jsonl"}, "training": training}
    )


@pytest.mark.skipif(
    importlib.util.find_spec("liger_kernel") is not None, reason="liger-kernel is installed"
)
def test_liger_enabled_but_not_installed_is_refused_before_the_model_loads(
    tmp_path: Path,
) -> None:
    config = _config(liger_kernels=True)
    with pytest.raises(TrainerInputError) as caught:
        check_liger_kernels(config, "cuda")
    message = str(caught.value)
    assert "training.liger_kernels is on but the liger-kernel package is not installed" in message
    assert "pip install 'finetune-desk[liger]'" in message
    # The run's first step (its training arguments, before any model) refuses it.
    precision = Precision("float32", bf16=False, fp16=False)
    with pytest.raises(TrainerInputError, match="liger-kernel package is not installed"):
        build_sft_config(config, tmp_path, "cpu", precision, has_eval=False, record_format="text")


def test_liger_needs_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "liger_kernel" else real(name, *a),
    )
    with pytest.raises(
        TrainerInputError, match=r"needs a CUDA GPU .* turn training.liger_kernels off"
    ):
        check_liger_kernels(_config(liger_kernels=True), "cpu")
    check_liger_kernels(_config(liger_kernels=True), "cuda")  # installed + CUDA: accepted


def test_liger_off_imports_nothing() -> None:
    check_liger_kernels(_config(), "cpu")
    assert apply_liger_kernels(_config(), model=None) is False
    assert "liger_kernel" not in sys.modules


def test_adamw_is_fused_on_cuda_only() -> None:
    assert optimizer_for(_config(), "cuda") == "adamw_torch_fused"
    assert optimizer_for(_config(), "cpu") == "adamw_torch"
    assert optimizer_for(_config(optimizer="adamw_8bit"), "cuda") == "adamw_8bit"
    deepspeed = TrainingConfig.model_validate(
        {
            "model": {"name_or_path": "m"},
            "dataset": {"path": "d.jsonl"},
            "hardware": {"device": "cuda", "num_gpus": 2, "strategy": "deepspeed_zero2"},
        }
    )
    assert optimizer_for(deepspeed, "cuda") == "adamw_torch"


@pytest.mark.parametrize("mode", ["throughput", "fit-8b"])
def test_gpu_bench_without_cuda_says_so_in_one_line(mode: str) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the benchmark would run")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_throughput.py"), "--mode", mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "gpu_throughput: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); "
        "nothing measured."
    ]
