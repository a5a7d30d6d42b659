"""Dataset reading, format detection, validation and `check-data` (trainer/data/)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trainer.config import DatasetConfig, FieldMap
from trainer.data import (
    MAX_LISTED_PROBLEMS,
    DataError,
    check_dataset,
    load_training_data,
    main,
)
from trainer.reports import RenderedSegment

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"
ROOT = Path(__file__).parent.parent


def _problems(report: Any) -> list[str]:
    return [p.render(report.location) for p in report.problems]


def _chat(user: str, answer: str, system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


# ------------------------------------------------------------------ one fixture per defect


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "bad_json.jsonl",
            [
                "line 3: invalid JSON: Expecting ',' delimiter (column 31)",
                "line 5: invalid JSON: Unterminated string starting at (column 43)",
            ],
        ),
        (
            "unknown_role.jsonl",
            [
                "line 2: message 2 has role 'bot'; expected system, user or assistant",
                "line 4: message 1 has role 'Human'; expected system, user or assistant",
            ],
        ),
        (
            "missing_field.jsonl",
            [
                "line 3: missing field 'completion' (this record has: 'prompt')",
                "line 5: missing field 'prompt' (this record has: 'completion', 'id')",
            ],
        ),
        (
            "empty_content.jsonl",
            [
                "line 2: message 2 (assistant) has empty content",
                "line 4: message 1 (user) has empty content",
            ],
        ),
        # BOM before line 1: line 1 parses; numbering is unchanged.
        ("bom.jsonl", ["line 3: message 2 has role 'robot'; expected system, user or assistant"]),
        # CRLF endings and a blank line 2: the defect is still reported on file line 4.
        ("crlf.jsonl", ["line 4: message 2 (assistant) has empty content"]),
        ("gzip.jsonl.gz", ["line 3: invalid JSON: Expecting value (column 15)"]),
        (
            "mixed_formats.jsonl",
            [
                "line 4: this record has Alpaca format (instruction, output) but the file is in "
                "messages format (messages): mixed formats in one file",
                "line 6: this record has prompt/completion format (prompt, completion) but the "
                "file is in messages format (messages): mixed formats in one file",
            ],
        ),
        ("empty.jsonl", ["the dataset is empty: no records found"]),
        ("no_assistant.jsonl", ["line 2: no assistant message: nothing to train on"]),
        (
            "alpaca_bad.csv",
            [
                "line 5: 'output' is empty",
                "line 6: expected 3 columns as in the header, found 4",
            ],
        ),
        (
            "array_bad.json",
            [
                "record 2: missing field 'completion' (this record has: 'prompt')",
                "record 3: 'completion' is empty",
            ],
        ),
    ],
)
def test_each_defect_is_reported_with_its_line(fixture: str, expected: list[str]) -> None:
    report = check_dataset(FIXTURES / fixture)
    assert _problems(report) == expected
    assert report.problem_count == len(expected)
    assert report.usable is False


def test_defect_files_still_count_and_keep_the_good_records() -> None:
    bom = check_dataset(FIXTURES / "bom.jsonl")
    assert (bom.records, bom.valid_records, bom.format) == (4, 3, "messages")
    assert bom.examples[0] == _chat("hi", "hello")
    crlf = check_dataset(FIXTURES / "crlf.jsonl")
    assert (crlf.records, crlf.valid_records) == (4, 3)
    assert crlf.examples[1] == _chat("a", "b")  # no stray "\r" in the content
    gz = check_dataset(FIXTURES / "gzip.jsonl.gz")
    assert (gz.records, gz.valid_records) == (4, 3)


def test_data_error_lists_every_problem_with_line_numbers() -> None:
    ds = DatasetConfig(path=str(FIXTURES / "unknown_role.jsonl"))
    with pytest.raises(DataError) as caught:
        load_training_data(ds)
    err = caught.value
    assert isinstance(err, ValueError)
    text = str(err)
    assert "2 problems" in text
    assert "line 2: message 2 has role 'bot'; expected system, user or assistant" in text
    assert "line 4: message 1 has role 'Human'" in text
    assert err.report.problem_count == 2


def test_every_problem_is_counted_but_the_listing_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    bad = json.dumps({"messages": [{"role": "bot", "content": "x"}]})
    path.write_text("\n".join([bad] * (MAX_LISTED_PROBLEMS + 50)) + "\n", encoding="utf-8")
    report = check_dataset(path, fmt="messages")
    assert report.problem_count == MAX_LISTED_PROBLEMS + 50
    assert len(report.problems) == MAX_LISTED_PROBLEMS
    assert report.problems[-1].line == MAX_LISTED_PROBLEMS
    assert report.problem_lines()[-1] == (
        f"... and 50 more problems (first {MAX_LISTED_PROBLEMS} listed)"
    )


def test_invalid_utf8_and_non_object_lines(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    good = json.dumps(_chat("a", "b")).encode()
    path.write_bytes(good + b"\n" + b'{"text": "caf\xe9"}\n' + b"[1, 2]\n" + good + b"\n")
    report = check_dataset(path)
    assert _problems(report) == [
        "line 2: not UTF-8 text (byte 0xe9 at column 14); save the file as UTF-8",
        "line 3: expected a JSON object, got a array",
    ]


def test_unknown_columns_say_what_was_found(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n", encoding="utf-8")
    report = check_dataset(path)
    assert report.usable is False
    assert report.format is None
    assert "the records have the fields 'question', 'answer'" in _problems(report)[0]
    mapped = check_dataset(path, field_map=FieldMap(prompt="question", completion="answer"))
    assert mapped.usable and mapped.format == "prompt_completion"
    assert mapped.examples == [{"prompt": "q", "completion": "a"}]


def test_missing_files_and_offline_hub_ids_fail_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = check_dataset(tmp_path / "nope.jsonl")
    assert _problems(missing) == ["file not found; check the path"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = check_dataset("some-org/some-dataset")
    assert hub.usable is False
    assert _problems(hub) == [
        "dataset 'some-org/some-dataset' is not on disk, and the Hugging Face Hub is offline "
        "(HF_HUB_OFFLINE=1): give a local file, or go online to use a Hub dataset"
    ]


# ------------------------------------------------------------------ good files, every format

CHAT_2 = [_chat("What is 2+2?", "4", system="You are terse."), _chat("Capital of France?", "Paris")]
SHAREGPT_2 = [
    _chat("hi", "hello", system="Be kind."),
    {
        "messages": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "and 3+3?"},
            {"role": "assistant", "content": "6"},
        ]
    },
]
ALPACA_2 = [_chat("Translate to French.\n\ncat", "chat"), _chat("Name a colour.", "blue")]
PC_2 = [
    {"prompt": "The sky is", "completion": " blue."},
    {"prompt": "Grass is", "completion": " green."},
]


@pytest.mark.parametrize(
    ("fixture", "fmt", "records"),
    [
        ("messages.jsonl", "messages", CHAT_2),
        ("sharegpt.jsonl", "sharegpt", SHAREGPT_2),
        ("alpaca.jsonl", "alpaca", ALPACA_2),
        ("prompt_completion.jsonl", "prompt_completion", PC_2),
        ("text.jsonl", "text", [{"text": "Once upon a time."}, {"text": "The end."}]),
        ("array.json", "prompt_completion", PC_2),
        (
            "alpaca.csv",
            "alpaca",
            [
                _chat("Translate to French.\n\ncat", "chat"),
                _chat("Write two lines.", "line one\r\nline two"),
                _chat("Count to three.", "1 2 3"),
            ],
        ),
    ],
)
def test_good_files_parse_to_normalised_records(
    fixture: str, fmt: str, records: list[dict[str, Any]]
) -> None:
    report = check_dataset(FIXTURES / fixture)
    assert report.problems == []
    assert report.usable is True
    assert report.format == fmt
    assert report.examples == records
    # An explicit format gives the same result, and the loader returns the same records.
    assert check_dataset(FIXTURES / fixture, fmt=fmt).examples == records
    data = load_training_data(DatasetConfig(path=str(FIXTURES / fixture)))
    assert data.train == records
    assert data.source_format == fmt
    assert data.format == {"sharegpt": "messages", "alpaca": "messages"}.get(fmt, fmt)


def test_parquet_file(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [*CHAT_2, {"messages": [{"role": "user", "content": "x"}]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "chat.parquet")
    report = check_dataset(tmp_path / "chat.parquet")
    assert report.format == "messages"
    assert report.location == "row"
    assert report.examples == CHAT_2
    assert _problems(report) == ["row 3: no assistant message: nothing to train on"]


def test_saved_dataset_folder(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    Dataset.from_list(PC_2).save_to_disk(str(tmp_path / "single"))
    DatasetDict(
        {"train": Dataset.from_list(PC_2), "test": Dataset.from_list(PC_2[:1])}
    ).save_to_disk(str(tmp_path / "dict"))
    assert check_dataset(tmp_path / "single").examples == PC_2
    data = load_training_data(DatasetConfig(path=str(tmp_path / "dict"), split="test"))
    assert data.train == PC_2[:1]
    wrong = check_dataset(tmp_path / "dict", split="validation")
    assert _problems(wrong) == [
        "the saved dataset has no split 'validation'; it has test, train: set dataset.split"
    ]
    (tmp_path / "plain").mkdir()
    assert "not a dataset saved by datasets" in _problems(check_dataset(tmp_path / "plain"))[0]


def test_json_lines_under_a_json_name_and_gzip_by_content(tmp_path: Path) -> None:
    lines = "\n".join(json.dumps(r) for r in PC_2) + "\n"
    (tmp_path / "lines.json").write_text(lines, encoding="utf-8")
    assert check_dataset(tmp_path / "lines.json").examples == PC_2
    (tmp_path / "data.jsonl").write_bytes(gzip.compress(lines.encode()))
    assert check_dataset(tmp_path / "data.jsonl").examples == PC_2


def test_eval_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    records = [{"text": f"record {i}"} for i in range(100)]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    ds = DatasetConfig(path=str(path), eval_split=0.1)
    first = load_training_data(ds, seed=1)
    again = load_training_data(ds, seed=1)
    other = load_training_data(ds, seed=2)
    assert first.eval is not None and len(first.eval) == 10 and len(first.train) == 90
    assert first.eval == again.eval and first.train == again.train
    assert first.eval != other.eval
    assert sorted(r["text"] for r in first.train + first.eval) == sorted(r["text"] for r in records)


def test_eval_file(tmp_path: Path) -> None:
    ds = DatasetConfig(
        path=str(FIXTURES / "alpaca.jsonl"), eval_path=str(FIXTURES / "sharegpt.jsonl")
    )
    data = load_training_data(ds)
    assert data.train == ALPACA_2 and data.eval == SHAREGPT_2 and data.format == "messages"
    mismatch = DatasetConfig(
        path=str(FIXTURES / "alpaca.jsonl"), eval_path=str(FIXTURES / "text.jsonl")
    )
    with pytest.raises(DataError, match="the eval file holds text records but the training"):
        load_training_data(mismatch)
    broken = DatasetConfig(
        path=str(FIXTURES / "messages.jsonl"), eval_path=str(FIXTURES / "bad_json.jsonl")
    )
    with pytest.raises(DataError, match="line 3: invalid JSON"):
        load_training_data(broken)


# ------------------------------------------------------------------ CLI and token statistics

GEN_TEMPLATE = (
    "{%- for m in messages -%}{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{%- if m['role'] == 'assistant' -%}"
    "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{%- else -%}{{ m['content'] + '<|im_end|>\n' }}{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)
PLAIN_TEMPLATE = (
    "{%- for m in messages -%}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
    "'<|im_end|>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


def _make_tokenizer(folder: Path, template: str) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["user assistant system the sky is blue"] * 10, trainer=trainer)
    PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>", chat_template=template
    ).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_tokenizer(tmp_path_factory.mktemp("tok") / "model", GEN_TEMPLATE)


def _run_cli(*args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", "check-data", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout


def test_check_data_json_exit_codes() -> None:
    code, out = _run_cli(str(FIXTURES / "messages.jsonl"), "--json")
    assert code == 0
    good = json.loads(out)
    assert good["usable"] is True and good["format"] == "messages" and good["records"] == 2
    assert good["problems"] == [] and good["token_stats"] is None
    code, out = _run_cli(str(FIXTURES / "bad_json.jsonl"), "--json")
    assert code == 2
    bad = json.loads(out)
    assert bad["usable"] is False and bad["problem_count"] == 2
    assert bad["problems"][0] == {
        "line": 3,
        "message": "invalid JSON: Expecting ',' delimiter (column 31)",
    }


def test_check_data_text_report_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(FIXTURES / "empty_content.jsonl")]) == 2
    out = capsys.readouterr().out
    assert "NOT usable" in out
    assert "  line 2: message 2 (assistant) has empty content" in out
    assert main([str(FIXTURES / "sharegpt.jsonl"), "--format", "sharegpt"]) == 0


def _text_of(segments: list[RenderedSegment], trained: bool) -> str:
    return "".join(s.text for s in segments if s.trained is trained)


def test_token_stats_and_rendered_example_with_a_model(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "chat.jsonl"
    records = [_chat("the sky is", "blue " * (i % 10 + 1)) for i in range(50)]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    expected = sorted(
        len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False))
        for r in records
    )
    report = check_dataset(path, model_path=model_dir, max_length=20)
    ts = report.token_stats
    assert ts is not None and ts.counted == 50 and ts.sampled is False
    assert (ts.min, ts.p50, ts.p90, ts.max) == (
        expected[0],
        expected[24],
        expected[44],
        expected[-1],
    )
    assert ts.max > ts.min  # answers of 1 to 10 words differ in length
    assert ts.cut_count == sum(1 for n in expected if n > 20)
    assert ts.share_cut == pytest.approx(ts.cut_count / 50)
    assert sum(b.count for b in ts.histogram) == 50
    # Longer max length: nothing is cut.
    roomy = check_dataset(path, model_path=model_dir, max_length=ts.max)
    assert roomy.token_stats is not None and roomy.token_stats.cut_count == 0
    tight = check_dataset(path, model_path=model_dir, max_length=ts.min)
    assert tight.token_stats is not None and (tight.token_stats.cut_count or 0) > 0
    assert any("longer than max length" in w for w in tight.warnings)

    ex = report.rendered_example
    assert ex is not None
    # Only the assistant answer and its end-of-turn token are trained.
    assert _text_of(ex.segments, True) == "blue <|im_end|>"
    prompt = "<|im_start|>user\nthe sky is<|im_end|>\n<|im_start|>assistant\n"
    assert _text_of(ex.segments, False) == prompt + "\n"  # the newline after the turn
    assert "[[blue <|im_end|>]]" in ex.text
    assert 0 < ex.trained_tokens < ex.total_tokens

    assert main([str(path), "--model", str(model_dir), "--max-length", "20"]) == 0
    out = capsys.readouterr().out
    assert f"p50 {ts.p50}  p90 {ts.p90}" in out
    assert "[[blue <|im_end|>]]" in out


def test_token_sample_is_bounded(model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    path.write_text(
        "\n".join(json.dumps({"text": "the sky is blue " * (i % 7 + 1)}) for i in range(300)),
        encoding="utf-8",
    )
    report = check_dataset(path, model_path=model_dir, token_sample=40)
    assert report.token_stats is not None
    assert report.token_stats.counted == 40 and report.token_stats.sampled is True
    full = check_dataset(path, model_path=model_dir, token_sample=None)
    assert full.token_stats is not None and full.token_stats.counted == 300
    ex = full.rendered_example
    assert ex is not None and ex.trained_tokens == ex.total_tokens  # text: every token


def test_prompt_completion_marks_only_the_completion(model_dir: Path) -> None:
    report = check_dataset(FIXTURES / "prompt_completion.jsonl", model_path=model_dir)
    ex = report.rendered_example
    assert ex is not None
    assert _text_of(ex.segments, False) == "The sky is"
    assert _text_of(ex.segments, True) == " blue.<|im_end|>"


def test_template_without_generation_blocks_falls_back_to_turns(tmp_path: Path) -> None:
    plain = _make_tokenizer(tmp_path / "plain", PLAIN_TEMPLATE)
    report = check_dataset(FIXTURES / "sharegpt.jsonl", model_path=plain)
    ex = report.rendered_example
    assert ex is not None
    assert _text_of(ex.segments, True) == "hello<|im_end|>\n"
    assert any("{% generation %}" in w for w in report.warnings)


def test_missing_model_is_a_problem(tmp_path: Path) -> None:
    report = check_dataset(FIXTURES / "messages.jsonl", model_path=tmp_path / "no-model")
    assert report.usable is False
    assert _problems(report)[0].startswith("--model ")
    assert "not on disk" in _problems(report)[0]


def test_import_is_light() -> None:
    code = (
        "import sys, trainer.data; "
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'pyarrow') "
        "if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_check_data_on_the_demo_with_its_model(
    demo_template: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, model = demo_template / "train.jsonl", demo_template / "model"
    demo_max_length = json.loads((demo_template / "config.json").read_text())["dataset"][
        "max_length"
    ]
    code = main([str(data), "--model", str(model), "--max-length", str(demo_max_length), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["usable"] is True and report["format"] == "messages"
    stats = report["token_stats"]
    assert stats["counted"] == report["valid_records"] == report["records"]
    assert stats["share_cut"] == 0.0  # the demo's records fit its max length
    first = json.loads(data.read_text().splitlines()[0])
    answer = first["messages"][-1]["content"]
    trained = "".join(s["text"] for s in report["rendered_example"]["segments"] if s["trained"])
    assert trained == answer + "<|im_end|>"


def test_csv_cells_holding_json_messages(tmp_path: Path) -> None:
    import csv

    path = tmp_path / "chat.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "messages"])
        writer.writerow([1, json.dumps(CHAT_2[0]["messages"])])
        writer.writerow([2, json.dumps([{"from": "human", "value": "hi"}])])
        writer.writerow([3, "not json"])
    report = check_dataset(path)
    assert report.format == "messages"
    assert report.examples == [CHAT_2[0]]
    assert _problems(report) == [
        "line 3: message 1 has no 'role' (it has ShareGPT 'from'/'value': set the format to "
        "sharegpt)",
        "line 4: 'messages' must be a list of messages, got a string",
    ]
