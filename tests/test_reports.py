"""The trainer's JSON reports (trainer/reports.py): what each real command prints parses back.

The app reads `check-data --json`, `doctor --json` and `make-demo --json` through the models in
`trainer.reports`; these tests run the real commands and parse their output with the same
models, so the printing side and the reading side cannot drift apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trainer.reports import DataProblem, DataReport, DemoReport, DoctorReport

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "datasets"


def _trainer_json(*args: str, codes: tuple[int, ...] = (0,)) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in codes, proc.stderr
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    return data


def test_check_data_json_round_trips_through_data_report(demo_template: Path) -> None:
    model = str(demo_template / "model")
    raw = _trainer_json("check-data", str(FIXTURES / "messages.jsonl"), "--json", "--model", model)
    report = DataReport.parse(raw)
    assert report.to_json_dict() == raw  # every key printed is a field, nothing is lost
    assert report.usable is True and report.format == "messages"
    assert report.token_stats is not None and report.token_stats.counted == report.valid_records
    assert report.rendered_example is not None
    assert any(s.trained for s in report.rendered_example.segments)


def test_unusable_check_data_json_lists_its_problems() -> None:
    raw = _trainer_json("check-data", str(FIXTURES / "bad_json.jsonl"), "--json", codes=(2,))
    report = DataReport.parse(raw)
    assert report.to_json_dict() == raw
    assert report.usable is False
    assert report.problem_count == len(report.problems) > 0
    assert all(isinstance(p, DataProblem) and p.line is not None for p in report.problems)


def test_doctor_json_round_trips_through_doctor_report() -> None:
    raw = _trainer_json("doctor", "--json")
    report = DoctorReport.parse(raw)
    assert report.to_json_dict() == raw
    assert report.executable == sys.executable
    assert report.ok is True and report.problems == []


def test_make_demo_json_round_trips_through_demo_report(tmp_path: Path) -> None:
    raw = _trainer_json("make-demo", str(tmp_path / "demo"), "--json")
    report = DemoReport.parse(raw)
    assert report.to_json_dict() == raw
    assert report.folder == (tmp_path / "demo").resolve()
    assert report.config == report.folder / "config.json" and report.config.is_file()
    assert (report.model / "config.json").is_file()
    assert report.train_data.is_file()


def test_parse_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"DoctorReport: .*ok: Field required"):
        DoctorReport.parse({"python": "3.11.9", "executable": "/usr/bin/python3"})
    with pytest.raises(ValueError, match=r"DataReport: problems\.0\.line: "):
        DataReport.parse({"path": "x.jsonl", "problems": [{"line": "one", "message": "m"}]})
    with pytest.raises(ValueError, match="DemoReport: expected a JSON object, got list"):
        DemoReport.parse([])  # type: ignore[arg-type]


def test_unknown_keys_from_a_newer_trainer_are_ignored() -> None:
    report = DoctorReport.parse(
        {"python": "3.12.1", "executable": "/x/python", "ok": True, "npu_available": True}
    )
    assert report.ok is True and "npu_available" not in report.to_json_dict()


def test_importing_the_reports_never_imports_the_training_stack() -> None:
    code = (
        "import sys, trainer.reports; "
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') "
        "if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
