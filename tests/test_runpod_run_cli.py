"""`finetune-desk run CONFIG --provider runpod`, in process against the loopback emulator: what
it says before it creates anything (the launch plan, the orphans), and the spend cap's refusal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from runpod_emulator import RunpodEmulator, serve_emulator

from desktop.cli import build_parser, main
from desktop.cli.runpod_run import runpod_preflight
from desktop.models import Settings

SENTINEL = "rp-SENTINEL-run-cli-key-0123456789"
A100 = "NVIDIA A100 80GB PCIe"
H100 = "NVIDIA H100 80GB HBM3"  # the emulator's catalog shows none available


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunpodEmulator]:
    """An emulator (no container runner: no pod may start here) the CLI reaches through the
    environment, with FTDESK_HOME under tmp_path; no OpenAPI mismatch may be left."""
    served = RunpodEmulator(api_key=SENTINEL)
    with serve_emulator(served):
        monkeypatch.setenv("FTDESK_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("FTDESK_RUNPOD_API_URL", served.url)
        monkeypatch.setenv("FTDESK_RUNPOD_PROXY_URL", served.proxy_template)
        monkeypatch.setenv("FTDESK_RUNPOD_API_KEY", SENTINEL)
        yield served
    assert served.mismatches == []


def creates(emulator: RunpodEmulator) -> int:
    """How many pod creates the emulator received."""
    return sum(1 for r in emulator.requests if r.method == "POST" and r.path == "/v2/pods")


@pytest.mark.slow  # the launch's dataset checks run the trainer (~15-30 s)
def test_run_prints_the_plan_and_the_orphans_before_creating_anything(
    emulator: RunpodEmulator, demo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator.no_capacity(A100)  # the catalog shows none of either: nothing is created
    # Two pods of ours that no job owns (an app killed before it deleted them), and one not ours.
    emulator.add_pod("ftdesk-20261130-090000-lost")
    emulator.add_pod("ftdesk-20261130-100000-gone", gpu_id=A100)
    emulator.add_pod("my-notebook")
    emulator.clock.advance(60)  # running: billed at $0.69/h and $1.64/h
    code = main(
        ["run", str(demo_dir / "config.json"), "--provider", "runpod", "--gpu",
         f"{A100},{H100}", "--max-runtime", "90m"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == (
        f"RunPod: GPU candidates, tried in this order: {A100}, {H100} (secure cloud (default))"
    )
    assert lines[1] == (
        "RunPod: budget $10.00 (default); maximum runtime 1h30m; the pod is deleted at "
        "whichever comes first"
    )
    assert lines[2] == (
        "RunPod: 2 pod(s) named ftdesk- that no job owns cost $2.33/h in all; see them with: "
        "finetune-desk pods"
    )
    assert len(lines) == 3
    assert "no pod could be created, no money was spent" in err
    assert creates(emulator) == 0 and len(emulator.live_pods()) == 3


def test_the_plan_names_what_the_flags_gave_and_goes_to_stderr_under_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = build_parser().parse_args(
        ["run", "c.json", "--provider", "runpod", "--gpu", H100, "--budget", "2.5",
         "--cloud", "community", "--max-runtime", "2h", "--json", "--offline"]  # no sweep
    )  # fmt: skip
    runpod_preflight(ns, Settings())
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"RunPod: GPU candidates, tried in this order: {H100} (community cloud)",
        "RunPod: budget $2.50; maximum runtime 2h; the pod is deleted at whichever comes first",
    ]
    local = build_parser().parse_args(["run", "c.json"])
    runpod_preflight(local, Settings())
    assert capsys.readouterr() == ("", "")  # a local run says nothing of RunPod
