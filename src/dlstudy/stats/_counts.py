"""Bootstrap of label metrics by resampling counts, not rows.

A metric of predicted labels (accuracy, balanced accuracy, macro P/R/F1) sees the N samples only through how many
fall into each (true, predicted) cell. Drawing N rows with replacement puts Multinomial(N, n_c / N) samples into the
C occupied cells, so one resample is a (C,) count vector and the metric follows from per-class counts

    tp[k] = samples of class k predicted k,   n_true[k] = samples of class k,   n_pred[k] = samples predicted k.

A metric needs only part of a cell's identity (its "grain"): accuracy only whether the sample is correct (2 cells),
balanced accuracy (true class, correct) (<= 2K cells), precision / recall / F1 the full (true, predicted) pair.
Paired arms share the resample: a cell is (true, pred_a, pred_b), so both arms see the same samples.

Two exact samplers of the same multinomial: `Generator.multinomial` over the cells (~70 ns a cell) when C is small,
else N uniform row draws binned by cell (~7 ns a row). Which one runs depends only on (N, C), so a seed gives the
same resamples on any machine.

Cells are counted by `dlstudy.metrics.counts.bin_counts`, the counting core `confusion_matrix` and the Evaluator
use; the metrics of class counts are `dlstudy.metrics.counts`' and the table `dlstudy.metrics.table` names them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlstudy.metrics.counts import bin_counts

_DENSE_CODES = 1 << 16  # codes counted in a dense table up to this many or 4 N (measured): beyond, sorted
_ROW_DRAW_PER_CELL = 10  # measured: ~70 ns a cell (multinomial) vs ~7 ns a row draw: pick the cheaper


@dataclass(frozen=True)
class _Groups:
    """Sum count columns by a key: group i is columns cols[starts[i]:starts[i+1]] and has key keys[i]."""

    cols: np.ndarray  # (M,) cell indices sorted by key
    starts: np.ndarray  # (G,) first position of each group in cols
    keys: np.ndarray  # (G,) class of each group
    all_in_order: bool  # cols is 0..C-1: no column gather needed


def _groups(key: np.ndarray, keep: np.ndarray) -> _Groups:
    cols = np.flatnonzero(keep)
    cols = cols[np.argsort(key[cols], kind="stable")]
    sorted_keys = key[cols]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if cols.size else cols
    return _Groups(cols, starts, sorted_keys[starts], bool(np.array_equal(cols, np.arange(key.shape[0]))))


@dataclass(frozen=True)
class CellTable:
    """N samples grouped into C occupied cells, with the groupings that turn (B, C) counts into class counts."""

    counts: np.ndarray  # (C,) samples in each cell
    true: np.ndarray  # (C,) true class of each cell (0 for grain 'correct')
    preds: tuple  # per arm, (C,) predicted class of each cell; -1 = wrong and the class is not needed
    cell_of_row: np.ndarray  # (N,) int64 cell of each sample: the row sampler bins draws with it
    num_classes: int  # K (1 for grain 'correct')
    sums: tuple  # per arm, (_Groups for tp, n_true, n_pred)


def _occupied_cells(code: np.ndarray, size: int):
    """(occupied codes (C,) ascending, cell of each row (N,), rows per cell (C,)): `np.unique`'s answer, counted by
    the metrics' `bin_counts` when the code space is small (one O(N) pass, no sort), else by sorting."""
    if size > max(_DENSE_CODES, 4 * code.shape[0]):
        return np.unique(code, return_inverse=True, return_counts=True)
    full = bin_counts(code, size)  # (size,) rows per code
    uniq = np.flatnonzero(full)
    cell = np.empty(size, dtype=np.int64)
    cell[uniq] = np.arange(uniq.shape[0])
    return uniq, cell[code], full[uniq]


