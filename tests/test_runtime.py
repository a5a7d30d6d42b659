"""The trainer runtime gateway: doctor, check-data, make-demo and the child environment.

Fake runtimes are small Python scripts standing where a trainer Python would be: they answer
like `python -m trainer <command>` does (or fail the ways a broken runtime fails) and can dump
the environment they were given, so a test sees exactly what a trainer child would see.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from desktop.core.errors import DatasetError, RuntimeNotReadyError
from desktop.core.runtime import TrainerRuntime, require_usable, source_root
from desktop.models import Settings
from desktop.providers.offline import OFFLINE_ENV
from trainer.reports import DataProblem, DataReport

DATASETS = Path(__file__).parent / "fixtures" / "datasets"

DOCTOR_NOT_READY = {
    "python": "3.12.1",
    "executable": "/opt/fake/python",
    "torch": None,
    "ok": False,
    "problems": ["torch is not installed: pip install torch"],
    "warnings": [],
}


def fake_python(tmp_path: Path, body: str, name: str = "python") -> str:
    """An executable script that stands for a trainer Python.

    `body` runs with `command` (the trainer command), `args` (what follows it) and `env_out`
    (a file to dump the environment to) defined.
    """
    script = tmp_path / name
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        "assert sys.argv[1:3] == ['-m', 'trainer'], sys.argv\n"
        "command, args = sys.argv[3], sys.argv[4:]\n"
        f"env_out = {str(tmp_path / 'env.json')!r}\n" + textwrap.dedent(body),
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


# ---------------------------------------------------------------------------------------------
# The child environment


def test_child_env_puts_the_checkout_first_then_offline_then_secrets() -> None:
    root = source_root()
    assert root is not None and (root / "trainer" / "__init__.py").is_file()
    base = {"PYTHONPATH": f"/elsewhere{os.pathsep}{root}", "HF_TOKEN": "stale", "KEEP": "1"}
    env = TrainerRuntime("/x/python", offline=True).child_env({"HF_TOKEN": "fresh"}, base=base)
    # Already on the path: not added twice, the order the user chose is kept.
    assert env["PYTHONPATH"] == f"/elsewhere{os.pathsep}{root}"
    assert {k: env[k] for k in OFFLINE_ENV} == OFFLINE_ENV
    assert env["HF_TOKEN"] == "fresh"
    assert env["KEEP"] == "1"
    assert base["HF_TOKEN"] == "stale"  # the caller's mapping is not changed

    online = TrainerRuntime("/x/python").child_env(base={"PYTHONPATH": "/elsewhere"})
    assert online["PYTHONPATH"] == f"{root}{os.pathsep}/elsewhere"
    assert not set(OFFLINE_ENV) & set(online)


def test_child_env_defaults_to_this_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTDESK_RUNTIME_TEST", "seen")
    assert TrainerRuntime().child_env()["FTDESK_RUNTIME_TEST"] == "seen"


def test_from_settings_and_argv() -> None:
    settings = Settings(trainer_python="/opt/rt/bin/python", offline=True)
    runtime = TrainerRuntime.from_settings(settings)
    assert (runtime.python, runtime.offline) == ("/opt/rt/bin/python", True)
    assert TrainerRuntime.from_settings(settings, offline=False).offline is False
    assert TrainerRuntime.from_settings(Settings()).python == sys.executable
    assert runtime.argv("doctor", "--json") == [
        "/opt/rt/bin/python",
        "-m",
        "trainer",
        "doctor",
        "--json",
    ]


# ---------------------------------------------------------------------------------------------
# doctor


def test_doctor_returns_the_report_of_a_runtime_that_cannot_train(tmp_path: Path) -> None:
    python = fake_python(
        tmp_path,
        f"""
        assert command == 'doctor' and args == ['--json']
        print(json.dumps({DOCTOR_NOT_READY!r}))
        sys.exit(1)
        """,
    )
    report = TrainerRuntime(python).doctor()
    assert report.ok is False
    assert report.torch is None
    assert report.problems == ["torch is not installed: pip install torch"]


def test_a_report_of_another_shape_is_a_clear_sentence(tmp_path: Path) -> None:
    python = fake_python(tmp_path, "print(json.dumps({'python': '3.12'}))")
    with pytest.raises(RuntimeNotReadyError) as info:
        TrainerRuntime(python).doctor()
    message = str(info.value)
    assert python in message
    assert "executable" in message and "ok" in message  # the missing fields are named
    assert "Settings" in message


# ---------------------------------------------------------------------------------------------
# check-data


def test_check_data_of_a_usable_file() -> None:
    report = TrainerRuntime().check_data(str(DATASETS / "messages.jsonl"))
    assert report.usable
    assert report.format == "messages"
    assert report.records > 0 and report.valid_records == report.records
    assert require_usable(report) is report


def test_check_data_of_an_unusable_file_lists_lines() -> None:
    path = str(DATASETS / "bad_json.jsonl")
    report = TrainerRuntime().check_data(path)
    assert not report.usable
    assert report.problems and report.problems[0].line is not None
    with pytest.raises(DatasetError) as info:
        require_usable(report)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: the dataset is not usable:"
    first = report.problems[0]
    assert lines[1] == f"  {path}: line {first.line}: {first.message}"


def test_check_data_passes_every_option_and_the_offline_env_reaches_the_child(
    tmp_path: Path,
) -> None:
    python = fake_python(
        tmp_path,
        """
        with open(env_out, 'w') as fh:
            json.dump({'env': dict(os.environ), 'argv': [command, *args]}, fh)
        print(json.dumps({'path': args[0], 'usable': True, 'records': 3, 'valid_records': 3}))
        """,
    )
    report = TrainerRuntime(python, offline=True).check_data(
        "/data/train.jsonl",
        fmt="alpaca",
        split="train",
        field_map={"prompt": "question", "completion": None},
        model="/models/tiny",
        max_length=512,
        all_tokens=True,
    )
    assert report.usable and report.records == 3
    seen = json.loads((tmp_path / "env.json").read_text(encoding="utf-8"))
    for key, value in OFFLINE_ENV.items():
        assert seen["env"][key] == value
    root = source_root()
    assert seen["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(root)
    assert seen["argv"] == [
        "check-data",
        "/data/train.jsonl",
        "--json",
        "--format",
        "alpaca",
        "--split",
        "train",
        "--field",
        "prompt=question",
        "--model",
        "/models/tiny",
        "--max-length",
        "512",
        "--all-tokens",
    ]


def test_require_usable_caps_the_list_and_counts_the_rest() -> None:
    problems = [DataProblem(line=n, message=f"bad record {n}") for n in range(1, 13)]
    problems.append(DataProblem(line=None, message="no assistant turn anywhere"))
    report = DataReport(
        path="d.json", usable=False, problems=problems, problem_count=40, location="record"
    )
    with pytest.raises(DatasetError) as info:
        require_usable(report)
    lines = str(info.value).splitlines()
    assert lines[0] == "d.json: the dataset is not usable:"
    assert lines[1] == "  d.json: record 1: bad record 1"
    assert len(lines) == 1 + 10 + 1
    assert lines[-1] == "  ... and 30 more problems"
    empty = DataReport(path="e.jsonl", usable=False)
    with pytest.raises(DatasetError, match=r"\(no details given\)"):
        require_usable(empty)


# ---------------------------------------------------------------------------------------------
# make-demo


def test_make_demo_returns_the_folder_holding_the_config(tmp_path: Path) -> None:
    python = fake_python(
        tmp_path,
        """
        assert command == 'make-demo' and args[1:] == ['--json']
        folder = args[0]
        open(os.path.join(folder, 'config.json'), 'w').write('{}')
        print(json.dumps({
            'folder': folder,
            'config': os.path.join(folder, 'config.json'),
            'model': os.path.join(folder, 'model'),
            'train_data': os.path.join(folder, 'train.jsonl'),
        }))
        """,
    )
    folder = tmp_path / "demo" / "nested"
    assert TrainerRuntime(python).make_demo(folder) == folder
    assert (folder / "config.json").is_file()


def test_make_demo_failure_carries_the_trainers_words(tmp_path: Path) -> None:
    python = fake_python(
        tmp_path,
        """
        print(args[0] + ': already holds a config.json; choose an empty folder', file=sys.stderr)
        sys.exit(2)
        """,
    )
    with pytest.raises(RuntimeNotReadyError) as info:
        TrainerRuntime(python).make_demo(tmp_path / "demo")
    message = str(info.value)
    assert "make-demo" in message and "exit code 2" in message
    assert "already holds a config.json; choose an empty folder" in message


# ---------------------------------------------------------------------------------------------
# A runtime that cannot answer


def test_a_python_that_does_not_exist(tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "python3")
    with pytest.raises(RuntimeNotReadyError) as info:
        TrainerRuntime(missing).check_data(str(DATASETS / "messages.jsonl"))
    message = str(info.value)
    assert message.startswith(f"cannot start the trainer runtime {missing}: ")
    assert "Settings" in message and "finetune-desk doctor" in message


def test_a_runtime_that_does_not_answer_in_time(tmp_path: Path) -> None:
    # The child sleeps far longer than the limit, so the outcome never depends on timing.
    python = fake_python(tmp_path, "time.sleep(120)")
    with pytest.raises(RuntimeNotReadyError) as info:
        TrainerRuntime(python).doctor(timeout_s=0.5)
    message = str(info.value)
    assert f"`{python} -m trainer doctor` did not finish within 0.5 s" in message
    assert "Settings" in message


def test_garbage_output_names_the_python_and_its_last_words(tmp_path: Path) -> None:
    python = fake_python(
        tmp_path,
        """
        print('Loading...')
        print('Traceback (most recent call last):', file=sys.stderr)
        print("ModuleNotFoundError: No module named 'pydantic'", file=sys.stderr)
        sys.exit(1)
        """,
    )
    with pytest.raises(RuntimeNotReadyError) as info:
        TrainerRuntime(python).check_data("/data/x.jsonl")
    message = str(info.value)
    assert f"`{python} -m trainer check-data` printed no JSON report (exit code 1)" in message
    assert "No module named 'pydantic'" in message
    assert "finetune-desk doctor" in message


def test_json_with_an_unexpected_exit_code_is_not_trusted(tmp_path: Path) -> None:
    python = fake_python(
        tmp_path,
        """
        print(json.dumps({'path': 'x', 'usable': True}))
        print('Segmentation fault', file=sys.stderr)
        sys.exit(139)
        """,
    )
    with pytest.raises(RuntimeNotReadyError, match=r"failed \(exit code 139\): Segmentation"):
        TrainerRuntime(python).check_data("x")


def test_a_json_array_is_not_a_report(tmp_path: Path) -> None:
    python = fake_python(tmp_path, "print('[1, 2]')")
    with pytest.raises(RuntimeNotReadyError, match="printed no JSON report"):
        TrainerRuntime(python).run_json("doctor", "--json", timeout_s=30)
