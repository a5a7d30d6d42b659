"""Presets and the fit badge know the runtime: a config that needs CUDA, bf16 or bitsandbytes
where the runtime (from `trainer doctor`) lacks it says so on the badge and blocks Start with
the reason; a target that has them (a cloud GPU, later) lifts it. The memory breakdown opens in
a popover when the badge is clicked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app_helpers import run, until
from PySide6.QtCore import Qt

from desktop.core.config_io import load_preset
from desktop.models import Settings
from trainer.reports import DoctorReport

pytest_plugins = ["app_fixtures"]

CPU_ONLY = DoctorReport.parse(
    {
        "python": "3.11.9",
        "executable": "/usr/bin/python3",
        "torch": "2.5.1+cpu",
        "cuda_available": False,
        "gpus": [],
        "ok": True,
        "warnings": ["no GPU: training runs on the CPU"],
    }
)
T4_RUNTIME = DoctorReport.parse(
    {
        "python": "3.11.9",
        "executable": "/usr/bin/python3",
        "torch": "2.5.1+cu124",
        "cuda_available": True,
        "cuda_version": "12.4",
        "gpus": [{"index": 0, "name": "Tesla T4", "memory_gb": 15.8, "compute_capability": "7.5"}],
        "bitsandbytes": "0.45.0",
        "ok": True,
    }
)


def make_window() -> Any:
    from desktop.views.app import build_window

    return build_window(settings=Settings(), check_runtime=False)


def test_what_a_config_needs_is_checked_against_the_targets_capabilities() -> None:
    from desktop.core.runtime_fit import TargetCapabilities, runtime_blockers

    qlora = load_preset("qlora-8b-16gb")
    cpu = TargetCapabilities.from_doctor(CPU_ONLY)
    assert not cpu.cuda and not cpu.bitsandbytes
    blockers = runtime_blockers(qlora, cpu)
    assert any(b.startswith("needs CUDA") and "this runtime has none" in b for b in blockers)
    assert any("bitsandbytes" in b for b in blockers)
    t4 = TargetCapabilities.from_doctor(T4_RUNTIME)
    assert t4.cuda and not t4.bf16 and t4.bitsandbytes
    # The T4 preset asks for nothing a T4 lacks.
    assert runtime_blockers(qlora, t4) == []
    # bf16 on a T4 is named with the GPU and the way out.
    lora = load_preset("lora-8b-24gb")
    (bf16,) = runtime_blockers(lora, t4)
    assert "bf16" in bf16 and "Tesla T4" in bf16 and "7.5" in bf16 and "fp16" in bf16
    # A target that has what the config needs (a cloud GPU, later) lifts every block.
    cloud = TargetCapabilities(name="a cloud A100", cuda=True, bf16=True, bitsandbytes=True)
    assert runtime_blockers(qlora, cloud) == [] and runtime_blockers(lora, cloud) == []
    # The demo runs on the CPU: nothing to block.
    assert runtime_blockers(load_preset("demo-cpu", demo_dir=Path("/tmp/demo")), cpu) == []


def test_qlora_on_a_cpu_only_runtime_says_needs_cuda_and_blocks_start(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    window = make_window()
    qtbot.addWidget(window)

    async def body() -> None:
        await window.start()
        await until(lambda: window.start_button.isEnabled(), 30)
        # The doctor's report of a CPU-only runtime, as the window's runtime check hands it in.
        window.config_actions.set_runtime_report(CPU_ONLY)
        assert window.start_button.isEnabled()  # the demo runs on the CPU
        window.load_preset("qlora-8b-16gb")
        await until(lambda: "needs CUDA" in window.fit_badge.text(), 30)
        assert "this runtime has none" in window.fit_badge.text()
        assert window.fit_badge.level() == "red"
        assert not window.start_button.isEnabled()
        assert "needs CUDA" in window.start_button.toolTip()
        assert any("needs CUDA" in e for e in window.editor.general_errors())
        # The same preset on a T4 runtime: nothing missing, Start not blocked by the runtime.
        window.config_actions.set_runtime_report(T4_RUNTIME)
        await until(lambda: "needs" not in window.fit_badge.text(), 30)
        assert not any("needs" in e for e in window.editor.general_errors())
        assert window.fit_badge.text().startswith("fit: ")
        await until(lambda: "Hub" in (window.editor.field_note("dataset.path") or ""), 30)
        await window.ops.close()
        await window.service.close()

    run(qloop, body())


def test_the_t4_preset_asks_for_no_bf16() -> None:
    config = load_preset("qlora-8b-16gb")
    assert config.model.dtype != "bf16"
    assert config.quantization is not None and config.quantization.compute_dtype != "bf16"


def test_clicking_the_badge_opens_the_breakdown_popover(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    window = make_window()
    qtbot.addWidget(window)
    window.show()

    async def body() -> None:
        await window.start()
        window.load_preset("lora-8b-24gb")
        await until(lambda: window.fit_badge.level() is not None, 30)
        badge = window.fit_badge
        qtbot.mouseClick(badge.text_label, Qt.MouseButton.LeftButton)
        popover = badge.popover
        await until(lambda: popover.isVisible(), 30)
        assert popover.windowFlags() & Qt.WindowType.Popup
        labels = popover.row_labels()
        for row in ("Weights", "LoRA adapter", "Gradients", "Optimizer states", "Activations"):
            assert any(label.startswith(row) for label in labels), labels
        assert any(label.startswith("Total") for label in labels)
        assert popover.value_of("Total") == f"{badge.estimate().total_gb:.1f} GB"
        await until(lambda: "Hub" in (window.editor.field_note("dataset.path") or ""), 30)
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