def cell_table(y_true: np.ndarray, preds: list, num_classes: int, grain: str) -> CellTable:
    """Cells of `grain` for one arm (preds = [y_pred]) or paired arms ([y_pred_a, y_pred_b]); labels 0..K-1."""
    k = 1 if grain == "correct" else num_classes
    t = np.zeros_like(y_true) if grain == "correct" else y_true
    projected = [p if grain == "confusion" else np.where(p == y_true, t, -1) for p in preds]
    radix = k + 1  # a predicted class -1..K-1 is one digit of the cell code
    if float(radix) ** (len(preds) + 1) >= 2.0 ** 62:
        raise ValueError(f"num_classes={num_classes} is too large for the count bootstrap")
    code = t.astype(np.int64)
    for p in projected:
        code = code * radix + (p + 1)
    uniq, cell_of_row, counts = _occupied_cells(code, radix ** (len(preds) + 1))
    cell_preds = []
    for _ in projected:  # decode the digits, last arm first
        uniq, digit = np.divmod(uniq, radix)
        cell_preds.insert(0, digit - 1)
    true = uniq
    sums = tuple((_groups(true, p == true), _groups(true, np.ones(true.shape, bool)), _groups(p, p >= 0))
                 for p in cell_preds)
    return CellTable(counts, true, tuple(cell_preds), cell_of_row.reshape(-1).astype(np.int64), k, sums)


def _group_sums(counts: np.ndarray, g: _Groups, k: int) -> np.ndarray:
    """(B, K) sums of the (B, C) counts by class; the column gather and the scatter are skipped when trivial."""
    if g.cols.size == 0:
        return np.zeros((counts.shape[0], k), dtype=np.int64)
    picked = counts if g.all_in_order else counts[:, g.cols]
    sums = np.add.reduceat(picked, g.starts, axis=1)
    if g.keys.size == k:  # every class has a group: keys are 0..K-1 in order
        return sums
    out = np.zeros((counts.shape[0], k), dtype=np.int64)
    out[:, g.keys] = sums
    return out


def class_counts(table: CellTable, counts: np.ndarray, arm: int = 0):
    """(B, C) cell counts -> tp, n_true, n_pred, each (B, K) int64, for one arm."""
    return tuple(_group_sums(counts, g, table.num_classes) for g in table.sums[arm])


def _by_multinomial(table: CellTable) -> bool:
    return table.counts.shape[0] * _ROW_DRAW_PER_CELL < table.cell_of_row.shape[0]


def draw_width(table: CellTable) -> int:
    """Elements drawn per resample (cells or rows): sets the chunk size."""
    return table.counts.shape[0] if _by_multinomial(table) else table.cell_of_row.shape[0]


def draw_cell_counts(table: CellTable, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, C) int64 counts of `size` bootstrap resamples (N rows drawn with replacement each)."""
    n, c = table.cell_of_row.shape[0], table.counts.shape[0]
    if _by_multinomial(table):
        return rng.multinomial(n, table.counts / n, size=size)
    rows = rng.integers(0, n, size=(size, n), dtype=np.int32 if n < 2 ** 31 else np.int64)
    cells = np.take(table.cell_of_row, rows)  # (size, N) int64 cell of each drawn row (take: faster than [])
    cells += (np.arange(size, dtype=np.int64) * c)[:, None]  # resample b counts into bins b*C .. b*C + C-1
    return np.bincount(cells.reshape(-1), minlength=size * c).reshape(size, c)


def jackknife_class_counts(table: CellTable, arm: int, cells: slice):
    """tp, n_true, n_pred (J, K) with one sample of each cell in `cells` left out (the leave-one-out data sets of
    every sample in that cell are identical, so a jackknife over rows needs one value per cell)."""
    base = class_counts(table, table.counts[None, :], arm)
    t, p = table.true[cells], table.preds[arm][cells]
    rows = np.arange(t.shape[0])
    tp, n_true, n_pred = (np.repeat(b, t.shape[0], axis=0) for b in base)  # (J, K) copies
    n_true[rows, t] -= 1
    hit = p == t
    tp[rows[hit], t[hit]] -= 1
    named = p >= 0
    n_pred[rows[named], p[named]] -= 1
    return tp, n_true, n_pred
