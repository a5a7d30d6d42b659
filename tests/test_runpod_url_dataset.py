"""Datasets on the web: a config's dataset URL, pinned by its sha256, is fetched by the pod.

Against the emulator (which serves the file on loopback): the pod fetches it and the job
completes; a wrong pin fails the job before training with the reason in the job's state, and
the pod is deleted. Then the rules on their own: the config's pin, the pod's URL rules, where
the HF token goes, a truncated download, and what a Hub dataset id does instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from runpod_emulator.runpod_jobs import (
    ACCOUNT_KEY,
    RTX,
    demo_job,
    provider_for,
    served_pods,
    watch,
)

from desktop.core.errors import ProviderError
from desktop.core.store import JobStore
from desktop.models import JobState
from desktop.providers.runpod.bootstrap import pod_env
from desktop.providers.runpod.pod_data import dataset_fetches
from desktop.providers.runpod.pod_files import load_record, pod_config
from trainer.agent import HIDDEN_FROM_TRAINER, Agent, AgentError
from trainer.agent_fetch import _Redirects, auth_headers, url_problem
from trainer.config import ConfigFileError, load_config, looks_like_local_path

WRONG = "0" * 64


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_the_pod_fetches_a_url_dataset_checks_it_and_the_job_completes(
    demo_dir: Path, tmp_path: Path
) -> None:
    data = (demo_dir / "train.jsonl").read_bytes()
    home = tmp_path / "home"
    store = JobStore(home / "ftdesk.sqlite3")
    with served_pods(tmp_path / "pods") as (emulator, runner):
        emulator.web_files["sets/train.jsonl"] = data
        url = f"{emulator.web_url('sets/train.jsonl')}#sha256={_sha(data)}"
        job = demo_job(demo_dir, "20261202-120000-urlo", max_steps=2, path=url)
        store.add_job(job, "created")
        uploads = pod_config(job)[1]  # the demo's local model folder travels as model/...
        assert not [n for n in uploads if not n.startswith("model/")], (
            "a URL dataset is never uploaded"
        )
        provider = provider_for(emulator, home)

        async def scenario() -> object:
            handle = await provider.launch(job)
            return await watch(
                provider, store, store.get_job(job.id).model_copy(update={"handle": handle})
            )

        done = asyncio.run(scenario())
        assert emulator.live_pods() == []
        assert emulator.web_gets == ["/web/sets/train.jsonl"], "the pod fetched it, once"
    assert getattr(done, "state", None) is JobState.COMPLETED, getattr(done, "state_reason", "")
    record = load_record(demo_dir)
    assert record is not None
    pod_job = runner.root / record.pod_id / "workspace" / job.id
    assert (pod_job / "data" / "train.jsonl").read_bytes() == data
    pod_cfg = json.loads((pod_job / "config.json").read_text(encoding="utf-8"))
    assert pod_cfg["dataset"]["path"] == "data/train.jsonl"
    provenance = json.loads((pod_job / "provenance.json").read_text(encoding="utf-8"))
    assert _sha(data) in json.dumps(provenance), "the trainer trained on the pinned bytes"


@pytest.mark.slow
def test_a_wrong_sha256_fails_the_job_before_training_and_the_pod_is_deleted(
    demo_dir: Path, tmp_path: Path
) -> None:
    """Through the real CLI (its own process, no test seam): the job's state says why."""
    home = tmp_path / "home"
    with served_pods(tmp_path / "pods") as (emulator, runner):
        emulator.web_files["train.jsonl"] = (demo_dir / "train.jsonl").read_bytes()
        url = f"{emulator.web_url('train.jsonl')}#sha256={WRONG}"
        config = json.loads((demo_dir / "config.json").read_text(encoding="utf-8"))
        config["dataset"]["path"] = url
        (demo_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FTDESK_")}
        env.update(
            FTDESK_HOME=str(home),
            FTDESK_RUNPOD_API_URL=emulator.url,
            FTDESK_RUNPOD_PROXY_URL=emulator.proxy_template,
            FTDESK_RUNPOD_API_KEY=ACCOUNT_KEY,
        )
        cli = [sys.executable, "-m", "desktop.cli"]
        run = subprocess.run(
            [*cli, "run", str(demo_dir / "config.json"), "--provider", "runpod", "--gpu", RTX,
             "--budget", "5"],
            env=env, capture_output=True, text=True, timeout=300, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert run.returncode != 0, run.stdout[-2000:]
        assert emulator.live_pods() == [] and len(runner.created) == 1
        pod_id = runner.created[0]
    (job_dir,) = (home / "jobs").iterdir()
    shown = subprocess.run(
        [*cli, "show", job_dir.name, "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    stored = json.loads(shown.stdout)
    assert stored["state"] == "failed", stored
    reason = stored["state_reason"]
    assert "training never started" in reason and f"config pins sha256 {WRONG}" in reason
    assert _sha((demo_dir / "train.jsonl").read_bytes()) in reason  # what came
    # Before training: the pod's job folder never saw a trainer, nor the bad file.
    pod_job = runner.root / pod_id / "workspace" / job_dir.name
    assert not (pod_job / ".training-started").exists()
    assert not (pod_job / "events.jsonl").exists()
    assert not (pod_job / "data" / "train.jsonl").exists()


def test_an_unusable_url_is_refused_before_any_pod_is_created(
    demo_dir: Path, tmp_path: Path
) -> None:
    with served_pods(tmp_path / "pods") as (emulator, runner):
        for url, said in (
            (f"https://h.example/#sha256={WRONG}", r"must end in a file name such as train\.jsonl"),
            (f"http://h.example/train.jsonl#sha256={WRONG}", "plain http only from this machine"),
        ):
            job = demo_job(demo_dir, "20261202-120000-urln", path=url)
            with pytest.raises(ProviderError, match=said):
                asyncio.run(provider_for(emulator, tmp_path / "home").launch(job))
        assert runner.created == [] and emulator.live_pods() == []


# -- the rules, on their own ------------------------------------------------------------------


def _config(tmp_path: Path, path: str) -> Path:
    file = tmp_path / "config.json"
    file.write_text(json.dumps({"model": {"name_or_path": "org/m"}, "dataset": {"path": path}}))
    return file


def test_the_config_pins_a_url_by_its_sha256(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as caught:
        load_config(_config(tmp_path, "https://data.example/train.jsonl"))
    said = str(caught.value)
    assert "dataset.path" in said and "#sha256=" in said and "data.example" in said
    pinned = f"https://data.example/train.jsonl#sha256={'a' * 64}"
    assert load_config(_config(tmp_path, pinned)).dataset.path == pinned  # not made a path
    assert not looks_like_local_path(pinned) and looks_like_local_path("data/train.jsonl")


def test_the_pod_fetches_https_and_plain_http_only_from_loopback() -> None:
    assert url_problem("https://data.example/train.jsonl") is None
    assert url_problem("http://127.0.0.1:8123/web/train.jsonl") is None
    assert url_problem("http://localhost/train.jsonl") is None
    said = url_problem("http://data.example/train.jsonl")
    assert said is not None and "plain http" in said and "give an https URL" in said
    assert "only https" in (url_problem("ftp://data.example/x.jsonl") or "")


def test_the_hf_token_goes_only_to_the_hub_over_https() -> None:
    env = {"HF_TOKEN": "hf_secret"}
    hub = "https://huggingface.co/datasets/org/set/resolve/main/train.jsonl"
    assert auth_headers(hub, env) == {"Authorization": "Bearer hf_secret"}
    assert auth_headers("https://data.example/train.jsonl", env) == {}
    assert auth_headers("http://huggingface.co/x.jsonl", env) == {}
    assert auth_headers(hub, {}) == {}

    handler = _Redirects()
    request = urllib.request.Request(hub)
    request.add_unredirected_header("Authorization", "Bearer hf_secret")
    same = handler.redirect_request(
        request, None, 302, "Found", Message(), "https://huggingface.co/other.jsonl"
    )  # type: ignore[arg-type]
    cdn = handler.redirect_request(
        request, None, 302, "Found", Message(), "https://cdn.example/signed.jsonl"
    )  # type: ignore[arg-type]
    assert same is not None and same.unredirected_hdrs.get("Authorization") == "Bearer hf_secret"
    assert cdn is not None and "Authorization" not in {**cdn.headers, **cdn.unredirected_hdrs}
    with pytest.raises(ValueError, match="plain http"):
        handler.redirect_request(
            request, None, 302, "Found", Message(), "http://cdn.example/x.jsonl"
        )  # type: ignore[arg-type]


def test_a_hub_dataset_is_left_to_the_trainer_with_the_pods_hf_token(demo_dir: Path) -> None:
    job = demo_job(demo_dir, "20261202-120000-hubd", path="org/dataset")
    cfg, uploads = pod_config(job)
    # Nothing of the dataset travels (the demo's local model folder does, as model/...).
    assert cfg.dataset.path == "org/dataset" and dataset_fetches(cfg) == []
    assert uploads and all(name.startswith("model/") for name in uploads)
    extra = {"HF_TOKEN": "hf_x"}
    env = pod_env(job.id, "tok", budget_usd=Decimal(1), max_runtime_s=60, extra=extra)
    assert env["HF_TOKEN"] == "hf_x" and "HF_TOKEN" not in HIDDEN_FROM_TRAINER


class _Served(BaseHTTPRequestHandler):
    """Serves `data`, announcing `announced` bytes (a dropped connection when more)."""

    data = b""
    announced = 0
    gets = 0

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        """The file, maybe cut short."""
        type(self).gets += 1
        self.send_response(200)
        self.send_header("Content-Length", str(self.announced))
        self.end_headers()
        self.wfile.write(self.data)
        self.close_connection = True


@pytest.fixture
def web() -> Iterator[tuple[str, type[_Served]]]:
    handler = type("Handler", (_Served,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/train.jsonl", handler
    finally:
        server.shutdown()
        server.server_close()


def _fetch(agent: Agent, name: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while (state := agent.upload_state(name))["fetch"]["state"] == "running":  # type: ignore[index]
        assert time.monotonic() < deadline, "the fetch never ended"
        time.sleep(0.05)
    return state


def test_the_agent_commits_a_good_fetch_and_refuses_a_truncated_one(
    tmp_path: Path, web: tuple[str, type[_Served]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.agent_fetch

    monkeypatch.setattr(trainer.agent_fetch, "ATTEMPTS", 2)
    monkeypatch.setattr(trainer.agent_fetch.time, "sleep", lambda s: None)
    url, served = web
    agent = Agent(tmp_path / "job", {})
    served.data, served.announced = b'{"text": "hello"}\n', 18
    agent.fetch("data/train.jsonl", {"url": url, "sha256": _sha(served.data)})
    assert _fetch(agent, "data/train.jsonl")["committed"] is True
    assert (tmp_path / "job" / "data" / "train.jsonl").read_bytes() == served.data

    served.gets, served.announced = 0, 1000  # the connection always ends early
    agent.fetch("data/eval.jsonl", {"url": url, "sha256": _sha(served.data)})
    state = _fetch(agent, "data/eval.jsonl")
    error = str(state["fetch"]["error"])  # type: ignore[index]
    assert state["committed"] is False and served.gets == 2
    assert "after 2 attempts" in error and "got 18 of the 1000 bytes announced" in error
    assert not (tmp_path / "job" / "data" / "eval.jsonl").exists()
    for body, said in (
        ({"url": "http://data.example/x.jsonl", "sha256": "a" * 64}, "plain http"),
        ({"url": url, "sha256": "abc"}, "not 64 hex digits"),
    ):
        with pytest.raises(AgentError, match=said):
            agent.fetch("data/x.jsonl", body)
    with pytest.raises(AgentError, match="only data/<name> can be fetched"):
        agent.fetch("config.json", {"url": url, "sha256": "a" * 64})
