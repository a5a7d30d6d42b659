"""Shared fixtures: a tiny demo model made once per test session, isolated data folders."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# Qt without a screen, and deterministic, quiet, offline ML libraries in every test.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The built-in demo (tiny model, data, config), written once per test process. Read-only."""
    from trainer.demo import make_demo

    root = tmp_path_factory.mktemp("demo-template")
    make_demo(root)
    yield root


@pytest.fixture
def demo_dir(tmp_path: Path, demo_template: Path) -> Path:
    """A fresh job directory holding its own copy of the demo (config.json, model/, train.jsonl)."""
    job = tmp_path / "job"
    shutil.copytree(demo_template, job)
    return job
