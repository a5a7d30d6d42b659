"""The account-wide monthly spend cap (issue 11): the app's ledger of pods, reconciled with
RunPod's pod billing where the key may read it; a launch that would pass the cap is refused
before any pod is created, with the figures; `finetune-desk spend` lists the month.

Against the loopback emulator (its clock stands at 2026-12-01 12:00 UTC); no pod runs here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from runpod_emulator import RunpodEmulator, serve_emulator

from desktop.cli import main
from desktop.core.errors import ConfigError, ProviderError, SpendCapError
from desktop.core.runtime import TrainerRuntime
from desktop.models import Job, RunpodOptions, Settings
from desktop.providers.base import ProviderContext
from desktop.providers.runpod.provider import RunpodProvider
from desktop.providers.runpod.spend import Ledger, parse_month
from trainer.config import load_config

KEY = "rp-SENTINEL-spend-key-0123456789"
RTX = "NVIDIA GeForce RTX 4090"


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunpodEmulator]:
    """The emulator, reached by the CLI through the environment; FTDESK_HOME under tmp_path."""
    served = RunpodEmulator(api_key=KEY)
    with serve_emulator(served):
        monkeypatch.setenv("FTDESK_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("FTDESK_RUNPOD_API_URL", served.url)
        monkeypatch.setenv("FTDESK_RUNPOD_API_KEY", KEY)
        yield served
    assert served.mismatches == []


def settle(emulator: RunpodEmulator, home: Path) -> Ledger:
    """December 2026 so far, on the emulator's clock: an app pod deleted after 10 h at
    $0.69/h ($6.90), one running for 2 h at $1.64/h ($3.28; its budget $5 lets $1.72 more go),
    and a pod made in RunPod's console, 4 h at $0.69/h ($2.76: in RunPod's billing only)."""
    ledger = Ledger(home)
    start = emulator.clock.now()
    done = emulator.add_pod("ftdesk-20261201-000000-done")
    ledger.created(
        pod_id=done.id, name=done.name, job_id="20261201-000000-done", gpu_id=RTX,
        cost_per_hour=Decimal("0.69"), budget_usd=Decimal(20), created_at=start,
    )  # fmt: skip
    console = emulator.add_pod("my-notebook")
    emulator.clock.advance(4 * 3600)
    emulator._terminate(console.id)  # deleted in RunPod's console after 4 h
    emulator.clock.advance(6 * 3600)
    emulator._terminate(done.id)
    ledger.deleted(done.id, emulator.clock.now())
    running = emulator.add_pod("ftdesk-20261201-100000-runs", gpu_id="NVIDIA A100 80GB PCIe")
    ledger.created(
        pod_id=running.id, name=running.name, job_id="20261201-100000-runs",
        gpu_id="NVIDIA A100 80GB PCIe", cost_per_hour=Decimal("1.64"), budget_usd=Decimal(5),
        created_at=emulator.clock.now(),
    )  # fmt: skip
    emulator.clock.advance(2 * 3600)
    return ledger


def provider_for(
    emulator: RunpodEmulator, home: Path, demo_dir: Path, **options: object
) -> tuple[RunpodProvider, Job]:
    """The provider with these RunPod options, and a job over the demo copy."""
    settings = Settings(
        runpod=RunpodOptions.model_validate({"gpu_ids": (RTX,), "api_url": emulator.url,
                                            **options})
    )  # fmt: skip
    provider = RunpodProvider(
        ProviderContext(settings, home, TrainerRuntime()), api_key=SecretStr(KEY), step_s=0.1
    )
    job = Job(
        id="20261201-140000-capd", name="capd", provider="runpod",
        config=load_config(demo_dir / "config.json"), job_dir=demo_dir,
    )  # fmt: skip
    return provider, job


def creates(emulator: RunpodEmulator) -> int:
    """How many pod creates the emulator received."""
    return sum(1 for r in emulator.requests if r.method == "POST" and r.path == "/v2/pods")


def test_a_launch_that_would_pass_the_cap_is_refused_with_the_figures_and_no_pod(
    emulator: RunpodEmulator, demo_dir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    settle(emulator, home)
    pods_before = {p.id for p in emulator.live_pods()}
    provider, job = provider_for(
        emulator, home, demo_dir, monthly_cap_usd=Decimal(20), budget_usd=Decimal(8)
    )
    with pytest.raises(SpendCapError) as refused:
        asyncio.run(provider.launch(job))
    message = str(refused.value)
    # $6.90 + $3.28 (ledger) + $2.76 (billed only) = $12.94; $1.72 more may go; +$8 > $20.
    assert "2026-12 spend so far $12.94" in message
    assert "plus $1.72 that running pods may still spend" in message
    assert "plus this job's budget $8.00, is $22.66, over the cap of $20.00" in message
    assert "reconciled with RunPod's pod billing" in message
    assert refused.value.exit_code == 2
    assert creates(emulator) == 0
    assert {p.id for p in emulator.live_pods()} == pods_before

    # A key that cannot read billing: the ledger alone ($10.18), and the message says so.
    emulator.billing_forbidden = True
    provider, job = provider_for(
        emulator, home, demo_dir, monthly_cap_usd=Decimal(20), budget_usd=Decimal(9)
    )
    with pytest.raises(SpendCapError, match=r"spend so far \$10\.18 .*cannot read billing"):
        asyncio.run(provider.launch(job))
    assert creates(emulator) == 0
    # Under the cap, the launch goes on to create (no capacity here: nothing is left behind).
    emulator.no_capacity(RTX)
    emulator.stale_catalog = True
    provider, job = provider_for(
        emulator, home, demo_dir, monthly_cap_usd=Decimal(20), budget_usd=Decimal(5)
    )
    with pytest.raises(ProviderError, match="no capacity"):
        asyncio.run(provider.launch(job))
    assert creates(emulator) == 1
    assert {p.id for p in emulator.live_pods()} == pods_before


def test_spend_lists_the_months_pods_and_total(
    emulator: RunpodEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settle(emulator, tmp_path / "home")
    assert main(["spend", "--month", "2026-12", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["month"] == "2026-12" and data["billing_read"] is True
    assert data["total_usd"] == "12.94" and data["committed_usd"] == "1.72"
    by_job = {p["job_id"] or p["name"]: p for p in data["pods"]}
    assert by_job["20261201-000000-done"]["counted_usd"] == "6.90"
    assert by_job["20261201-100000-runs"]["running"] is True
    assert Decimal(by_job["(not created by this app)"]["billed_usd"]) == Decimal("2.76")

    assert main(["spend"]) == 0  # this month, on RunPod's clock
    out = capsys.readouterr().out
    assert "20261201-000000-done" in out and "6.90" in out
    assert "2026-12: $12.94 spent on 3 pod(s); running pods may still spend $1.72" in out

    emulator.billing_forbidden = True
    assert main(["spend", "--month", "2026-12"]) == 0
    out = capsys.readouterr().out
    assert "2026-12: $10.18 spent on 2 pod(s)" in out
    assert "the API key cannot read billing (HTTP 401/403)" in out

    assert main(["spend", "--month", "2026-11"]) == 0
    assert "no RunPod pods in 2026-11" in capsys.readouterr().out


@pytest.mark.parametrize("month", ["2026-13", "12-2026", "2026-1", "last"])
def test_a_bad_month_is_refused_naming_it(
    month: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FTDESK_HOME", str(tmp_path / "home"))
    assert main(["spend", "--month", month]) == ConfigError.exit_code
    assert f"--month {month!r}: give a month as YYYY-MM, e.g. 2026-12" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        parse_month(month)


def test_the_cap_reaches_the_cli_as_exit_2(
    emulator: RunpodEmulator, demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    settle(emulator, home)
    home.mkdir(parents=True, exist_ok=True)
    (home / "settings.json").write_text(
        json.dumps({"runpod": {"monthly_cap_usd": "15"}}), encoding="utf-8"
    )
    code = main(
        ["run", str(demo_dir / "config.json"), "--provider", "runpod", "--gpu", RTX,
         "--budget", "3"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert "spend so far $12.94" in err and "budget $3.00" in err and "cap of $15.00" in err
    assert creates(emulator) == 0
