"""Export after the fact (`finetune-desk export`, the window's Export dialog), on the demo job
trained for real (`trained_lora_job`, session-scoped in conftest.py, shared with the train and
resume tests; copied here so nothing is written into it).

What it shows: the merged folder loads with plain transformers (PEFT is never imported) and
its greedy output equals the adapter-on-base output for the same prompt, in fp32; a checkpoint
merges in bf16; the model card holds the training config and the final metrics; bad requests
are refused with one sentence before anything starts. Push (against the loopback Hub, with
`HF_HUB_DISABLE_XET=1`): the files arrive in a private repo, the token never lands in any file
under FTDESK_HOME, offline mode makes no request at all, a bad repo name is refused before any
upload; the window's dialog shows a merge's progress and Cancel stops a push.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from desktop.cli import main
from tests.hub_emulator import HubEmulator

pytest_plugins = ["app_fixtures"]

JOB_ID = "20260101-120000-abcd"

# Greedy answers of the merged model (plain transformers, checked to import no PEFT) and of
# the adapter on its base, for one prompt; and how far the merged logits are from each.
_COMPARE = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
merged_dir, adapter_dir, base_dir = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(merged_dir)
prompt = tok.apply_chat_template(
    [{"role": "user", "content": "count on from 17"}], add_generation_prompt=True, tokenize=False
)
ids = tok(prompt, return_tensors="pt").input_ids
def greedy(model):
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        return out[0, ids.shape[1]:].tolist(), model(ids).logits
merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
merged_tokens, merged_logits = greedy(merged)
peft_loaded = "peft" in sys.modules
from peft import PeftModel
base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
adapted = PeftModel.from_pretrained(base, adapter_dir)
adapter_tokens, adapter_logits = greedy(adapted)
with adapted.disable_adapter():
    _, base_logits = greedy(adapted)
print(json.dumps({
    "peft_loaded_for_merged": peft_loaded,
    "merged": merged_tokens,
    "adapter": adapter_tokens,
    "answer": tok.decode(merged_tokens, skip_special_tokens=True),
    "to_adapter": (merged_logits - adapter_logits).abs().max().item(),
    "to_base": (merged_logits - base_logits).abs().max().item(),
}))
"""


def _register(home: Path, job_dir: Path, state: str = "completed") -> None:
    from desktop.core.store import DB_FILENAME, JobStore
    from desktop.models import Job, JobState
    from trainer.config import load_config

    config = load_config(job_dir / "config.json")
    job = Job(
        id=job_dir.name,
        name=config.name,
        config=config,
        job_dir=job_dir,
        created_at=1.0,
        state=JobState(state),
    )
    with JobStore(home / DB_FILENAME) as store:
        store.add_job(job, reason="a trained job copied in by the test")


