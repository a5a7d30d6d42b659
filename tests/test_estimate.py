"""The estimate before a cloud launch: its figures, and `run --dry-run`, which creates nothing."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from desktop.cli import main
from desktop.core.errors import ConfigError
from desktop.core.estimate import (
    POD_START_S,
    GpuOffer,
    TokenCount,
    dataset_tokens,
    estimate_run,
    gpu_spec,
    offers_for,
    throughput_table,
    tokens_per_second,
    training_tokens,
)
from desktop.core.memory_fit import read_model_config
from desktop.providers.runpod.models import GpuType
from trainer.config import TrainingConfig
from trainer.reports import DataReport

LLAMA_8B = "meta-llama/Llama-3.1-8B"


def config(method: str = "lora", **sections: dict[str, object]) -> TrainingConfig:
    data: dict[str, object] = {
        "method": method,
        "model": {"name_or_path": LLAMA_8B},
        "dataset": {"path": "/data/train.jsonl"},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}  # type: ignore[dict-item]
    return TrainingConfig.model_validate(data)


def report(records: int, mean: float | None) -> DataReport:
    stats = None
    if mean is not None:
        stats = {
            "model": "m", "counted": records, "sampled": False, "mean": mean, "min": 1,
            "p50": 1, "p90": 1, "p95": 1, "p99": 1, "max": 4096,
        }  # fmt: skip
    return DataReport.parse(
        {"path": "/data/train.jsonl", "records": records, "valid_records": records,
         "usable": True, "token_stats": stats}
    )  # fmt: skip


A100 = GpuOffer("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, Decimal("1.64"), "LOW")


@pytest.mark.parametrize(
    ("gpu_id", "name"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA A100 80GB PCIe", "A100 80 GB"),
        ("NVIDIA A100-SXM4-80GB", "A100 80 GB"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 3090", "RTX 3090"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L40", "L40"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A40", "A40"),
        ("NVIDIA RTX A6000", "RTX A6000"),
        ("NVIDIA H200", "H200"),
    ],
)
def test_runpod_gpu_ids_find_their_class(gpu_id: str, name: str) -> None:
    spec = gpu_spec(gpu_id)
    assert spec is not None and spec.name == name


def test_an_unknown_gpu_has_no_throughput_and_says_so() -> None:
    assert gpu_spec("AMD Instinct MI300X OAM") is None
    est = estimate_run(
        config(), TokenCount(1000, 10, 100, True), GpuOffer("AMD Instinct MI300X OAM", "MI300X"),
        model_config=read_model_config(LLAMA_8B),
    )  # fmt: skip
    assert est.hours is None and est.cost_usd is None
    assert "not in the throughput table" in " ".join(est.warnings)
    assert "time and cost unknown" in est.headline()


def test_throughput_is_datasheet_flops_times_utilisation_over_flops_per_token() -> None:
    a100 = gpu_spec("NVIDIA A100 80GB PCIe")
    assert a100 is not None
    # 312 TFLOPS x 40% / (6 x 7e9) for a full fine-tune of a 7 B model
    assert tokens_per_second(a100, "full", 7_000_000_000) == pytest.approx(2971.4, rel=1e-3)
    lora = tokens_per_second(a100, "lora", 7_000_000_000)
    assert lora == pytest.approx(312e12 * 0.35 / (4 * 7e9))
    assert tokens_per_second(a100, "qlora", 7_000_000_000) < lora
    # twice the parameters, half the tokens; a second GPU adds 90% of one
    assert tokens_per_second(a100, "lora", 14_000_000_000) == pytest.approx(lora / 2)
    assert tokens_per_second(a100, "lora", 7_000_000_000, 2) == pytest.approx(lora * 1.9)
    h100 = gpu_spec("NVIDIA H100 80GB HBM3")
    assert h100 is not None and tokens_per_second(h100, "lora", 7_000_000_000) > lora
    with pytest.raises(ConfigError, match="method 'dpo'"):
        tokens_per_second(a100, "dpo", 7_000_000_000)


def test_the_documented_table_covers_every_class_method_and_size() -> None:
    rows = throughput_table()
    assert len({r[0] for r in rows}) == 16 and {r[1] for r in rows} == {"full", "lora", "qlora"}
    assert all(tps > 0 for *_, tps in rows)
    doc = (Path(__file__).parents[1] / "docs" / "estimate.md").read_text(encoding="utf-8")
    for name, method in {(r[0], r[1]) for r in rows}:  # the page shows what the code computes
        figures = " | ".join(f"{r[3]:,.0f}" for r in rows if r[:2] == (name, method))
        assert f"| {name} | {method} | {figures} |" in doc


def test_tokens_come_from_the_data_report_capped_at_max_length() -> None:
    counted = dataset_tokens(config(), report(1000, 300.0))
    assert (counted.tokens, counted.per_record, counted.counted) == (300_000, 300.0, True)
    capped = dataset_tokens(config(dataset={"max_length": 256}), report(1000, 300.0))
    assert capped.tokens == 256_000
    # no tokenizer: every record at max_length, an upper bound that says so
    bound = dataset_tokens(config(dataset={"max_length": 512}), report(10, None))
    assert (bound.tokens, bound.counted) == (5120, False)
    assert "no tokenizer" in bound.describe()
    with pytest.raises(ConfigError, match="no valid records"):
        dataset_tokens(config(), report(0, None))


def test_epochs_multiply_and_max_steps_replace_them() -> None:
    per_epoch = TokenCount(300_000, 1000, 300.0, True)
    assert training_tokens(config(training={"num_epochs": 3}), per_epoch) == 900_000
    steps = config(training={"max_steps": 10, "per_device_batch_size": 4,
                             "gradient_accumulation_steps": 2})  # fmt: skip
    assert training_tokens(steps, per_epoch) == 10 * 4 * 2 * 300
    assert training_tokens(steps, per_epoch, gpu_count=2) == 2 * 10 * 4 * 2 * 300


def test_hours_and_dollars_for_a_lora_run_on_an_a100() -> None:
    est = estimate_run(
        config(), TokenCount(10_000_000, 10_000, 1000.0, True), A100,
        model_config=read_model_config(LLAMA_8B),
    )  # fmt: skip
    # 8.03 B params: 312e12 x 0.35 / (4 x 8.03e9) = 3,400 tokens/s; 10 M tokens take 0.817 h,
    # plus 10 min of pod start: 0.984 h x $1.64 = $1.614, rounded up to the cent
    assert est.tokens_per_s == pytest.approx(3399.6, rel=1e-3)
    assert est.hours == pytest.approx(0.9838, rel=1e-3)
    assert est.cost_usd == Decimal("1.62")
    assert est.fit == "green" and est.memory_of_gpu_gb == 80
    text = "\n".join(est.lines())
    assert "estimate" in text.lower() and "$1.64 per GPU-hour x 1" in text
    assert f"{POD_START_S // 60} min pod start" in text
    assert json.loads(json.dumps(est.to_json()))["cost_usd"] == "1.62"


def test_two_gpus_train_faster_and_bill_both() -> None:
    tokens = TokenCount(10_000_000, 10_000, 1000.0, True)
    one = estimate_run(config(), tokens, A100, model_config=read_model_config(LLAMA_8B))
    two = estimate_run(
        config(), tokens, A100, model_config=read_model_config(LLAMA_8B), gpu_count=2
    )
    assert one.hours is not None and two.hours is not None
    assert two.hours < one.hours and two.gpu_hours is not None
    assert two.gpu_hours == pytest.approx(two.hours * 2)
    assert two.cost_usd is not None and one.cost_usd is not None and two.cost_usd > one.cost_usd


def test_the_fit_is_for_the_chosen_gpu_and_a_budget_or_runtime_too_small_is_named() -> None:
    full = config(method="full")
    tokens = TokenCount(50_000_000, 10_000, 5000.0, True)
    small = GpuOffer("NVIDIA GeForce RTX 4090", "RTX 4090", 24, Decimal("0.69"))
    est = estimate_run(
        full, tokens, small, model_config=read_model_config(LLAMA_8B),
        budget_usd=Decimal("1"), max_runtime_s=3600,
    )  # fmt: skip
    assert est.fit == "red" and "does not fit" in est.fit_line()
    said = " ".join(est.warnings)
    assert f"(${est.cost_usd:,.2f}) passes the budget ($1.00)" in said
    assert "(~10.3 h) passes the maximum runtime (1.0 h)" in said
    big = estimate_run(full, tokens, A100, model_config=read_model_config(LLAMA_8B))
    assert big.memory_gb == est.memory_gb and big.fit in ("amber", "red")


def test_what_the_pod_lacks_is_a_blocker() -> None:
    qlora = config(method="qlora")
    tokens = TokenCount(1000, 10, 100.0, True)
    model = read_model_config(LLAMA_8B)
    est = estimate_run(qlora, tokens, A100, model_config=model, pod_has_bitsandbytes=False)
    assert any(b.startswith("needs bitsandbytes") for b in est.blockers)
    assert not estimate_run(qlora, tokens, A100, model_config=model, pod_has_bitsandbytes=True)\
        .blockers  # fmt: skip
    t4 = GpuOffer("Tesla T4", "T4", 16, Decimal("0.2"))
    bf16 = estimate_run(config(model={"dtype": "bf16"}), tokens, t4, model_config=model)
    assert any(b.startswith("needs bf16") for b in bf16.blockers)


def test_offers_keep_the_users_order_and_price_the_chosen_cloud() -> None:
    catalog = [
        GpuType.model_validate({"id": "A", "name": "Aa", "memory": 24,
                                "price": {"secure": "0.69", "community": "0.34"},
                                "availability": "HIGH"}),
        GpuType.model_validate({"id": "B", "name": "Bb", "memory": 80,
                                "price": {"secure": "1.64", "community": "1.19"}}),
    ]  # fmt: skip
    offers = offers_for(catalog, ("B", "missing", "A"), "community")
    assert [o.gpu_id for o in offers] == ["B", "missing", "A"]
    assert offers[0].price_per_hour == Decimal("1.19") and offers[0].memory_gb == 80
    assert offers[1].price_per_hour is None and "not in RunPod's catalog" in offers[1].name
    assert offers[2].availability == "HIGH"
    assert offers_for(catalog, ("A",), "secure")[0].price_per_hour == Decimal("0.69")


def _jobs(home: Path) -> list[Path]:
    return list((home / "jobs").iterdir()) if (home / "jobs").exists() else []


def test_dry_run_locally_prints_the_tokens_and_creates_nothing(
    demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    home = tmp_path / "home"
    monkeypatch.setenv("FTDESK_HOME", str(home))
    assert main(["run", str(demo_dir / "config.json"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run, nothing created" in out and "tokens/record as counted" in out
    assert "add --provider runpod --gpu ID" in out
    assert _jobs(home) == []


def test_dry_run_on_runpod_prices_each_gpu_in_order_and_creates_no_pod(
    demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from runpod_emulator import RunpodEmulator, serve_emulator

    home = tmp_path / "home"
    emulator = RunpodEmulator(api_key="rp-dry-run-account-key-0123456789")
    with serve_emulator(emulator):
        monkeypatch.setenv("FTDESK_HOME", str(home))
        monkeypatch.setenv("FTDESK_RUNPOD_API_URL", emulator.url)
        monkeypatch.setenv("FTDESK_RUNPOD_API_KEY", "rp-dry-run-account-key-0123456789")
        code = main([
            "run", str(demo_dir / "config.json"), "--dry-run", "--provider", "runpod",
            "--gpu", "NVIDIA H100 80GB HBM3,NVIDIA GeForce RTX 4090", "--cloud", "community",
            "--budget", "3",
        ])  # fmt: skip
        out = capsys.readouterr().out
        assert code == 0, out
        assert emulator.live_pods() == [] and emulator.mismatches == []
    assert out.index("NVIDIA H100 80GB HBM3") < out.index("NVIDIA GeForce RTX 4090")
    assert "$2.69 per GPU-hour x 1" in out and "$0.34 per GPU-hour x 1" in out
    assert "availability NONE: none available now, a launch skips it" in out
    assert "budget $3.00" in out
    assert "rough estimate" in out and "Memory: ~" in out
    assert "M-parameter model rarely fills a GPU" in out  # the demo model is tiny
    assert _jobs(home) == []


@pytest.mark.slow  # two trainer check-data runs: 26-34 s measured on 2 busy shared cores
def test_the_window_estimate_counts_the_tokens_once_per_data_version(demo_dir: Path) -> None:
    """A budget or GPU change re-estimates from the last count; changed data is counted again."""
    from desktop.core.runpod_window import estimate_offers
    from desktop.core.runtime import TrainerRuntime
    from desktop.models import RunpodOptions
    from trainer.config import load_config

    class CountingRuntime(TrainerRuntime):  # the trainer process is the edge counted here
        checks = 0

        def check_data(self, *args: object, **kwargs: object) -> DataReport:
            CountingRuntime.checks += 1
            return super().check_data(*args, **kwargs)  # type: ignore[arg-type]

    runtime = CountingRuntime()
    config = load_config(demo_dir / "config.json")
    first = estimate_offers(config, runtime, [A100], RunpodOptions(budget_usd=Decimal("5")))
    again = estimate_offers(config, runtime, [A100], RunpodOptions(budget_usd=Decimal("0.01")))
    assert CountingRuntime.checks == 1 and first[0].token_count == again[0].token_count
    assert "passes the budget ($0.01)" in " ".join(again[0].warnings)
    data = Path(config.dataset.path)
    data.write_text(data.read_text(encoding="utf-8") * 2, encoding="utf-8")
    doubled = estimate_offers(config, runtime, [A100], RunpodOptions())
    counted = doubled[0].token_count
    assert CountingRuntime.checks == 2 and counted.records == 2 * first[0].token_count.records
