"""The chart's peak-preserving decimation (Qt-free): min/max pyramid and x index."""

from __future__ import annotations

import numpy as np
import pytest

from desktop.views.chart.downsample import MinMaxPyramid, XIndex

MILLION = 1_000_000


def noisy(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 2.0 * np.exp(-np.arange(n) / (n / 5)) + rng.normal(0.0, 0.1, n)


def built(values: np.ndarray, batch: int = 0) -> MinMaxPyramid:
    pyramid = MinMaxPyramid()
    if batch:
        for end in range(batch, values.shape[0] + batch, batch):
            pyramid.update(values[: min(end, values.shape[0])])
    else:
        pyramid.update(values)
    return pyramid


@pytest.fixture(scope="module")
def million() -> tuple[np.ndarray, MinMaxPyramid]:
    values = noisy(MILLION)
    values[654_321] = 40.0  # one spike up and one down, each a single point
    values[123_457] = -30.0
    return values, built(values)


def test_a_one_point_spike_in_a_million_is_drawn_with_the_first_and_last_points(
    million: tuple[np.ndarray, MinMaxPyramid],
) -> None:
    values, pyramid = million
    for pixels in (300, 1000, 2560):
        drawn = pyramid.indices([(0, MILLION)], pixels)
        assert 654_321 in drawn and 123_457 in drawn
        assert drawn[0] == 0 and drawn[-1] == MILLION - 1
        assert np.all(np.diff(drawn) > 0)  # x order, no repeats
        assert values[drawn].max() == 40.0 and values[drawn].min() == -30.0


def test_drawn_points_are_about_two_per_pixel_column(
    million: tuple[np.ndarray, MinMaxPyramid],
) -> None:
    _values, pyramid = million
    for pixels in (200, 1000, 4000):
        drawn = pyramid.indices([(0, MILLION)], pixels)
        assert pixels <= drawn.shape[0] <= 3 * pixels + 100
    # Whatever part is asked for: bounded by the pixels, not the points.
    assert pyramid.indices([(12_345, 987_654)], 800).shape[0] <= 3 * 800 + 100


def test_every_local_peak_is_drawn_within_one_column(
    million: tuple[np.ndarray, MinMaxPyramid],
) -> None:
    """The envelope is kept: in every stretch, the highest point is drawn or a point at least
    as high is drawn within one column's width of it (the group it fell into)."""
    values, pyramid = million
    pixels = 1000
    drawn = pyramid.indices([(0, MILLION)], pixels)
    column = MILLION // pixels
    for start in range(0, MILLION, 20_000):
        stretch = values[start : start + 20_000]
        top = start + int(np.argmax(stretch))
        bottom = start + int(np.argmin(stretch))
        near = drawn[np.abs(drawn - top) <= 2 * column]
        assert values[near].max() >= values[top]
        near = drawn[np.abs(drawn - bottom) <= 2 * column]
        assert values[near].min() <= values[bottom]


def test_incremental_appends_give_the_same_result_as_building_at_once() -> None:
    values = noisy(300_001, seed=3)
    values[77_777] = 9.0
    whole = built(values)
    for batch in (1_000, 4_099, 65_536):
        grown = built(values, batch)
        assert grown.levels == whole.levels
        for ranges, pixels in (
            ([(0, 300_001)], 1000),
            ([(5, 299_990)], 333),
            ([(70_000, 90_000)], 640),
            ([(100, 900)], 1000),
        ):
            np.testing.assert_array_equal(
                grown.indices(ranges, pixels), whole.indices(ranges, pixels)
            )


def test_a_zoomed_range_reads_a_finer_level_down_to_every_point(
    million: tuple[np.ndarray, MinMaxPyramid],
) -> None:
    values, pyramid = million
    full = pyramid.level_for(MILLION, 1000)
    zoomed = pyramid.level_for(20_000, 1000)
    assert full > zoomed > 0
    # Zoomed in on 20,000 points: groups of about 20 points, so gaps stay near 20.
    drawn = pyramid.indices([(600_000, 620_000)], 1000)
    assert drawn[0] == 600_000 and drawn[-1] == 619_999
    assert np.diff(drawn).max() <= 2 * 20 + 1
    assert values[drawn].max() == values[600_000:620_000].max()
    # Fewer than two points per column: every point, exactly.
    drawn = pyramid.indices([(654_000, 655_000)], 1000)
    np.testing.assert_array_equal(drawn, np.arange(654_000, 655_000))


def test_non_finite_values_are_skipped_and_never_drawn() -> None:
    values = noisy(100_000, seed=5)
    values[:20] = np.nan  # the first bucket holds no finite value
    values[50_000:50_100] = np.inf
    values[70_000] = -np.inf
    values[99_999] = np.nan
    values[31_337] = 12.0
    pyramid = built(values, batch=777)
    assert pyramid.nonfinite == 20 + 100 + 1 + 1
    drawn = pyramid.indices([(0, 100_000)], 500)
    assert np.isfinite(values[drawn]).all()
    assert 31_337 in drawn
    assert values[drawn].max() == 12.0
    assert drawn[0] == 20  # first finite point
    assert drawn[-1] == 99_998


def test_the_pyramid_costs_under_five_bytes_a_point(
    million: tuple[np.ndarray, MinMaxPyramid],
) -> None:
    _values, pyramid = million
    assert pyramid.nbytes < 5 * MILLION


def test_a_shorter_series_starts_over() -> None:
    pyramid = built(noisy(10_000))
    fresh = np.full(5_000, 1.0)
    fresh[4_000] = 3.0
    pyramid.update(fresh)
    assert len(pyramid) == 5_000
    assert fresh[pyramid.indices([(0, 5_000)], 100)].max() == 3.0


def test_x_index_clips_by_binary_search_and_handles_a_resumed_run() -> None:
    index = XIndex()
    steps = np.arange(0.0, 1000.0)
    index.update(steps[:400])
    index.update(steps)
    assert index.runs == 1 and index.bounds == (0.0, 999.0)
    # The point before and after the range come along, so lines reach the edges.
    assert index.ranges(100.0, 200.0) == [(99, 202)]
    assert index.ranges(100.5, 199.5) == [(100, 201)]
    assert index.ranges(2000.0, 3000.0) == []
    # Resumed from a checkpoint at step 800 after dying at 999: steps go back once.
    resumed = np.concatenate([steps, np.arange(800.0, 1200.0)])
    index.update(resumed)
    assert index.runs == 2 and index.bounds == (0.0, 1199.0)
    assert index.ranges(850.0, 900.0) == [(849, 902), (1049, 1102)]
    assert index.ranges(1100.0, 1150.0) == [(1299, 1352)]
    assert index.ranges(10.0, 20.0) == [(9, 22)]


def test_x_index_gives_up_clipping_for_x_that_is_not_ordered() -> None:
    index = XIndex(max_runs=8)
    x = np.random.default_rng(0).random(1000)
    index.update(x)
    assert index.ranges(0.2, 0.3) == [(0, 1000)]  # everything, still decimated by pixels
