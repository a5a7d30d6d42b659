"""The model server (`python -m trainer serve`) and its client, on the demo trained in the test.

The adapter really is attached (its log-probability of the training answers beats the base's),
tokens stream (the first arrives while the answer is still being generated: a stop sent on it
ends the answer early), a stop is followed by at most one token, and a killed or broken server
is one sentence, never a hang.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from desktop.core.model_server import ModelServer, ModelServerError
from desktop.core.runtime import TrainerRuntime
from trainer.serve_protocol import (
    ChatMessage,
    DoneEvent,
    GenerationSettings,
    StopAckEvent,
    TokenEvent,
    parse_request,
)

GREEDY_LONG = GenerationSettings(temperature=0, max_new_tokens=400)


@pytest.fixture(scope="module")
def server(trained_chat_job: Path) -> Iterator[ModelServer]:
    """One warm server on the trained demo job, shared by the tests that only ask it things."""
    with ModelServer(TrainerRuntime(), job_dir=trained_chat_job) as running:
        running.start(timeout_s=300)
        yield running


def _training_records(job: Path, server: ModelServer, count: int) -> list[dict[str, object]]:
    held_out = {json.dumps(r.model_dump(mode="json")) for r in server.eval_records(1000).records}
    records = []
    for line in (job / "train.jsonl").read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        key = {"messages": messages[:-1], "answer": messages[-1]["content"]}
        if json.dumps(key) not in held_out:
            records.append(key)
    return records[:count]


def test_the_adapter_beats_the_base_on_training_answers(
    server: ModelServer, trained_chat_job: Path
) -> None:
    records = _training_records(trained_chat_job, server, 16)
    assert len(records) == 16
    gains = []
    for record in records:
        turns = [ChatMessage.model_validate(m) for m in record["messages"]]  # type: ignore[attr-defined]
        answer = str(record["answer"])
        tuned = server.logprob(answer, turns, adapter=True)
        base = server.logprob(answer, turns, adapter=False)
        assert tuned.tokens == base.tokens > 0
        gains.append(tuned.logprob - base.logprob)
    assert sum(gains) / len(gains) >= 1.0, gains


def test_eval_records_are_the_held_out_split(server: ModelServer) -> None:
    reply = server.eval_records(5)
    assert reply.total == 32  # 10 % of the demo's 320 records
    assert len(reply.records) == 5
    assert all(r.messages[-1].role == "user" and r.answer for r in reply.records)


def test_tokens_stream_and_a_stop_ends_the_answer_within_one_token(server: ModelServer) -> None:
    # The base model (random weights) never says its end token in 400 greedy tokens: the
    # answer can only end early because of the stop sent on its first token.
    reply = server.generate(prompt="count on from 17", adapter=False, settings=GREEDY_LONG)
    events = iter(reply)
    first = next(events)
    assert isinstance(first, TokenEvent)
    reply.stop()
    after_ack = None
    done = None
    for event in events:
        if isinstance(event, StopAckEvent):
            after_ack = 0
        elif isinstance(event, TokenEvent) and after_ack is not None:
            after_ack += 1
        elif isinstance(event, DoneEvent):
            done = event
    assert after_ack is not None and after_ack <= 1
    assert done is not None and done.reason == "stopped"
    assert done.tokens < GREEDY_LONG.max_new_tokens


def test_the_server_stays_warm_and_a_seed_repeats_an_answer(server: ModelServer) -> None:
    sampled = GenerationSettings(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=7)
    answers = []
    for _ in range(2):
        *tokens, done = list(server.generate(prompt="reverse: red cat", settings=sampled))
        assert isinstance(done, DoneEvent)
        assert "".join(t.text for t in tokens if isinstance(t, TokenEvent)) == done.text
        answers.append(done.text)
    assert answers[0] == answers[1]
    assert server.alive and server.ready is not None and server.ready.pid == server.pid


def test_a_killed_server_is_one_sentence_never_a_hang(
    trained_chat_job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # Started in offline mode: it gets the offline variables like every trainer child.
    with ModelServer(TrainerRuntime(offline=True), job_dir=trained_chat_job) as doomed:
        doomed.start(timeout_s=300)
        assert doomed.pid is not None
        environ = psutil.Process(doomed.pid).environ()
        assert environ.get("HF_HUB_OFFLINE") == "1" and environ.get("TRANSFORMERS_OFFLINE") == "1"
        reply = doomed.generate(prompt="count on from 3", adapter=False, settings=GREEDY_LONG)
        assert isinstance(reply.next_event(), TokenEvent)
        os.kill(doomed.pid, signal.SIGKILL)
        with pytest.raises(ModelServerError) as caught:
            list(reply)
        message = str(caught.value)
        assert "model server was killed (SIGKILL)" in message and "\n" not in message
        with pytest.raises(ModelServerError, match="killed"):
            doomed.generate(prompt="again")


def test_closing_stdin_ends_the_server_mid_answer(trained_chat_job: Path) -> None:
    leaving = ModelServer(TrainerRuntime(), job_dir=trained_chat_job)
    leaving.start(timeout_s=300)
    reply = leaving.generate(prompt="count on from 3", adapter=False, settings=GREEDY_LONG)
    assert isinstance(reply.next_event(), TokenEvent)
    assert leaving.proc is not None and leaving.proc.stdin is not None
    leaving.proc.stdin.close()  # what the app's death looks like from the server
    assert leaving.proc.wait(timeout=60) == 0
    leaving.close()


def test_a_broken_adapter_is_one_sentence(tmp_path: Path, trained_chat_job: Path) -> None:
    import shutil

    job = tmp_path / "job"
    shutil.copytree(trained_chat_job, job, ignore=shutil.ignore_patterns("checkpoints"))
    (job / "output" / "adapter_model.safetensors").write_bytes(b"not weights")
    broken = ModelServer(TrainerRuntime(), job_dir=job)
    with pytest.raises(ModelServerError) as caught:
        broken.start(timeout_s=300)
    message = str(caught.value)
    assert message.startswith("the model server could not start: ") and "\n" not in message
    assert broken.proc is not None and broken.proc.poll() is not None


def test_a_missing_checkpoint_is_named(trained_chat_job: Path) -> None:
    missing = ModelServer(TrainerRuntime(), job_dir=trained_chat_job, checkpoint=7)
    with pytest.raises(ModelServerError, match=r"--checkpoint 7: .*checkpoint-7 does not exist"):
        missing.start(timeout_s=300)


def test_a_bad_request_names_the_field() -> None:
    bad = {"op": "generate", "id": "x", "prompt": "hi", "settings": {"temperature": -1}}
    with pytest.raises(ValueError, match="temperature"):
        parse_request(json.dumps(bad))
    with pytest.raises(ValueError, match="either 'messages' or 'prompt'"):
        parse_request(json.dumps({"op": "generate", "id": "x"}))


def test_a_tokenizer_without_a_template_gets_the_plain_prompt(
    tmp_path: Path, demo_template: Path
) -> None:
    import shutil

    from trainer.serve import ModelHost, fallback_prompt

    model = tmp_path / "model"
    shutil.copytree(demo_template / "model", model)
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    host = ModelHost(model=str(model), device="cpu")
    assert not host.chat_template
    turns = [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi")]
    text = host.tokenizer.decode(host.prompt_ids(turns), skip_special_tokens=True)
    assert text == fallback_prompt(turns) == "System: be brief\nUser: hi\nAssistant:"


def test_a_server_that_crashes_at_start_is_one_sentence(tmp_path: Path) -> None:
    # A runtime whose "python" dies at once with a traceback's last line, as a broken
    # install would: the client reads the exit code and that line, and does not wait.
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\necho 'Traceback (most recent call last):' >&2\n"
        "echo '  File \"x.py\", line 1' >&2\necho 'ImportError: no torch here' >&2\nexit 3\n",
        encoding="utf-8",
    )
    fake.chmod(0o755)
    crashing = ModelServer(TrainerRuntime(str(fake)), model="anything")
    with pytest.raises(ModelServerError) as caught:
        crashing.start(timeout_s=300)
    assert str(caught.value) == (
        "the model server stopped unexpectedly with exit code 3 (ImportError: no torch here); "
        "start the chat again to restart it"
    )


def test_a_server_closed_before_it_starts_starts_no_process(tmp_path: Path) -> None:
    # A cancel can close a server another thread is about to start: nothing may run then.
    marker = tmp_path / "started"
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nsleep 600\n", encoding="utf-8")
    fake.chmod(0o755)
    server = ModelServer(TrainerRuntime(str(fake)), model="anything")
    server.close()
    with pytest.raises(ModelServerError, match="closed before it started"):
        server.start(timeout_s=300)
    assert server.proc is None and not marker.exists()
