"""The throughput benchmark's generated data has the spread its docstring states."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from bench.throughput_data import make_bench_job, record_token_lengths, target_lengths


def test_target_lengths_are_the_stated_long_tailed_spread() -> None:
    lengths = target_lengths(5000, seed=3)
    ordered = sorted(lengths)
    assert min(lengths) >= 20 and max(lengths) <= 1000
    assert 110 <= statistics.median(lengths) <= 130  # median 120
    assert 35 <= ordered[500] <= 55  # p10 ~ 43
    assert 280 <= ordered[4500] <= 390  # p90 ~ 335: the long tail
    assert ordered[-1] == 1000  # clipped, and reached
    assert target_lengths(50, seed=3) == lengths[:50]  # deterministic


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench") / "job"
    make_bench_job(folder, records=40, layers=2, hidden=32, high=160)
    return folder


def test_records_tokenise_to_their_target_lengths(tiny_bench: Path) -> None:
    measured = record_token_lengths(tiny_bench)
    wanted = target_lengths(40, 0, high=160)
    assert len(measured) == 40
    for got, want in zip(measured, wanted, strict=True):
        assert abs(got - want) <= 3, (got, want)
    assert (tiny_bench / "model" / "config.json").is_file()
    assert (tiny_bench / "config.json").is_file()
