"""The event protocol: writer, incremental reader, status file (trainer/protocol.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from trainer.protocol import (
    EventReader,
    EventWriter,
    MetricEvent,
    StatusEvent,
    StatusFile,
    read_all_events,
    read_status,
    write_status,
)


def test_contract_modules_never_import_torch() -> None:
    code = "import trainer.config, trainer.protocol, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_writer_numbers_events_and_the_reader_gets_them_all(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)
    writer.emit("status", state="starting")
    for step in range(1, 6):
        writer.emit("metric", step=step, total_steps=5, loss=1.0 / step, learning_rate=1e-3)
    writer.emit("status", state="completed", message="done")
    writer.close()

    events = read_all_events(path)
    assert [e.seq for e in events] == list(range(7))
    metrics = [e for e in events if isinstance(e, MetricEvent)]
    assert [m.step for m in metrics] == [1, 2, 3, 4, 5]
    assert metrics[-1].values()["loss"] == pytest.approx(0.2)
    assert isinstance(events[-1], StatusEvent) and events[-1].state == "completed"


def test_a_resumed_writer_continues_the_numbering(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    first = EventWriter(path)
    first.emit("status", state="starting")
    first.emit("metric", step=1, loss=2.0)
    first.close()
    second = EventWriter(path)
    second.emit("status", state="training", resumed_from_step=1, message="resumed from step 1")
    second.close()
    assert [e.seq for e in read_all_events(path)] == [0, 1, 2]


def test_a_torn_last_line_waits_for_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    line = json.dumps({"seq": 0, "time": 1.0, "kind": "metric", "step": 3, "loss": 0.5}) + "\n"
    path.write_bytes(line[:20].encode())
    reader = EventReader(path)
    assert reader.read_new() == []
    assert reader.offset == 0
    with open(path, "ab") as fh:
        fh.write(line[20:].encode())
    events = reader.read_new()
    assert len(events) == 1 and isinstance(events[0], MetricEvent) and events[0].step == 3
    assert reader.offset == len(line.encode())


@pytest.mark.expect_log("skipped an unreadable event")
def test_garbage_lines_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events-with-garbage.jsonl"  # broken on purpose: not "events.jsonl"
    good = [
        json.dumps({"seq": 0, "time": 1.0, "kind": "status", "state": "starting"}),
        "this is not json",
        json.dumps({"seq": 1, "time": 1.0, "kind": "no-such-kind"}),
        json.dumps({"seq": 2, "time": 1.0, "kind": "metric", "step": 1, "loss": 1.0}),
    ]
    path.write_text("\n".join(good) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="trainer.protocol"):
        events = EventReader(path).read_new()
    assert [e.seq for e in events] == [0, 2]
    assert sum("skipped an unreadable event" in r.getMessage() for r in caplog.records) == 2


def test_a_restarted_reader_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)
    for step in range(10):
        writer.emit("metric", step=step, loss=float(step))
    reader = EventReader(path)
    first = reader.read_new()
    saved = (reader.offset, reader.last_seq)
    for step in range(10, 15):
        writer.emit("metric", step=step, loss=float(step))
    writer.close()
    # A new reader from the saved position sees only the new events ...
    resumed = EventReader(path, *saved).read_new()
    assert [e.seq for e in first] == list(range(10))
    assert [e.seq for e in resumed] == list(range(10, 15))
    # ... and one restored with a stale offset but the right last seq drops the repeats.
    stale = EventReader(path, 0, saved[1]).read_new()
    assert [e.seq for e in stale] == list(range(10, 15))


def test_the_reader_follows_a_file_being_appended_to(tmp_path: Path) -> None:
    """A writer appends in torn pieces while the reader polls: every event once, in order."""
    path = tmp_path / "events.jsonl"
    total = 3000
    script = f"""
import json, os, time
fd = os.open({str(path)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
for seq in range({total}):
    line = json.dumps({{"seq": seq, "time": time.time(), "kind": "metric", "step": seq,
                        "loss": 1.0}}) + "\\n"
    data = line.encode()
    cut = (seq * 7) % len(data)
    os.write(fd, data[:cut])
    if seq % 50 == 0:
        time.sleep(0.001)
    os.write(fd, data[cut:])
os.close(fd)
"""
    writer = subprocess.Popen([sys.executable, "-c", script])
    reader = EventReader(path)
    seen: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        seen.extend(e.seq for e in reader.read_new(max_bytes=64 * 1024))
        if writer.poll() is not None and len(seen) >= total:
            break
        if writer.poll() is not None:
            seen.extend(e.seq for e in reader.read_new())
            if len(seen) >= total:
                break
        time.sleep(0.002)
    assert writer.wait(timeout=30) == 0
    assert seen == list(range(total))
    assert reader.skipped_lines == 0


def test_concurrent_emits_from_threads_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)

    def burst() -> None:
        for step in range(500):
            writer.emit("log", message="x" * (step % 300))

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    reader = EventReader(path)
    events = reader.read_new()
    assert reader.skipped_lines == 0
    assert [e.seq for e in events] == list(range(2000))


def test_status_file_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None
    write_status(
        tmp_path,
        StatusFile(state="completed", exit_code=0, last_step=40, last_checkpoint="checkpoint-40"),
    )
    status = read_status(tmp_path)
    assert status is not None and status.state == "completed" and status.last_step == 40
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temp file left behind
    (tmp_path / "status.json").write_text("{not json", encoding="utf-8")
    assert read_status(tmp_path) is None
    assert os.path.exists(tmp_path / "status.json")


@pytest.mark.expect_log(
    r"events.jsonl was replaced \(the event before byte \d+ is seq \d+, not 4\)"
)
def test_a_replaced_stream_is_read_again_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)
    for step in range(5):
        writer.emit("metric", step=step, loss=1.0)
    writer.close()
    reader = EventReader(path)
    reader.read_new()
    saved = (reader.offset, reader.last_seq)
    # Another stream, at least as long, takes the file's place (a resumed trainer's).
    path.unlink()
    writer = EventWriter(path)
    for step in range(20):
        writer.emit("metric", step=100 + step, loss=0.5)
    writer.close()
    again = EventReader(path, *saved)
    events = again.read_new()
    assert [e.seq for e in events] == list(range(20))
    assert again.restarted and len(again.notices) == 1


@pytest.mark.expect_log(r"skipped an unreadable event")
def test_an_unreadable_last_line_is_not_taken_for_another_stream(tmp_path: Path) -> None:
    path = tmp_path / "damaged.jsonl"
    writer = EventWriter(path)
    writer.emit("metric", step=1, loss=1.0)
    writer.close()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"seq": 1, "kind": "no-such-kind"}\n')
    reader = EventReader(path)
    reader.read_new()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"seq": 2, "time": 1.0, "kind": "metric", "step": 2}) + "\n")
    resumed = EventReader(path, reader.offset, reader.last_seq)
    assert [e.seq for e in resumed.read_new()] == [2]
    assert not resumed.restarted and not resumed.notices
