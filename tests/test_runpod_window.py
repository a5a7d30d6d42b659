"""RunPod in the window, against the loopback emulator: GPU choice with the estimate, a whole
job with its spend growing, the orphan banner, and the key's test in Settings."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until
from PySide6.QtCore import Qt
from runpod_emulator import RunpodEmulator, serve_emulator
from runpod_emulator.runpod_pods import LocalPodRunner

from desktop.models import JobState, RunpodOptions, Settings

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.qt_log_level_fail("CRITICAL")

KEY = "rp-window-account-key-0123456789"
RTX = "NVIDIA GeForce RTX 4090"
A100 = "NVIDIA A100 80GB PCIe"
H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture
def emulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[RunpodEmulator, LocalPodRunner]]:
    """The emulator, its pods as local processes; the app finds it through the environment as
    a person's machine would find RunPod (URL, proxy, key). No pod may be left."""
    runner = LocalPodRunner(tmp_path / "pods", extra_env={"FTDESK_CLOCK_SYNC_S": "1"})
    emu = RunpodEmulator(api_key=KEY, runner=runner)
    emu.provisioning_s = emu.starting_s = 0
    with serve_emulator(emu):
        runner.api_url = emu.url
        monkeypatch.setenv("FTDESK_RUNPOD_API_URL", emu.url)
        monkeypatch.setenv("FTDESK_RUNPOD_PROXY_URL", emu.proxy_template)
        monkeypatch.setenv("FTDESK_RUNPOD_API_KEY", KEY)
        try:
            yield emu, runner
        finally:
            runner.join()
            runner.close()
    assert emu.mismatches == []


@pytest.fixture
def bare_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunpodEmulator]:
    """The emulator without pod processes (a pod made outside the app runs nothing here)."""
    emu = RunpodEmulator(api_key=KEY)
    emu.provisioning_s = emu.starting_s = 0
    with serve_emulator(emu):
        monkeypatch.setenv("FTDESK_RUNPOD_API_URL", emu.url)
        monkeypatch.setenv("FTDESK_RUNPOD_API_KEY", KEY)
        yield emu
    assert emu.mismatches == []


def make_window(offline: bool = False, **runpod: Any) -> Any:
    from desktop.views.app import build_window

    options = RunpodOptions.model_validate({"provisioning_limit_s": 120, **runpod})
    settings = Settings(poll_interval_s=0.25, cancel_grace_s=20, runpod=options, offline=offline)
    return build_window(settings=settings, check_runtime=False)


async def close(window: Any) -> None:
    window.close()
    await window.ops.close()
    await window.service.close()


def _cost_cell(window: Any, job_id: str) -> str:
    from desktop.views.job_model import Column

    model = window.jobs_view.model
    for row in range(model.rowCount()):
        index = model.index(row, Column.COST)
        if model.job_at(row).id == job_id:
            return str(model.data(index))
    return ""