@pytest.fixture(scope="module")
def export_home(tmp_path_factory: pytest.TempPathFactory, trained_lora_job: Path) -> Iterator[Path]:
    """FTDESK_HOME holding a copy of the trained demo job, registered as completed."""
    home = tmp_path_factory.mktemp("export-home")
    job_dir = home / "jobs" / JOB_ID
    shutil.copytree(trained_lora_job, job_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTDESK_HOME", str(home))
        mp.delenv("FTDESK_HF_TOKEN", raising=False)
        _register(home, job_dir)
        yield home


@pytest.fixture(scope="module")
def merged(export_home: Path) -> Path:
    """`finetune-desk export JOB --merge` (fp32, the default folder): the merged folder."""
    assert main(["export", JOB_ID, "--merge"]) == 0
    return export_home / "jobs" / JOB_ID / "output" / "merged"


def test_the_merged_model_loads_without_peft_and_answers_as_the_adapter_on_its_base(
    merged: Path, export_home: Path
) -> None:
    job_dir = export_home / "jobs" / JOB_ID
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {
        p.name for p in merged.iterdir()
    }
    assert not (merged / "adapter_config.json").exists()
    assert not merged.with_name("merged.partial").exists()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _COMPARE,
            str(merged),
            str(job_dir / "output"),
            str(job_dir / "model"),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["peft_loaded_for_merged"] is False
    assert found["merged"] == found["adapter"], found
    assert len(found["merged"]) > 0
    assert found["to_adapter"] < 1e-3, found
    assert found["to_base"] > 1e-2, found  # the adapter really changed the weights


def test_the_model_card_holds_the_training_config_and_final_metrics(
    merged: Path, export_home: Path
) -> None:
    card = (merged / "README.md").read_text(encoding="utf-8")
    summary = json.loads(
        (export_home / "jobs" / JOB_ID / "output" / "training_summary.json").read_text()
    )
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "## Final metrics" in card and "| final_train_loss |" in card
    assert f"| steps | {summary['steps']} |" in card
    config = json.loads(card.split("```json\n", 1)[1].split("\n```", 1)[0])
    assert config["method"] == "lora" and config["training"]["max_steps"] == summary["steps"]


def _safetensors_dtypes(path: Path) -> set[str]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def test_bad_requests_get_one_sentence_before_anything_runs(
    export_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", JOB_ID, "--merge", "--dtype", "int3"]) == 2
    assert "dtype 'int3' is not one of fp32, bf16, fp16" in capsys.readouterr().err
    assert main(["export", JOB_ID]) == 2
    assert "nothing to export" in capsys.readouterr().err
    assert main(["export", JOB_ID, "--merge", "--checkpoint", "7"]) == 2
    err = capsys.readouterr().err
    assert "has no checkpoint 7; it has: " in err and err.count("\n") == 1
    failed = export_home / "jobs" / "20260101-120001-ffff"
    failed.mkdir()
    shutil.copy(export_home / "jobs" / JOB_ID / "config.json", failed / "config.json")
    _register(export_home, failed, state="failed")
    assert main(["export", failed.name, "--merge"]) == 2
    assert "is failed, not completed" in capsys.readouterr().err
    # A merge replaces its folder: a folder of the user's own files is never it.
    mine = export_home / "my-models"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["export", JOB_ID, "--merge", "--out", str(mine)]) == 2
    assert "not an earlier export" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"
    (export_home / "fresh.old").mkdir()
    assert main(["export", JOB_ID, "--merge", "--out", str(export_home / "fresh")]) == 2
    assert "fresh.old exists" in capsys.readouterr().err


# -- push (the loopback Hub) -----------------------------------------------------------------

TOKEN = "hf_push_token_9f8e7d6c5b4a"


@pytest.fixture
def hub(export_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubEmulator]:
    """The loopback Hub; the trainer child reaches it online (HF_HUB_DISABLE_XET=1: plain
    uploads), with the token in the secret store's session override."""
    with HubEmulator(tokens={TOKEN}) as emulator:
        monkeypatch.setenv("HF_ENDPOINT", emulator.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("FTDESK_HF_TOKEN", TOKEN)
        yield emulator


def _no_token_under(home: Path) -> list[str]:
    return [str(p) for p in home.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]


def test_push_of_the_adapter_arrives_private_and_the_token_stays_out_of_every_file(
    hub: HubEmulator, export_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = export_home / "jobs" / JOB_ID / "output"
    own = {p.name: p.read_bytes() for p in output.iterdir() if p.is_file()}
    assert main(["export", JOB_ID, "--push", "me/demo-adapter"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "pushed to me/demo-adapter" in out
    repo = hub.repos["me/demo-adapter"]
    assert repo.private is True and repo.commits == 1
    assert (
        repo.files["adapter_model.safetensors"]
        == (output / "adapter_model.safetensors").read_bytes()
    )
    assert repo.files["adapter_config.json"] == (output / "adapter_config.json").read_bytes()
    assert repo.files["README.md"].startswith(b"---\nlibrary_name: peft\n")
    # The job's own folder is left as it was; no optimizer state is published.
    assert {p.name: p.read_bytes() for p in output.iterdir() if p.is_file()} == own
    assert not any(name.endswith((".pt", ".pth", ".bin")) for name in repo.files)
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.seen("POST"))
    assert _no_token_under(export_home) == []


def test_a_checkpoint_merged_in_bf16_is_pushed_public_when_asked(
    hub: HubEmulator, export_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bf16"
    step = max(
        int(p.name.split("-")[1])
        for p in (export_home / "jobs" / JOB_ID / "checkpoints").glob("checkpoint-*")
    )
    args = ["export", JOB_ID[:-2], "--merge", "--checkpoint", str(step), "--dtype", "bf16"]
    args += ["--out", str(out), "--push", "me/demo-merged", "--public", "--json"]
    assert main(args) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    assert json.loads(captured.out)["out"] == str(out)
    assert "merge: 100%" in captured.err and "push: 100%" in captured.err  # progress lines
    assert _safetensors_dtypes(out / "model.safetensors") == {"BF16"}
    assert "| steps |" in (out / "README.md").read_text(encoding="utf-8")
    repo = hub.repos["me/demo-merged"]
    assert repo.private is False
    sent = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert sent == repo.files
    assert _no_token_under(export_home) == []
    assert _no_token_under(tmp_path) == []


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--offline"], "offline mode is on: nothing was sent to the Hub"),
        (["--push", "not a repo"], "is not a Hub repository name"),
        (["--push", "me/..x"], "is not a Hub repository name"),
    ],
)
def test_a_push_refused_before_any_request(
    hub: HubEmulator,
    export_home: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    said: str,
) -> None:
    args = ["export", JOB_ID, "--merge", "--push", "me/demo", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1
    assert hub.requests == []
    assert not (export_home / "jobs" / JOB_ID / "output" / "merged.partial").exists()


@pytest.mark.expect_log(r"keychain cannot be used")
def test_a_push_without_a_token_says_how_to_store_one(
    hub: HubEmulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FTDESK_HF_TOKEN")
    assert main(["export", JOB_ID, "--push", "me/demo"]) != 0
    assert "finetune-desk keys set hf_token" in capsys.readouterr().err
    assert hub.requests == []


def test_a_private_push_into_an_existing_public_repo_is_refused_before_any_upload(
    hub: HubEmulator, demo_made_apart: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    public = hub.add_model("me/already-public", demo_made_apart / "model")
    before = dict(public.files)
    assert main(["export", JOB_ID, "--push", "me/already-public"]) == 2
    assert "exists and is public" in capsys.readouterr().err
    assert public.files == before and not hub.seen("POST", "/commit/")


# -- the window's Export dialog ---------------------------------------------------------------


def _dialog(qtbot: Any, export_home: Path) -> Any:
    from desktop.core.runtime import TrainerRuntime
    from desktop.core.store import JobStore
    from desktop.views.export_dialog import ExportDialog
    from desktop.views.operations import MessageBus, Operations

    with JobStore() as store:
        job = store.get_job(JOB_ID)
    dialog = ExportDialog(job, Operations(MessageBus()), TrainerRuntime(), offline=False)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def test_the_export_dialog_merges_with_progress(
    qtbot: Any, qloop: Any, export_home: Path, tmp_path: Path
) -> None:
    from app_helpers import run, until

    dialog = _dialog(qtbot, export_home)
    out = tmp_path / "from-dialog"
    dialog.out.setText(str(out))
    seen: list[int] = []
    dialog.progress.valueChanged.connect(seen.append)

    async def body() -> None:
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
        assert dialog.is_running() and not dialog.close_button.isEnabled()
        await until(lambda: not dialog.is_running(), 240)
        assert "merged model in" in dialog.status.text(), dialog.status.text()
        await dialog.ops.close()

    run(qloop, body())
    assert dialog.progress.value() == 100
    assert any(0 < v < 100 for v in seen)  # the bar moved with the trainer's stages
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


def test_cancel_in_the_export_dialog_stops_a_push_before_its_commit(
    qtbot: Any, qloop: Any, hub: HubEmulator, export_home: Path
) -> None:
    from app_helpers import run, until

    hold = threading.Event()
    hub.hold_preupload = hold
    dialog = _dialog(qtbot, export_home)
    dialog.merge.setChecked(False)
    dialog.push.setChecked(True)
    dialog.repo.setText("me/cancelled-push")

    async def body() -> None:
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
        await until(lambda: hub.seen("POST", "/preupload/"), 120)
        assert "uploading" in dialog.status.text()
        qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
        await until(lambda: not dialog.is_running(), 60)
        assert "was cancelled" in dialog.status.text(), dialog.status.text()
        await dialog.ops.close()

    try:
        run(qloop, body())
    finally:
        hold.set()
    assert hub.repos["me/cancelled-push"].commits == 0
    assert not hub.seen("POST", "/commit/")
    import psutil  # the trainer child is gone, not left uploading in the background

    children = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
    assert not [c for c in children if "trainer export" in c or "trainer', 'export" in c], children
