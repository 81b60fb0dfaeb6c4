"""Exact rank sums for ROC AUC in O(N) passes, without sorting a whole score column.

For a column x (N,) and its positives x[rows] (P,), ROC AUC needs

    S = sum over positives v of (#x < v) + (#x <= v)            (ties count half: AUC = (S - P^2) / (2 P (N - P)))

Sorting x costs ~20 passes over memory. Instead, map every float to a monotone integer key (its IEEE bits, sign
flipped), and cut the key range into ~2N (at most 2^20) equal cells (`KeyGrid`). A cell index never decreases when the
value grows, so:
  * pairs in different cells are counted from one `bincount` of the cells (cumulative counts below each cell);
  * pairs in the same cell need exact comparisons, but only values in cells that hold a positive take part:
    they are gathered and sorted, a small set when P << N (and at most N).
Integer sums throughout; the result is identical to sorting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MAX_CELL_BITS = 20  # at most 2^20 cells (an 8 MB histogram); about 2 cells per value below that


def monotone_keys(x: np.ndarray) -> np.ndarray:
    """Unsigned integer keys ordered like the float values; -0.0 and +0.0 get the same key."""
    x = x + x.dtype.type(0.0)  # -0.0 + 0.0 = +0.0: equal floats must get equal keys
    if x.dtype == np.float32:
        u, sign = x.view(np.uint32), np.uint32(1 << 31)
    else:
        u, sign = x.view(np.uint64), np.uint64(1 << 63)
    # negative floats: flip all bits (larger magnitude -> smaller key); non-negative: set the sign bit
    return np.where(u >= sign, ~u, u | sign)


@dataclass(frozen=True)
class KeyGrid:
    """Cells of the key range [key(lo), key(hi)]: cell = (key - kmin) >> shift."""

    kmin: int
    shift: int
    n_cells: int
    nonneg: bool  # all values >= 0: the key is the raw bits with the sign bit cleared (cheaper)
    bits: int  # 32 or 64


def key_grid(lo: float, hi: float, dtype: np.dtype, n: int) -> KeyGrid:
    """Grid for (n,) float32 or float64 columns whose values lie in [lo, hi]; ~2n cells (the O(cells) work
    stays below the O(n) work)."""
    dtype = np.dtype(np.float32 if dtype == np.float32 else np.float64)
    kmin = int(monotone_keys(np.array([lo], dtype=dtype))[0])
    span = int(monotone_keys(np.array([hi], dtype=dtype))[0]) - kmin
    cell_bits = min(_MAX_CELL_BITS, max(6, int(n).bit_length() + 1))
    shift = max(0, span.bit_length() - cell_bits)
    return KeyGrid(kmin, shift, (span >> shift) + 1, bool(lo >= 0), dtype.itemsize * 8)


def cells(col: np.ndarray, grid: KeyGrid) -> np.ndarray:
    """(N,) int64 cell index of each value of a contiguous float column, non-decreasing in the value."""
    if grid.nonneg:
        sign = 1 << (grid.bits - 1)
        g = col.view(np.uint32 if grid.bits == 32 else np.uint64).astype(np.int64)
        g &= sign - 1  # clear the sign bit: -0.0 becomes +0.0; other values are >= 0 already
        g -= grid.kmin - sign  # key of a non-negative float = its bits + 2^(bits-1)
        g >>= grid.shift
        return g
    k = monotone_keys(col)
    k -= k.dtype.type(grid.kmin)
    k >>= k.dtype.type(grid.shift)
    return k.astype(np.int64)


def rank_sum_sorted(pool_sorted: np.ndarray, pos_sorted: np.ndarray) -> int:
    """sum over positives v of (#pool < v) + (#pool <= v), both arrays sorted; an exact integer."""
    left = np.searchsorted(pool_sorted, pos_sorted, side="left")
    right = np.searchsorted(pool_sorted, pos_sorted, side="right")
    return int(left.sum()) + int(right.sum())


def rank_sum_cells(col: np.ndarray, rows: np.ndarray, grid: KeyGrid) -> int:
    """S for the positives col[rows] among all of col (contiguous (N,) floats inside the grid's range)."""
    g = cells(col, grid)  # (N,) cell of every value
    count = np.bincount(g, minlength=grid.n_cells)
    below = np.cumsum(count)
    below -= count  # values in lower cells
    pos = np.sort(col[rows])  # (P,) positives, sorted; their cells are sorted too
    g_pos = cells(pos, grid)
    cross = 2 * int(below[g_pos].sum())  # lower cells count in both (#x < v) and (#x <= v)
    has_pos = np.zeros(grid.n_cells, dtype=bool)
    has_pos[g_pos] = True
    shared = np.sort(col[has_pos[g]])  # (M,) values in cells that hold a positive, sorted
    # index in `shared` where each positive's cell begins: shared values before it are in lower cells
    first = np.searchsorted(cells(shared, grid), g_pos)
    return cross + rank_sum_sorted(shared, pos) - 2 * int(first.sum())