@pytest.mark.slow
def test_choose_two_gpus_see_the_estimate_start_watch_the_spend_and_the_pod_goes(
    qtbot: Any, qloop: Any, demo_home: Path, emulator: tuple[RunpodEmulator, LocalPodRunner]
) -> None:
    emu, runner = emulator
    window = make_window(budget_usd="5")
    qtbot.addWidget(window)
    spent: list[Decimal] = []

    async def body() -> None:
        window.show()
        await window.start()
        config = window.editor.config()
        training = config.training.model_copy(update={"max_steps": 6, "save_steps": 3})
        window.editor.set_config(config.model_copy(update={"training": training}))
        panel = window.runpod_panel
        assert not panel.isVisible()
        window.target_combo.setCurrentIndex(window.target_combo.findData("runpod"))
        assert panel.isVisible()
        await until(lambda: panel.gpu_list.count() == 3, 30)  # the live catalog, off the UI
        listed = panel.gpu_list.item(0).text()
        assert "RTX 4090 · 24 GB · $0.69 / $0.34 · high" in " ".join(
            panel.gpu_list.item(i).text() for i in range(3)
        ), listed
        panel.choose_gpus([A100, RTX])  # two candidates, A100 first
        assert panel.chosen_gpu_ids() == (A100, RTX)
        await until(lambda: panel.estimate_label.text().count("Estimate on") == 2, 60)
        shown = panel.estimate_label.text()
        assert "A100 PCIe" in shown and "RTX 4090" in shown and "rough estimate" in shown
        assert "tokens/record as counted" in shown and "Memory: ~" in shown
        assert shown.index("A100 PCIe") < shown.index("RTX 4090")
        # The A100 runs out: the launch skips it and takes the second candidate, as chosen.
        emu.no_capacity(A100)

        def record(row: int) -> None:
            cost = window.state.job_at(row).cost_usd
            if cost is not None and (not spent or cost != spent[-1]):
                spent.append(cost)

        window.state.row_changed.connect(record)
        await until(lambda: window.start_button.isEnabled(), 30)
        qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
        job_id = await until(lambda: window.state.job_count() and window.state.job_at(0).id, 120)
        assert window.settings.runpod.gpu_ids == (A100, RTX)
        await until(lambda: spent, 120)  # the first poll of the pod: what it cost so far
        emu.clock.advance(1800)  # half an hour on RunPod's clock at $0.69/h
        await until(lambda: spent[-1] > spent[0], 120)
        await until(lambda: window.state.job(job_id).is_final, 300)
        job = window.state.job(job_id)
        assert job.state is JobState.COMPLETED, job.state_reason
        cell = _cost_cell(window, job_id)
        assert cell.endswith("/ $5.00") and not cell.startswith("$0.00"), cell
        # The pod's id, GPU and state are in the job's details.
        from desktop.views.job_model import Column

        model = window.jobs_view.model
        tip = model.data(model.index(0, Column.TARGET), Qt.ItemDataRole.ToolTipRole)
        assert f"pod {job.handle.pod_id}" in tip and RTX in tip and "completed" in tip
        await close(window)

    run(qloop, body())
    assert spent == sorted(spent) and spent[-1] >= Decimal("0.34"), spent
    assert emu.live_pods() == [] and len(runner.created) == 1
    posts = [r for r in emu.requests if (r.method, r.path) == ("POST", "/v2/pods")]
    creates = [r.body["gpu"]["id"] for r in posts]
    assert creates == [RTX]


