"""Shared fixtures: a tiny demo model made once per test session, isolated data folders."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
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


TRAINER_TIMEOUT_S = 300


def _trainer_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.pop("RANK", None)
    env.pop("LOCAL_RANK", None)
    env.update(extra or {})
    return env


def run_trainer_process(
    job_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m trainer run --job-dir DIR ARGS` as its own process; console in DIR/train.log."""
    with open(job_dir / "train.log", "a", encoding="utf-8") as log:
        return subprocess.run(
            [sys.executable, "-m", "trainer", "run", "--job-dir", str(job_dir), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=_trainer_env(env),
            timeout=TRAINER_TIMEOUT_S,
            check=False,
        )


@pytest.fixture(scope="session")
def run_trainer() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs the real trainer program on a job folder (see `run_trainer_process`)."""
    return run_trainer_process


@pytest.fixture(scope="session")
def trained_lora_job(tmp_path_factory: pytest.TempPathFactory, demo_template: Path) -> Path:
    """The demo trained to the end with LoRA, uninterrupted (shared by train and resume tests)."""
    job = tmp_path_factory.mktemp("lora-run") / "job"
    shutil.copytree(demo_template, job)
    result = run_trainer_process(job)
    assert result.returncode == 0, (job / "train.log").read_text(encoding="utf-8")[-3000:]
    return job


@pytest.fixture(scope="session")
def trained_chat_job(tmp_path_factory: pytest.TempPathFactory, demo_template: Path) -> Path:
    """The demo with a 10 % eval split, trained 60 steps: its adapter has learned the data
    (the chat, compare and model server tests talk to it)."""
    job = tmp_path_factory.mktemp("chat-run") / "job"
    shutil.copytree(demo_template, job)
    config_path = job / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["dataset"]["eval_split"] = 0.1
    config["training"].update(max_steps=60, save_steps=30)
    config_path.write_text(json.dumps(config), encoding="utf-8")
    result = run_trainer_process(job)
    assert result.returncode == 0, (job / "train.log").read_text(encoding="utf-8")[-3000:]
    return job


def _events_file_problems(path: Path) -> list[str]:
    """Why an `events.jsonl` is not a complete, valid event stream (empty list when it is)."""
    from trainer.protocol import parse_event

    data = path.read_bytes()
    if not data:
        return []
    problems = []
    if not data.endswith(b"\n"):
        problems.append("the last line has no newline (torn)")
    last_seq = -1
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            event = parse_event(raw)
        except ValueError as exc:
            problems.append(f"line {number}: not an event: {str(exc).splitlines()[0]}")
            continue
        if event.seq <= last_seq:
            problems.append(f"line {number}: seq {event.seq} after {last_seq}")
        last_seq = event.seq
    return problems


@pytest.fixture(scope="session", autouse=True)
def every_events_file_parses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the session: every `events.jsonl` any test produced parses completely with the
    protocol's reader and its seq strictly increases (tests that corrupt a stream on purpose
    name the file differently)."""
    yield
    base = tmp_path_factory.getbasetemp()
    bad = {}
    checked = 0
    for path in base.rglob("events.jsonl"):
        checked += 1
        problems = _events_file_problems(path)
        if problems:
            bad[str(path.relative_to(base))] = problems[:5]
    assert not bad, f"invalid events.jsonl files (of {checked} checked): {bad}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "expect_log(*patterns): log records of level WARNING or above whose message matches one "
        "of these regular expressions are part of what the test shows, not a failure",
    )


@pytest.fixture(autouse=True)
def no_unexpected_log_warnings(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Fail a test on any log record of level WARNING or above that it did not expect.

    A warning nobody expected is a bug report nobody reads (qutebrowser's rule). A test that
    shows a warning declares it with `@pytest.mark.expect_log(pattern, ...)`, or inspects
    `caplog.records` itself and then calls `caplog.clear()`.
    """
    import re

    yield
    patterns = [
        re.compile(p) for mark in request.node.iter_markers("expect_log") for p in mark.args
    ]
    unexpected = [
        f"{r.levelname} {r.name}: {r.getMessage().splitlines()[0]}"
        for when in ("setup", "call")
        for r in caplog.get_records(when)
        if r.levelno >= logging.WARNING and not any(p.search(r.getMessage()) for p in patterns)
    ]
    if unexpected:
        pytest.fail("unexpected log records:\n" + "\n".join(unexpected[:10]), pytrace=False)
