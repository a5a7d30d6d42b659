"""A config whose model is a local folder: the folder travels to the pod file by file through
the agent's chunked sha256 upload (`pod_config` lists them; the whole trip is in
`test_runpod_restarts`), and a file whose name cannot travel is refused before any pod exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desktop.core.errors import ConfigError
from desktop.models import Job
from desktop.providers.runpod.pod_files import pod_config
from trainer.config import load_config


def demo(demo_dir: Path) -> Job:
    """A RunPod job over the demo copy (its model is the local folder `model/`)."""
    return Job(
        id="20261201-120000-modl", name="m", provider="runpod",
        config=load_config(demo_dir / "config.json"), job_dir=demo_dir,
    )  # fmt: skip


def test_a_local_model_folder_is_uploaded_and_the_pod_config_names_its_copy(
    demo_dir: Path,
) -> None:
    cfg, uploads = pod_config(demo(demo_dir))
    model = demo_dir / "model"
    files = {f"model/{p.relative_to(model).as_posix()}": p for p in model.rglob("*") if p.is_file()}
    assert files and {k: v for k, v in uploads.items() if k.startswith("model/")} == files
    assert cfg.model.name_or_path == "model"
    assert json.loads(cfg.to_json())["model"]["name_or_path"] == "model"


def test_a_model_file_whose_name_cannot_travel_is_refused_naming_it(demo_dir: Path) -> None:
    job = demo(demo_dir)
    (demo_dir / "model" / "notes (old).txt").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"model file .*notes \(old\)\.txt: its name cannot"):
        pod_config(job)