def test_a_gpu_choice_made_while_an_estimate_runs_is_estimated_and_the_old_answer_never_shows(
    qtbot: Any,
    qloop: Any,
    demo_home: Path,
    bare_emulator: RunpodEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The estimate counts the data's tokens in a worker (seconds on a big dataset). A GPU
    ticked meanwhile used to be refused as "already running", and the label kept the estimate
    of the choice before it. The first estimate is held in its thread by an event."""
    from desktop.views import operations

    real = operations.estimate_offers
    entered, release = threading.Event(), threading.Event()
    asked: list[list[str]] = []

    def held(config: Any, runtime: Any, offers: list[Any], options: Any) -> Any:
        asked.append([offer.gpu_id for offer in offers])
        if not entered.is_set():
            entered.set()
            assert release.wait(60), "the test never released the first estimate"
        return real(config, runtime, offers, options)

    monkeypatch.setattr(operations, "estimate_offers", held)
    window = make_window()
    qtbot.addWidget(window)
    shown: list[str] = []

    async def body() -> None:
        window.show()
        await window.start()
        panel = window.runpod_panel
        window.target_combo.setCurrentIndex(window.target_combo.findData("runpod"))
        await until(lambda: panel.gpu_list.count() == 3, 30)
        panel.choose_gpus([A100])
        await until(entered.is_set, 30)  # the A100-only estimate runs, held
        panel.estimated.connect(shown.append)
        panel.choose_gpus([A100, RTX])
        panel.update_estimate()  # as the debounce timer would, while the first one runs
        release.set()
        await until(lambda: panel.estimate_label.text().count("Estimate on") == 2, 30)
        await until(lambda: not window.ops.is_running("estimate the RunPod run"), 30)
        await close(window)

    run(qloop, body())
    assert asked[0] == [A100] and asked[-1] == [A100, RTX]
    estimates = [text for text in shown if "Estimate on" in text]
    assert estimates and all(text.count("Estimate on") == 2 for text in estimates), (
        "the A100-only answer, for the choice before, was shown"
    )


def test_a_pod_no_job_owns_shows_in_the_banner_and_delete_removes_it(
    qtbot: Any, qloop: Any, demo_home: Path, bare_emulator: RunpodEmulator
) -> None:
    emu = bare_emulator
    stray = emu.add_pod("ftdesk-20261130-090000-gone", gpu_id=H100)
    window = make_window()
    qtbot.addWidget(window)

    async def body() -> None:
        window.show()
        await window.start()
        banner = window.orphan_banner
        await until(lambda: banner.isVisible(), 30)
        text = banner.label.text()
        assert stray.id in text and "$2.99/h" in text and "not in the job list" in text
        assert not banner.adopt_button.isEnabled()  # its job is not here
        # A pod orphaned after the banner was drawn (another machine's app, say) is not one
        # the person chose to delete: Delete removes what it shows, the next look lists it.
        later = emu.add_pod("ftdesk-20261130-100000-other", gpu_id=H100)
        qtbot.mouseClick(banner.delete_button, Qt.MouseButton.LeftButton)
        await until(lambda: later.id in banner.label.text(), 30)
        assert [p.id for p in emu.live_pods()] == [later.id]
        assert stray.id not in banner.label.text()
        qtbot.mouseClick(banner.delete_button, Qt.MouseButton.LeftButton)
        await until(lambda: not emu.live_pods() and not banner.isVisible(), 30)
        await close(window)

    run(qloop, body())
    assert emu.live_pods() == []


def test_offline_the_panel_and_the_banner_ask_runpod_nothing(
    qtbot: Any, qloop: Any, demo_home: Path, bare_emulator: RunpodEmulator
) -> None:
    emu = bare_emulator
    emu.add_pod("ftdesk-20261130-090000-gone")
    window = make_window(offline=True)
    qtbot.addWidget(window)

    async def body() -> None:
        window.show()
        await window.start()  # the orphan sweep is not even started
        window.target_combo.setCurrentIndex(window.target_combo.findData("runpod"))
        assert "Offline mode is on" in window.runpod_panel.catalog_label.text()
        assert not window.ops.is_running("look for orphaned RunPod pods")
        assert not window.orphan_banner.isVisible()
        await close(window)

    run(qloop, body())
    assert emu.requests == [], "offline, yet RunPod was asked"


def test_the_key_test_says_works_refused_or_unreachable(
    qtbot: Any, qloop: Any, home: Path, bare_emulator: RunpodEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from desktop.core.secrets import SecretStore
    from desktop.views import operations

    emu = bare_emulator
    store = SecretStore()
    works = asyncio.run(operations.test_runpod_key(store, emu.url))
    assert works.startswith("Connected to RunPod: the key works"), works
    monkeypatch.setenv("FTDESK_RUNPOD_API_KEY", "rp-not-the-accounts-key-000000")
    refused = asyncio.run(operations.test_runpod_key(store, emu.url))
    assert refused.startswith("RunPod refused the key (401)"), refused
    gone = asyncio.run(operations.test_runpod_key(store, "http://127.0.0.1:9/v2"))
    assert gone.startswith("RunPod could not be reached at http://127.0.0.1:9/v2"), gone
    # The button beside the key in Settings says the same.
    monkeypatch.setenv("FTDESK_RUNPOD_API_KEY", KEY)
    window = make_window(api_url=emu.url)
    qtbot.addWidget(window)

    async def body() -> None:
        await window.build()
        dialog = window.settings_dialog()
        qtbot.mouseClick(dialog.runpod_test_button, Qt.MouseButton.LeftButton)
        answer = dialog.findChild(type(window.runpod_panel.catalog_label), "runpod_test_answer")
        await until(lambda: answer.text().startswith("Connected to RunPod"), 30)
        dialog.close()
        await close(window)

    run(qloop, body())
