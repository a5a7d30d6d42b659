"""`finetune-desk compare` and `finetune-desk chat` on the demo trained in the test.

compare: one JSON line per prompt with the base's and every job's answer, CSV with `--out
x.csv`, eval records with their reference answers, eval loss base vs adapter, and a bad
prompts file named by its line before anything starts. chat: the answer streams, Ctrl+C stops
it and a second Ctrl+C exits, leaving no server behind; a killed server is one sentence.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from app_helpers import suspend_process, unread_stdin_bytes

from desktop.cli import main as cli_main

DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def two_jobs(tmp_path_factory: pytest.TempPathFactory, trained_chat_job: Path) -> list[Path]:
    """The trained job, and a copy whose output is its step-30 checkpoint (another adapter)."""
    early = tmp_path_factory.mktemp("compare") / "early-job"
    shutil.copytree(trained_chat_job, early, ignore=shutil.ignore_patterns("output"))
    shutil.copytree(early / "checkpoints" / "checkpoint-30", early / "output")
    shutil.copy(trained_chat_job / "output" / "tokenizer_config.json", early / "output")
    shutil.copy(trained_chat_job / "output" / "tokenizer.json", early / "output")
    return [trained_chat_job, early]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_compare_prints_every_models_answer_per_prompt(
    two_jobs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = _write(
        tmp_path / "prompts.jsonl",
        [
            '{"prompt": "count on from 17"}',
            "",
            '{"messages": [{"role": "system", "content": "be brief"}, '
            '{"role": "user", "content": "reverse: red cat blue"}]}',
        ],
    )
    jobs = [str(j) for j in two_jobs]
    table = tmp_path / "answers.csv"
    argv = ["compare", *jobs, "--prompts", str(prompts), "--max-new-tokens", "8"]
    assert cli_main([*argv, "--out", str(table)]) == 0
    with open(table, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = ["base", two_jobs[0].name, two_jobs[1].name]
    assert list(rows[0]) == ["prompt", "reference", *names]
    assert [r["prompt"] for r in rows] == ["count on from 17", "reverse: red cat blue"]
    # The adapters were attached: on the training task they answer unlike the random base.
    assert any(r["base"] != r[two_jobs[0].name] for r in rows)
    assert "wrote 2 prompt(s) and 0 eval loss line(s)" in capsys.readouterr().err


def test_compare_on_eval_records_with_eval_loss(
    trained_chat_job: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", str(trained_chat_job), "--eval", "3", "--eval-loss"]
    assert cli_main([*argv, "--max-new-tokens", "6"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows, losses = lines[:3], lines[3:]
    assert all(r["reference"] and set(r["answers"]) == {"base", "job"} for r in rows)
    assert rows[0]["messages"][-1]["role"] == "user"
    assert len(losses) == 1
    loss = losses[0]
    assert loss["job"] == "job" and loss["records"] == 32 and loss["tokens"] > 0
    assert loss["adapter_loss"] < loss["base_loss"]
    assert loss["adapter_perplexity"] < loss["base_perplexity"]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['{"prompt": "hi"}', "{oops"], r"prompts.jsonl:2: not JSON"),
        (['{"prompt": "hi"}', '{"question": "hi"}'], r"prompts.jsonl:2: question: Extra inputs"),
        (['{"prompt": "a", "messages": []}'], r"prompts.jsonl:1: give either"),
        (['{"prompt": 3}'], r"prompts.jsonl:1: prompt: Input should be a valid string"),
        (
            ['{"messages": [{"role": "assistant", "content": "x"}]}'],
            r"prompts.jsonl:1: \"messages\" must end with a user turn",
        ),
        (["", "  "], r"holds no prompts"),
    ],
)
def test_a_bad_prompts_line_is_named_before_anything_runs(
    lines: list[str],
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    demo_template: Path,
) -> None:
    import re

    prompts = _write(tmp_path / "prompts.jsonl", lines)
    # demo_template has no output/: a server started on it would fail; the file fails first.
    assert cli_main(["compare", str(demo_template), "--prompts", str(prompts)]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err), err
    assert err.count("\n") == 1


class _Console:
    """A `finetune-desk chat` child: its stdout and stderr collected by threads."""

    def __init__(self, argv: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "desktop", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.out = ""
        self.err = ""
        for name in ("stdout", "stderr"):
            threading.Thread(target=self._drain, args=(name,), daemon=True).start()

    def _drain(self, name: str) -> None:
        stream = getattr(self.proc, name)
        for chunk in iter(lambda: stream.read(1), ""):
            if name == "stdout":
                self.out += chunk
            else:
                self.err += chunk

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        end = time.monotonic() + DEADLINE_S
        while not condition():
            assert self.proc.poll() is None or condition(), f"exited: {self.out}\n{self.err}"
            assert time.monotonic() < end, f"no {what} in time: {self.out!r}\n{self.err}"
            time.sleep(0.02)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def server_pid(self) -> int:
        self.wait_for(lambda: "model server pid" in self.err, "ready line")
        return int(self.err.split("model server pid ")[1].split(",")[0])


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_chat_streams_ctrl_c_stops_the_answer_and_a_second_exits(trained_chat_job: Path) -> None:
    console = _Console(
        ["chat", str(trained_chat_job), "--base", "--temperature", "0", "--max-new-tokens", "400"]
    )
    pid = console.server_pid()
    console.send("count on from 5")
    # The base (random weights) does not end in 400 tokens: text after the marker is a stream.
    console.wait_for(
        lambda: len(console.out.partition("assistant> ")[2]) > 2, "the answer's first tokens"
    )
    # The tiny model's whole answer takes about a second: held (SIGSTOP) until the CLI's stop
    # is in its pipe, it cannot end on its own first, however loaded the machine is.
    server = psutil.Process(pid)
    suspend_process(pid)
    try:
        console.proc.send_signal(signal.SIGINT)
        console.wait_for(lambda: unread_stdin_bytes(pid) > 0, "the stop request in the pipe")
    finally:
        server.resume()
    console.wait_for(lambda: "[stopped]" in console.out, "stop")
    console.wait_for(lambda: console.out.rstrip().endswith("you>"), "next prompt")
    assert psutil.pid_exists(pid)  # Ctrl+C is the CLI's: the server lives on
    console.proc.send_signal(signal.SIGINT)
    assert console.proc.wait(timeout=DEADLINE_S) == 130
    end = time.monotonic() + DEADLINE_S
    while not _gone(pid):
        assert time.monotonic() < end, "the model server outlived the chat"
        time.sleep(0.05)


def test_chat_says_one_sentence_when_the_server_is_killed(trained_chat_job: Path) -> None:
    console = _Console(["chat", str(trained_chat_job), "--max-new-tokens", "4"])
    pid = console.server_pid()
    os.kill(pid, signal.SIGKILL)
    console.send("count on from 5")
    assert console.proc.wait(timeout=DEADLINE_S) == 1
    console.wait_for(lambda: "error:" in console.err, "error line")
    errors = [line for line in console.err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: the model server was killed (SIGKILL); start the chat again to restart it"
    ]
