"""Models ahead of the run: `finetune-desk models pull|list|remove` and the editor's Pull button,
against the loopback Hub (`tests/hub_emulator`) serving the demo model.

What it shows: the files arrive byte for byte where the trainer looks (the Hugging Face cache);
the space needed is shown first and a pull that does not fit is refused with the figures before
any download; a transfer cut halfway resumes from the cut offset (the server sees a `Range`
request from exactly there) instead of starting over; a gated model (403) or a private one (401)
gives the one sentence; offline mode refuses with a sentence and the server sees no request;
`models list` and `models remove` show and free the cache; the window's button pulls off the GUI
thread with a progress bar and Cancel.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QToolButton

from desktop.cli import main
from desktop.core import models_cache as mc
from desktop.core.errors import DiskFullError
from tests.hub_emulator import HubEmulator

pytest_plugins = ["app_fixtures"]

TOKEN = "hf_test_token_0123456789"
REPO = "demo-org/tiny-chat"


@pytest.fixture
def hub(demo_made_apart: Path) -> Iterator[HubEmulator]:
    """A loopback Hub serving the demo model as REPO (fresh per test: faults are per test)."""
    with HubEmulator(tokens={TOKEN}) as emulator:
        emulator.add_model(REPO, demo_made_apart / "model")
        emulator.add_model("gated-org/licensed", demo_made_apart / "model", gated=True)
        emulator.add_model("private-org/secret", demo_made_apart / "model", private=True)
        yield emulator


@pytest.fixture
def hub_env(hub: HubEmulator, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The app pointed at the loopback Hub with an empty cache; returns the cache folder."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("FTDESK_HF_TOKEN", raising=False)
    # conftest.py switches huggingface_hub offline for every test; these tests are online.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return cache


def _snapshot_files(cache: Path, repo: str) -> dict[str, bytes]:
    storage = cache / ("models--" + repo.replace("/", "--"))
    commit = (storage / "refs" / "main").read_text(encoding="utf-8")
    snapshot = storage / "snapshots" / commit
    return {
        p.relative_to(snapshot).as_posix(): p.read_bytes()
        for p in snapshot.rglob("*")
        if p.is_file()
    }


def test_pull_shows_the_space_then_brings_every_file_and_list_remove_manage_it(
    hub: HubEmulator, hub_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "pull", REPO]) == 0
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert "needed" in first and "free in" in first and str(hub_env) in first
    assert "100%" in err
    assert _snapshot_files(hub_env, REPO) == hub.repos[REPO].files
    # huggingface_hub itself finds the model offline where the trainer will look for it.
    from huggingface_hub import snapshot_download

    found = snapshot_download(REPO, cache_dir=hub_env, local_files_only=True)
    assert (Path(found) / "model.safetensors").read_bytes() == hub.repos[REPO].files[
        "model.safetensors"
    ]

    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    size = sum(len(b) for b in hub.repos[REPO].files.values())
    assert REPO in listed and mc.human_bytes(size) in listed and "main" in listed

    # A second pull finds everything cached: no file is fetched again.
    gets_before = len(hub.seen("GET", "/resolve/"))
    assert main(["models", "pull", REPO]) == 0
    assert "0 of" in capsys.readouterr().err
    assert len(hub.seen("GET", "/resolve/")) == gets_before

    assert main(["models", "remove", REPO]) == 0
    assert "freed" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    assert "no models in the cache" in capsys.readouterr().out
    assert main(["models", "remove", REPO]) == 2
    assert "is not in the model cache" in capsys.readouterr().err


def test_a_transfer_cut_halfway_resumes_from_the_cut_offset(
    hub: HubEmulator, hub_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = hub.repos[REPO].files["model.safetensors"]
    half = len(weights) // 2
    hub.cut_once["model.safetensors"] = half

    assert main(["models", "pull", REPO]) == 0
    capsys.readouterr()
    assert _snapshot_files(hub_env, REPO)["model.safetensors"] == weights
    gets = hub.seen("GET", "/resolve/")
    weight_gets = [r for r in gets if r.path.endswith("/model.safetensors")]
    # The first transfer was cut at `half`; the second asked for the rest only.
    assert len(weight_gets) == 2, [r.headers.get("range") for r in weight_gets]
    assert "range" not in weight_gets[0].headers
    assert weight_gets[1].headers.get("range") == f"bytes={half}-", weight_gets
    assert not hub.cut_once  # the cut really happened


def test_a_gated_or_private_model_gives_the_sentence_and_the_token_opens_it(
    hub: HubEmulator,
    hub_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for repo in ("gated-org/licensed", "private-org/secret"):
        assert main(["models", "pull", repo]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err  # one sentence
        assert "accept its licence" in err and f"/{repo}" in err
        assert "finetune-desk keys set hf_token" in err
    assert not hub.seen("GET", "/resolve/")
    assert all("authorization" not in r.headers for r in hub.requests)

    monkeypatch.setenv("FTDESK_HF_TOKEN", TOKEN)
    assert main(["models", "pull", "gated-org/licensed"]) == 0
    capsys.readouterr()
    assert _snapshot_files(hub_env, "gated-org/licensed") == hub.repos["gated-org/licensed"].files
    assert all(
        r.headers.get("authorization") == f"Bearer {TOKEN}"
        for r in hub.seen(contains="gated-org/licensed")[-3:]
    )


def test_offline_mode_refuses_with_a_sentence_and_makes_no_request(
    hub: HubEmulator, hub_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "pull", REPO, "--offline"]) == 2
    err = capsys.readouterr().err
    assert "offline mode is on" in err and "turn offline mode off" in err
    assert hub.requests == []
    assert not hub_env.exists()


def test_a_pull_that_does_not_fit_is_refused_with_figures_before_any_download(
    hub: HubEmulator, hub_env: Path
) -> None:
    plan = mc.plan_pull(REPO, free_space=lambda _folder: 1_000)
    assert plan.need_bytes == sum(len(b) for b in hub.repos[REPO].files.values())
    with pytest.raises(DiskFullError) as caught:
        mc.pull(plan)
    message = str(caught.value)
    assert mc.human_bytes(plan.need_bytes) in message and "1.0 KB" in message
    assert "is free in" in message
    assert not hub.seen("GET", "/resolve/")


def test_a_bad_repo_name_is_refused_before_any_request(
    hub: HubEmulator, hub_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "pull", "no-slash-here"]) == 2
    assert "'no-slash-here' is not a Hub repository name" in capsys.readouterr().err
    assert hub.requests == []


def test_a_cancelled_pull_resumes_from_the_bytes_on_disk_at_the_next_pull(
    hub: HubEmulator, hub_env: Path
) -> None:
    weights = hub.repos[REPO].files["model.safetensors"]
    # Cancelled at the first bytes of the weights (a read is at most 64 KiB of 556 KB): the
    # file is partly on disk.
    plan = mc.plan_pull(REPO)
    cancel = threading.Event()
    seen: list[int] = []
    before_weights = sum(f.size for f in plan.files if f.name < "model.safetensors")

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done > before_weights:
            cancel.set()

    with pytest.raises(mc.PullCancelledError):
        mc.pull(plan, progress=progress, cancel=cancel)
    partial = list((hub_env / f"models--{REPO.replace('/', '--')}" / "blobs").glob("*.incomplete"))
    assert len(partial) == 1
    kept = partial[0].stat().st_size
    assert 0 < kept < len(weights)

    again = mc.plan_pull(REPO)
    assert again.need_bytes > 0
    mc.pull(again)
    assert _snapshot_files(hub_env, REPO) == hub.repos[REPO].files
    last = [r for r in hub.seen("GET", "/resolve/") if r.path.endswith("/model.safetensors")][-1]
    assert last.headers.get("range") == f"bytes={kept}-"
    # The files complete before the cancel were not fetched again.
    small = [r for r in hub.seen("GET", "/resolve/") if r.path.endswith("/config.json")]
    assert len(small) == 1


def _panel(qtbot: Any) -> tuple[Any, Any, Any]:
    from desktop.views.config_editor import ConfigEditor
    from desktop.views.model_pull import ModelPullPanel
    from desktop.views.operations import MessageBus, Operations

    editor = ConfigEditor()
    qtbot.addWidget(editor)
    ops = Operations(MessageBus())
    panel = ModelPullPanel(editor, ops, lambda: False)
    return editor, ops, panel


def _type_model(qtbot: Any, editor: Any, text: str) -> None:
    edit = editor.field_widget("model.name_or_path")
    edit.selectAll()
    qtbot.keyClicks(edit, text)


def test_the_editor_pull_button_pulls_off_the_gui_thread_with_progress_and_cancel(
    qtbot: Any, qloop: Any, hub: HubEmulator, hub_env: Path
) -> None:
    from app_helpers import run, until

    editor, ops, panel = _panel(qtbot)
    editor.show()
    files = hub.repos[REPO].files
    half = len(files["model.safetensors"]) // 2
    go_on = threading.Event()
    hub.stall["model.safetensors"] = (half, go_on)
    _type_model(qtbot, editor, REPO)
    # The bar's reading once every file before the weights and half of these have arrived.
    before = sum(len(data) for name, data in files.items() if name < "model.safetensors")
    stalled_at = 1000 * (before + half) // sum(len(data) for data in files.values())

    async def body() -> None:
        # Cancel while the weights are half way: the GUI thread keeps serving meanwhile.
        qtbot.mouseClick(panel.pull_button, Qt.MouseButton.LeftButton)
        assert not panel.pull_button.isEnabled()
        await until(lambda: panel.progress.value() >= stalled_at or not panel.is_running(), 30)
        assert panel.is_running(), panel.status.text()
        assert panel.progress.isVisible() and "needed" in panel.status.text()
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
        go_on.set()  # the next chunk arrives and the pull sees the cancel
        await until(lambda: not panel.is_running(), 30)
        assert "cancelled" in panel.status.text()
        assert panel.pull_button.isEnabled() and not panel.progress.isVisible()
        storage = hub_env / f"models--{REPO.replace('/', '--')}"
        assert not list(storage.glob("snapshots/*/model.safetensors"))
        assert len(list(storage.glob("blobs/*.incomplete"))) == 1  # kept for the next pull

        # Pull again: it finishes, the bar reaches 100 %, the files are in the cache.
        del hub.stall["model.safetensors"]
        done: list[str] = []
        panel.pulled.connect(done.append)
        qtbot.mouseClick(panel.pull_button, Qt.MouseButton.LeftButton)
        await until(lambda: done, 30)
        assert panel.progress.value() == 1000
        assert "is in the model cache" in panel.status.text()
        assert _snapshot_files(hub_env, REPO) == hub.repos[REPO].files
        await ops.close()

    run(qloop, body())


def test_the_pull_button_says_why_it_will_not_pull(
    qtbot: Any, qloop: Any, hub: HubEmulator, hub_env: Path, tmp_path: Path
) -> None:
    from app_helpers import run, until

    editor, ops, panel = _panel(qtbot)
    _type_model(qtbot, editor, str(tmp_path))
    qtbot.mouseClick(panel.pull_button, Qt.MouseButton.LeftButton)
    assert "is not a Hub model" in panel.status.text()
    _type_model(qtbot, editor, "gated-org/licensed")

    async def body() -> None:
        qtbot.mouseClick(panel.pull_button, Qt.MouseButton.LeftButton)
        await until(lambda: not panel.is_running(), 30)
        assert "accept its licence" in panel.status.text()
        await ops.close()

    run(qloop, body())
    assert not hub.seen("GET", "/resolve/")


def test_the_window_has_the_pull_button_beside_the_model_field_and_export_on_the_job_table(
    qtbot: Any, qloop: Any, demo_home: Path
) -> None:
    from app_helpers import run, until

    from desktop.models import Job, JobState, Settings
    from desktop.views.app import build_window
    from desktop.views.export_dialog import ExportDialog
    from trainer.config import load_config

    window = build_window(settings=Settings(), check_runtime=False)
    qtbot.addWidget(window)

    async def body() -> None:
        await window.start()
        await until(lambda: window.service is not None, 30)
        button = window.editor.findChild(QToolButton, "model_pull_button")
        model_field = window.editor.field_widget("model.name_or_path")
        assert button is not None and button.parentWidget() is model_field.parentWidget()
        config = load_config(demo_home / "demo" / "config.json")
        job = Job(
            id="20260101-000000-aaaa",
            name="done",
            config=config,
            job_dir=demo_home / "demo",
            created_at=1.0,
            state=JobState.COMPLETED,
        )
        window.state.job_added(job)
        menu = window.jobs_view.context_menu([job.id])
        action = next(a for a in menu.actions() if a.objectName() == "export")
        assert action.isEnabled()
        action.trigger()
        dialog = window.findChild(ExportDialog)
        assert dialog is not None and dialog.job.id == job.id and dialog.isVisible()
        dialog.reject()
        await window.ops.close()
        await window.service.close()

    run(qloop, body())


def test_hf_hub_offline_in_the_environment_is_named_and_nothing_is_sent(
    hub: HubEmulator, hub_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from desktop.core.errors import OfflineError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE is set in this environment"):
        mc.plan_pull(REPO)
    assert hub.requests == []
