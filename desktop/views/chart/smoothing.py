"""Qt-free numpy helpers for the live chart: growable buffers and debiased EMA smoothing.

The smoothing is TensorBoard's: an exponential moving average started at zero and divided by
``1 - weight ** n`` (n = finite points seen so far) so the start is not pulled towards zero.
Non-finite values (nan, inf) pass through unchanged and do not move the average.

Both helpers are vectorised and incremental: appending k points costs O(k), never O(total).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["EmaSmoother", "GrowableArray", "debiased_ema"]

FloatArray = npt.NDArray[np.float64]

# Within one block the recurrence is solved as a scaled cumulative sum with factors up to
# weight ** -block; keep those well inside float64's range (1e308).
_MAX_SCALE_LOG10 = 100.0


class GrowableArray:
    """A float64 array that grows by amortised doubling; `view()` is a no-copy slice.

    Views taken before a growth keep pointing at the old storage (still valid, just shorter).
    """

    __slots__ = ("_data", "_size")

    def __init__(self, capacity: int = 1024) -> None:
        self._data: FloatArray = np.empty(max(int(capacity), 1), dtype=np.float64)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        """Allocated slots (≥ len)."""
        return int(self._data.shape[0])

    def extend(self, values: npt.ArrayLike) -> None:
        """Append values (any array-like of numbers)."""
        new = np.asarray(values, dtype=np.float64).reshape(-1)
        end = self._size + new.shape[0]
        if end > self._data.shape[0]:
            capacity = self._data.shape[0]
            while capacity < end:
                capacity *= 2
            grown = np.empty(capacity, dtype=np.float64)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : end] = new
        self._size = end

    def view(self) -> FloatArray:
        """The filled part, without copying."""
        return self._data[: self._size]

    def clear(self) -> None:
        """Forget the contents (keeps the allocation)."""
        self._size = 0

    def truncate(self, size: int) -> None:
        """Keep only the first `size` values (keeps the allocation)."""
        self._size = max(0, min(int(size), self._size))


def _ema_finite(
    x: FloatArray, weight: float, state: float, count: int
) -> tuple[FloatArray, float, int]:
    """Debiased EMA of finite values `x`, continuing from (`state`, `count`).

    `state` is the biased EMA (started at 0) after `count` values. Returns the debiased values,
    the new state and the new count. Solves s_j = w s_{j-1} + (1-w) x_j block-wise as
    s_j = w^(j+1) s_{-1} + (1-w) w^j cumsum(x_k w^-k).
    """
    n = x.shape[0]
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out, state, count
    if weight == 0.0:
        out[:] = x
        return out, float(x[-1]), count + n
    block = max(1, min(n, int(_MAX_SCALE_LOG10 / -math.log10(weight))))
    powers = weight ** np.arange(block + 1, dtype=np.float64)  # w^0 .. w^block
    inverse = 1.0 / powers[:block]  # w^-k
    for start in range(0, n, block):
        chunk = x[start : start + block]
        m = chunk.shape[0]
        scaled = np.cumsum(chunk * inverse[:m])
        smoothed = powers[1 : m + 1] * state + (1.0 - weight) * powers[:m] * scaled
        counts = np.arange(count + start + 1, count + start + m + 1, dtype=np.float64)
        out[start : start + m] = smoothed / (1.0 - weight**counts)
        state = float(smoothed[-1])
    return out, state, count + n


def debiased_ema(values: npt.ArrayLike, weight: float) -> FloatArray:
    """TensorBoard-style debiased exponential moving average of `values`.

    Args:
        values: the raw series.
        weight: smoothing in [0, 1): 0 returns the values unchanged.

    Returns:
        A new float64 array of the same length. Non-finite values are kept as they are and
        skipped by the average.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}")
    raw = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = np.isfinite(raw)
    if finite.all():
        return _ema_finite(raw, weight, 0.0, 0)[0]
    out = raw.copy()
    out[finite] = _ema_finite(raw[finite], weight, 0.0, 0)[0]
    return out


class EmaSmoother:
    """Incremental debiased EMA over a series that only grows.

    Call `update(values)` with the whole (grown) series each time; only the points not seen
    before are processed. Changing `weight` (or passing a shorter series, e.g. after a reset)
    recomputes from the start.
    """

    def __init__(self, weight: float = 0.6) -> None:
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}")
        self._weight = float(weight)
        self._out = GrowableArray()
        self._state = 0.0
        self._count = 0

    @property
    def weight(self) -> float:
        """The smoothing weight in [0, 1)."""
        return self._weight

    @weight.setter
    def weight(self, value: float) -> None:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"smoothing weight must be in [0, 1), got {value!r}")
        if float(value) != self._weight:
            self._weight = float(value)
            self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._out.clear()
        self._state = 0.0
        self._count = 0

    def __len__(self) -> int:
        return len(self._out)

    def update(self, values: FloatArray) -> FloatArray:
        """Smooth the points of `values` not seen yet; return the smoothed series (a view)."""
        done = len(self._out)
        if values.shape[0] < done:
            self.reset()
            done = 0
        new = values[done:]
        if new.shape[0]:
            finite = np.isfinite(new)
            if finite.all():
                smoothed, self._state, self._count = _ema_finite(
                    new, self._weight, self._state, self._count
                )
            else:
                smoothed = np.array(new, dtype=np.float64)
                smoothed[finite], self._state, self._count = _ema_finite(
                    new[finite], self._weight, self._state, self._count
                )
            self._out.extend(smoothed)
        return self._out.view()
