"""Qt-free, incremental, peak-preserving decimation for the live chart.

A chart a thousand pixels wide cannot show more than a minimum and a maximum per pixel column,
so feeding it a million points per frame wastes all but a few thousand of them. Two helpers
make each frame cost O(pixels) however long the series grows:

- `MinMaxPyramid` keeps, for buckets of 8, 64, 512 ... consecutive points, the index of each
  bucket's smallest and largest finite value. Appending k points costs O(k) (amortised); the
  pyramid takes about 4.6 bytes per point (int64 indices and float64 values, 1/7 of the points
  per array).
- `XIndex` knows the x values (step, tokens or seconds) are increasing, except at the few
  places where a resumed run went back in steps; it keeps those places and turns a visible x
  range into index ranges by binary search.

`MinMaxPyramid.indices(ranges, pixels)` then picks, per range, the coarsest level whose
buckets are no wider than one pixel's share of the points, merges buckets into about one group
per pixel column and returns the indices of each group's minimum and maximum, in x order. The
result is exact where it matters: every drawn point is a real data point, the first and last
point of each range are included, and a spike of one point in a million is the maximum of its
group at every level, so it is drawn. Non-finite values (nan, inf) are never returned.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["BRANCHING", "IndexArray", "MinMaxPyramid", "XIndex"]

IndexArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

BRANCHING = 8
"""Points per bucket at level 1, and buckets per bucket from one level to the next."""

_EMPTY_INDEX: IndexArray = np.empty(0, dtype=np.int64)


class _Column:
    """A growable one-dimensional numpy array of a fixed dtype (amortised doubling)."""

    __slots__ = ("_data", "_size")

    def __init__(self, dtype: type[np.generic], capacity: int = 64) -> None:
        self._data: npt.NDArray[np.generic] = np.empty(capacity, dtype=dtype)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def extend(self, values: npt.NDArray[np.generic]) -> None:
        end = self._size + values.shape[0]
        if end > self._data.shape[0]:
            grown = np.empty(max(end, 2 * self._data.shape[0]), dtype=self._data.dtype)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : end] = values
        self._size = end

    def view(self) -> npt.NDArray[np.generic]:
        return self._data[: self._size]

    def clear(self) -> None:
        self._size = 0

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes)


class _Level:
    """One level of the pyramid: per complete bucket, where its finite min and max are.

    An empty bucket (no finite value) has index -1, min +inf and max -inf, so it never wins a
    comparison and is dropped from the output.
    """

    __slots__ = ("imax", "imin", "vmax", "vmin")

    def __init__(self) -> None:
        self.imin = _Column(np.int64)
        self.imax = _Column(np.int64)
        self.vmin = _Column(np.float64)
        self.vmax = _Column(np.float64)

    def __len__(self) -> int:
        return len(self.imin)

    def extend(
        self, imin: IndexArray, vmin: FloatArray, imax: IndexArray, vmax: FloatArray
    ) -> None:
        self.imin.extend(imin)
        self.vmin.extend(vmin)
        self.imax.extend(imax)
        self.vmax.extend(vmax)

    def clear(self) -> None:
        for column in (self.imin, self.imax, self.vmin, self.vmax):
            column.clear()

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in (self.imin, self.imax, self.vmin, self.vmax))


def _reduce_rows(
    vmin: FloatArray, imin: IndexArray, vmax: FloatArray, imax: IndexArray, width: int
) -> tuple[IndexArray, FloatArray, IndexArray, FloatArray]:
    """Min and max (values and their indices) over consecutive rows of `width` elements.

    The inputs' length must be a multiple of `width`.
    """
    rows = vmin.shape[0] // width
    lo = vmin.reshape(rows, width)
    hi = vmax.reshape(rows, width)
    arg_lo = np.argmin(lo, axis=1)
    arg_hi = np.argmax(hi, axis=1)
    base = np.arange(rows, dtype=np.int64) * width
    return (
        imin[base + arg_lo],
        lo[np.arange(rows), arg_lo],
        imax[base + arg_hi],
        hi[np.arange(rows), arg_hi],
    )


class MinMaxPyramid:
    """Incremental min/max pyramid over a series that only grows (see the module docstring).

    Call `update(values)` with the whole (grown) series each time, as with `EmaSmoother`; only
    points not seen before are processed. A shorter series than before starts over; a series
    whose earlier values changed (new smoothing weight) needs `reset()` first.
    """

    def __init__(self) -> None:
        self._levels: list[_Level] = []
        self._values: FloatArray = np.empty(0, dtype=np.float64)
        self._nonfinite = 0

    def __len__(self) -> int:
        return int(self._values.shape[0])

    @property
    def levels(self) -> int:
        """Number of levels above the raw points (level k has buckets of 8**k points)."""
        return len(self._levels)

    @property
    def nonfinite(self) -> int:
        """How many of the points seen are nan or infinite."""
        return self._nonfinite

    @property
    def nbytes(self) -> int:
        """Memory held by the pyramid itself (not the series)."""
        return sum(level.nbytes for level in self._levels)

    def reset(self) -> None:
        """Forget everything (keeps the allocations)."""
        for level in self._levels:
            level.clear()
        self._values = np.empty(0, dtype=np.float64)
        self._nonfinite = 0

    def update(self, values: FloatArray) -> None:
        """Take in the points of `values` not seen yet (`values` is the whole series)."""
        done = len(self)
        if values.shape[0] < done:
            self.reset()
            done = 0
        self._values = values
        new = values[done:]
        if new.shape[0] == 0:
            return
        self._nonfinite += int(new.shape[0] - np.count_nonzero(np.isfinite(new)))
        # Level 1 from the raw points: complete buckets only; the partial tail waits.
        if not self._levels:
            self._levels.append(_Level())
        level = self._levels[0]
        start = len(level) * BRANCHING
        stop = (values.shape[0] // BRANCHING) * BRANCHING
        if stop > start:
            chunk = values[start:stop]
            if self._nonfinite == 0:
                lo = hi = chunk
            else:
                ok = np.isfinite(chunk)
                lo = np.where(ok, chunk, np.inf)
                hi = np.where(ok, chunk, -np.inf)
            index = np.arange(start, stop, dtype=np.int64)
            imin, vmin, imax, vmax = _reduce_rows(lo, index, hi, index, BRANCHING)
            imin[np.isposinf(vmin)] = -1
            imax[np.isneginf(vmax)] = -1
            level.extend(imin, vmin, imax, vmax)
        # Each higher level from the complete buckets of the one below.
        k = 0
        while len(self._levels[k]) >= BRANCHING:
            below = self._levels[k]
            if k + 1 == len(self._levels):
                self._levels.append(_Level())
            above = self._levels[k + 1]
            start = len(above) * BRANCHING
            stop = (len(below) // BRANCHING) * BRANCHING
            if stop > start:
                above.extend(
                    *_reduce_rows(
                        below.vmin.view()[start:stop],  # type: ignore[arg-type]
                        below.imin.view()[start:stop],  # type: ignore[arg-type]
                        below.vmax.view()[start:stop],  # type: ignore[arg-type]
                        below.imax.view()[start:stop],  # type: ignore[arg-type]
                        BRANCHING,
                    )
                )
            k += 1

    def indices(self, ranges: Sequence[tuple[int, int]], pixels: int) -> IndexArray:
        """Indices of the points to draw for the index `ranges` on `pixels` columns.

        Args:
            ranges: half-open index ranges [start, stop), in increasing order (see `XIndex`).
            pixels: pixel columns available (the plot's width).

        Returns:
            Increasing indices of finite points: all of them when there are at most two per
            pixel column; otherwise each range's first and last point and the minimum and
            maximum of about one group of points per pixel column. At most about
            2 * pixels + 4 * 7 * levels + 2 * len(ranges) indices.
        """
        n = len(self)
        spans = [(max(0, a), min(n, b)) for a, b in ranges]
        spans = [(a, b) for a, b in spans if b > a]
        total = sum(b - a for a, b in spans)
        if total == 0:
            return _EMPTY_INDEX
        pixels = max(1, int(pixels))
        per_group = total / pixels
        level = self.level_for(total, pixels)
        parts: list[IndexArray] = []
        for a, b in spans:
            if per_group <= 2.0:
                parts.append(np.arange(a, b, dtype=np.int64))
            else:
                parts.append(np.array([self._finite_end(a, b, first=True)], dtype=np.int64))
                self._cover(a, b, level, per_group, parts)
                parts.append(np.array([self._finite_end(a, b, first=False)], dtype=np.int64))
        out = np.concatenate(parts)
        out = out[out >= 0]
        if out.shape[0] > 1:
            # Pairs come sorted within a bucket and buckets in order, so only repeats (a
            # bucket whose min and max are one point, the first/last point) need removing.
            out = out[np.concatenate(([True], np.diff(out) > 0))]
        if self._nonfinite:
            out = out[np.isfinite(self._values[out])]
        return out

    def level_for(self, points: int, pixels: int) -> int:
        """The level `indices` reads for `points` points on `pixels` columns (0: raw points).

        The coarsest level whose buckets hold no more than one pixel column's share, so a
        narrower (zoomed-in) range reads a finer level.
        """
        per_group = points / max(1, int(pixels))
        k = 0
        while k < len(self._levels) and BRANCHING ** (k + 1) <= per_group:
            k += 1
        return k

    def _finite_end(self, a: int, b: int, *, first: bool) -> int:
        """The first (or last) index in [a, b) of a finite value; -1 when there is none."""
        if not self._nonfinite:
            return a if first else b - 1
        width = 1024
        lo, hi = a, b
        while lo < hi:
            chunk = (
                self._values[lo : lo + width] if first else self._values[max(lo, hi - width) : hi]
            )
            found = np.flatnonzero(np.isfinite(chunk))
            if found.shape[0]:
                return lo + int(found[0]) if first else max(lo, hi - width) + int(found[-1])
            if first:
                lo += width
            else:
                hi -= width
            width *= 2
        return -1

    def _cover(self, a: int, b: int, k: int, per_group: float, parts: list[IndexArray]) -> None:
        """Append min/max indices covering [a, b): level `k`'s buckets inside it, merged into
        groups of about `per_group` points, and finer levels for the ragged ends."""
        if b <= a:
            return
        if k == 0:
            parts.append(np.arange(a, b, dtype=np.int64))
            return
        size = BRANCHING**k
        level = self._levels[k - 1]
        first = -(-a // size)  # the first bucket wholly inside [a, b)
        last = min(b // size, len(level))  # one past the last
        if last <= first:
            self._cover(a, b, k - 1, per_group, parts)
            return
        self._cover(a, first * size, k - 1, per_group, parts)
        group = max(1, round(per_group / size))
        vmin = level.vmin.view()[first:last]
        vmax = level.vmax.view()[first:last]
        imin = level.imin.view()[first:last]
        imax = level.imax.view()[first:last]
        whole = (vmin.shape[0] // group) * group
        picked: list[tuple[IndexArray, IndexArray]] = []
        if whole:
            lo_i, _, hi_i, _ = _reduce_rows(
                vmin[:whole],  # type: ignore[arg-type]
                imin[:whole],  # type: ignore[arg-type]
                vmax[:whole],  # type: ignore[arg-type]
                imax[:whole],  # type: ignore[arg-type]
                group,
            )
            picked.append((lo_i, hi_i))
        if whole < vmin.shape[0]:
            rest = slice(whole, None)
            picked.append(
                (
                    np.array([imin[rest][int(np.argmin(vmin[rest]))]], dtype=np.int64),
                    np.array([imax[rest][int(np.argmax(vmax[rest]))]], dtype=np.int64),
                )
            )
        for lo_i, hi_i in picked:
            pairs = np.empty((lo_i.shape[0], 2), dtype=np.int64)
            np.minimum(lo_i, hi_i, out=pairs[:, 0])
            np.maximum(lo_i, hi_i, out=pairs[:, 1])
            # An empty group has -1 for both; a group with one finite side is impossible.
            parts.append(pairs.reshape(-1))
        self._cover(last * size, b, k - 1, per_group, parts)


class XIndex:
    """Incremental index over x values that increase, save where a resumed run went back.

    Call `update(x)` with the whole (grown) x array; only new points are looked at. The x
    values are split into runs that never decrease; `ranges(lo, hi)` finds the visible part of
    each by binary search. Past `max_runs` runs (x that is not a time axis at all) it gives up
    clipping and returns the whole series.
    """

    def __init__(self, max_runs: int = 64) -> None:
        self._starts: list[int] = [0]
        self._x: FloatArray = np.empty(0, dtype=np.float64)
        self._lo = np.inf
        self._hi = -np.inf
        self._max_runs = max_runs
        self._nonfinite = 0

    def __len__(self) -> int:
        return int(self._x.shape[0])

    @property
    def nonfinite(self) -> int:
        """How many x values seen are nan or infinite (callers drop those points)."""
        return self._nonfinite

    @property
    def runs(self) -> int:
        """Number of non-decreasing runs."""
        return len(self._starts)

    @property
    def bounds(self) -> tuple[float, float] | None:
        """Smallest and largest finite x seen, or None when there is none."""
        return None if self._lo > self._hi else (float(self._lo), float(self._hi))

    def reset(self) -> None:
        """Forget everything."""
        self._starts = [0]
        self._x = np.empty(0, dtype=np.float64)
        self._lo = np.inf
        self._hi = -np.inf
        self._nonfinite = 0

    def update(self, x: FloatArray) -> None:
        """Take in the x values not seen yet (`x` is the whole array)."""
        done = len(self)
        if x.shape[0] < done:
            self.reset()
            done = 0
        self._x = x
        new = x[done:]
        if new.shape[0] == 0:
            return
        finite = new[np.isfinite(new)]
        self._nonfinite += new.shape[0] - finite.shape[0]
        if finite.shape[0]:
            self._lo = min(self._lo, float(finite.min()))
            self._hi = max(self._hi, float(finite.max()))
        # A run ends where x goes down (nan compares False, so it never breaks a run).
        joined = x[max(done - 1, 0) :]
        drops = np.flatnonzero(joined[1:] < joined[:-1]) + max(done - 1, 0) + 1
        if drops.shape[0] and len(self._starts) <= self._max_runs:
            self._starts.extend(int(i) for i in drops[: self._max_runs + 1])

    def ranges(self, lo: float, hi: float) -> list[tuple[int, int]]:
        """Index ranges [start, stop) holding the points with lo <= x <= hi, in order.

        Each range also takes the point just before and just after it, so lines leaving the
        view are drawn up to its edge.
        """
        n = len(self)
        if n == 0:
            return []
        if len(self._starts) > self._max_runs:
            return [(0, n)]
        out: list[tuple[int, int]] = []
        bounds = [*self._starts, n]
        for start, stop in itertools.pairwise(bounds):
            run = self._x[start:stop]
            a = start + int(np.searchsorted(run, lo, side="left"))
            b = start + int(np.searchsorted(run, hi, side="right"))
            a = max(start, a - 1)
            b = min(stop, b + 1)
            if b > a and not (b - a <= 2 and (run[-1] < lo or run[0] > hi)):
                out.append((a, b))
        return out
