"""ROC curve and ROC AUC (binary, and one-vs-rest for (N, K) scores), without an N x K one-hot.

ROC AUC is the Mann-Whitney statistic: for P positives among a pool of n scores,

    S   = sum over positives v of (#pool < v) + (#pool <= v)        (ties count 1/2)
    AUC = (S - P^2) / (2 P (n - P))

S is an exact integer and there is one final division, which equals scikit-learn's trapezoid over its ROC curve
to ~1e-16. S comes from value sorts (`np.sort`, float32 kept) and `searchsorted` (`_ranks`), much cheaper than
the stable argsort scikit-learn uses. One-vs-rest copies blocks of columns (at most 128 MB) out of the (N, K)
matrix, sorts each column in place (the columns of a block on one thread per core: NumPy's sort and searchsorted
release the GIL) and checks finiteness on its sorted ends (no separate pass over the scores).
CUDA tensors sort and `searchsorted` on the device.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from dlstudy.metrics._ranks import column_block, rank_sum_members, rank_sum_sorted
from dlstudy.metrics._validate import (NOT_FINITE, UndefinedMetricWarning, all_finite, check_labels, check_scores,
                                       encode_classes, is_tensor, on_cuda, resolve_num_classes, to_numpy)

_BLOCK_ELEMS = 1 << 23  # scores sorted at once in the micro average and on the GPU (32 MB in float32)
_BLOCK_BYTES = 1 << 27  # one-vs-rest column block (128 MB): bounds the extra memory; K = 10 float64 at N = 1e6
# fits one block, so the matrix is read once (two blocks read the 80-byte rows twice: a ~30% slower copy)
_THREAD_MIN_ROWS = 1 << 15  # one-vs-rest columns shorter than this are sorted on the calling thread
_MAX_THREADS = 16


# ------------------------------------------------------------------------------------------------ backends


class _NumpyOps:
    @staticmethod
    def sort(x):
        return np.sort(x, axis=None)

    rank_sum = staticmethod(rank_sum_sorted)

    @staticmethod
    def group_by_label(y_true, num_classes: int):
        """Sample indices sorted by label (int8/int16 keys take NumPy's radix sort) and per-class start offsets."""
        small = np.int8 if num_classes <= 1 << 7 else np.int16 if num_classes <= 1 << 15 else None
        keys = y_true.astype(small) if small else y_true  # labels 0..K-1 fit the narrow type
        order = np.argsort(keys, kind="stable")
        counts = np.bincount(y_true, minlength=num_classes)
        return order, np.concatenate([[0], np.cumsum(counts)]), counts


class _TorchOps:
    @staticmethod
    def sort(x):
        return x.reshape(-1).sort().values

    @staticmethod
    def rank_sum(pool_sorted, pos_sorted) -> int:
        import torch

        left = torch.searchsorted(pool_sorted, pos_sorted)
        right = torch.searchsorted(pool_sorted, pos_sorted, right=True)
        return int(left.sum()) + int(right.sum())

    @staticmethod
    def group_by_label(y_true, num_classes: int):
        import torch

        order = torch.argsort(y_true, stable=True)
        counts = torch.bincount(y_true, minlength=num_classes)
        starts = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return order, starts.cpu().numpy(), counts.cpu().numpy()

    @staticmethod
    def column_block(y_score, k0: int, k1: int):
        return y_score[:, k0:k1].T.contiguous().sort(dim=1).values


def _ops(x):
    return _TorchOps if is_tensor(x) else _NumpyOps


def _auc_from_rank_sum(rank_sum: int, n_pos: int, n_pool: int) -> float:
    n_neg = n_pool - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return (rank_sum - n_pos * n_pos) / (2 * n_pos * n_neg)  # exact integers, one final division


# ------------------------------------------------------------------------------------------------ ROC curve


def _roc_points(pool_sorted: np.ndarray, pos_sorted: np.ndarray, drop_intermediate: bool = True):
    """fpr, tpr, thresholds exactly as sklearn.metrics.roc_curve, from the sorted scores and sorted positives.

    Works on integer counts per distinct score, in increasing order (contiguous arrays, few (N,) temporaries),
    and reverses only the kept points. sklearn keeps point i (scores decreasing) iff the second difference of fps
    or tps is non-zero there, i.e. iff (positives, samples) at score i differ from those at the next score.
    """
    n = pool_sorted.shape[0]
    is_start = np.empty(n, dtype=bool)
    is_start[0] = True
    np.not_equal(pool_sorted[1:], pool_sorted[:-1], out=is_start[1:])
    starts = np.flatnonzero(is_start)  # (D,) first index of each distinct score, increasing
    values = pool_sorted[starts]
    n_all = np.empty_like(starts)  # samples at each distinct score
    np.subtract(starts[1:], starts[:-1], out=n_all[:-1])
    n_all[-1] = n - starts[-1]
    n_pos = np.bincount(np.searchsorted(values, pos_sorted), minlength=values.shape[0])  # each positive is a value
    tps = np.cumsum(n_pos)
    tps -= n_pos
    np.subtract(pos_sorted.shape[0], tps, out=tps)  # positives scoring >= each score
    keep = slice(None)
    if drop_intermediate and values.shape[0] > 2:
        keep = np.empty(values.shape[0], dtype=bool)
        keep[0] = keep[-1] = True
        np.not_equal(n_pos[:-2], n_pos[1:-1], out=keep[1:-1])
        keep[1:-1] |= n_all[:-2] != n_all[1:-1]
    tps, starts, values = tps[keep], starts[keep], values[keep]
    fps = n - starts
    fps -= tps  # negatives scoring >= each kept score
    fpr, tpr = _normalise(_with_origin(fps[::-1], 0.0), _with_origin(tps[::-1], 0.0))
    return fpr, tpr, _with_origin(values[::-1], np.inf)


def _with_origin(x: np.ndarray, first: float) -> np.ndarray:
    out = np.empty(x.shape[0] + 1, dtype=np.float64)
    out[0] = first
    out[1:] = x
    return out


def _normalise(fps: np.ndarray, tps: np.ndarray):
    """Counts -> rates in place (float64 counts are exact, so this equals sklearn's fps / fps[-1])."""
    if fps[-1] <= 0:
        warnings.warn("No negative samples in y_true, false positive value should be meaningless",
                      UndefinedMetricWarning, stacklevel=4)
        fps[:] = np.nan
    else:
        fps /= fps[-1]
    if tps[-1] <= 0:
        warnings.warn("No positive samples in y_true, true positive value should be meaningless",
                      UndefinedMetricWarning, stacklevel=4)
        tps[:] = np.nan
    else:
        tps /= tps[-1]
    return fps, tps


def _binary_target(y_true: Any, n: int, pos_label) -> np.ndarray:
    """(N,) bool positives; y_true may hold at most two distinct values."""
    y = to_numpy(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D (N,), got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"y_true has {y.shape[0]} samples but y_score has {n}")
    if y.dtype == bool and pos_label in (1, True):
        return y
    pos = y == pos_label
    other = y[~pos]
    if other.size and np.any(other != other[0]):
        raise ValueError(f"y_true must be binary (pos_label={pos_label!r} and one other value); found more "
                         "than two distinct labels: use roc_auc_score with (N, K) scores for multiclass")
    return pos


def roc_curve(y_true: Any, y_score: Any, *, pos_label=1, drop_intermediate: bool = True):
    """fpr, tpr, thresholds (float64, thresholds decreasing from inf) exactly as sklearn.metrics.roc_curve.

    y_true: (N,) binary labels; samples equal to `pos_label` are positives. y_score: (N,) scores. Ties share one
    threshold. drop_intermediate removes collinear points (they do not change the curve or its area).
    """
    s = to_numpy(check_scores(y_score, ndim=(1,)))
    pos = _binary_target(y_true, s.shape[0], pos_label)
    return _roc_points(np.sort(s), np.sort(s[pos]), drop_intermediate)


def micro_roc_curve(y_true: Any, y_score: Any, *, drop_intermediate: bool = True):
    """ROC curve of the pooled one-vs-rest problem (all N*K scores; positives = each row's true-class score).

    Equals sklearn's roc_curve(label_binarize(y_true).ravel(), y_score.ravel()) without building the one-hot.
    """
    s = to_numpy(check_scores(y_score, ndim=(2,)))
    y = check_labels(y_true, "y_true", s.shape[1])
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} samples but y_score has {s.shape[0]} rows")
    return _roc_points(np.sort(s, axis=None), np.sort(s[np.arange(s.shape[0]), y]), drop_intermediate)


def auc(x: Any, y: Any) -> float:
    """Area under a curve by the trapezoid rule; x must be monotonic (increasing or decreasing)."""
    x, y = to_numpy(x).astype(np.float64), to_numpy(y).astype(np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of the same length, got {x.shape} and {y.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"At least 2 points are needed to compute area under curve, but x.shape = {x.shape[0]}")
    dx = np.diff(x)
    direction = 1.0
    if np.any(dx < 0):
        if not np.all(dx <= 0):
            raise ValueError(f"x is neither increasing nor decreasing: {x}")
        direction = -1.0
    return float(direction * np.sum(dx * (y[1:] + y[:-1]) / 2.0))


# ------------------------------------------------------------------------------------------------ ROC AUC


def ovr_auc_per_class(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """(K,) one-vs-rest AUC (NaN where a class has no positives or no negatives) and (K,) positive counts.

    y_true: validated (N,) labels (NumPy int64, or a long tensor on the scores' device); y_score: (N, K) floats,
    finite (on NumPy a NaN or inf raises ValueError, found on the sorted columns).
    On NumPy the columns of a block are sorted and counted on `_worker_count` threads (np.sort and searchsorted
    release the GIL), and the labels are grouped while the first block is copied.
    """
    if is_tensor(y_score):
        return _ovr_auc_torch(y_true, y_score)
    n, k = y_score.shape
    workers = _worker_count(n, k)
    if workers == 1:
        return _ovr_auc_numpy(y_true, y_score, map, _NumpyOps.group_by_label(y_true, k))
    with ThreadPoolExecutor(workers) as pool:
        grouped = pool.submit(_NumpyOps.group_by_label, y_true, k)
        return _ovr_auc_numpy(y_true, y_score, pool.map, grouped)


def _worker_count(n: int, k: int) -> int:
    """Threads for one-vs-rest AUC: one per core this process may use (OMP_NUM_THREADS caps it, as for NumPy's
    BLAS and torch), one when columns are too short for a hand-off (~50 us) to pay."""
    if n < _THREAD_MIN_ROWS or k < 2:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    cap = os.environ.get("OMP_NUM_THREADS", "")
    if cap.isdigit() and int(cap) > 0:
        cores = min(cores, int(cap))
    return max(1, min(cores, k, _MAX_THREADS))


def _ovr_auc_numpy(y_true, y_score, map_columns, grouped):
    """`grouped`: group_by_label's result, or a future of it (computed while the first block is copied)."""
    n, k = y_score.shape
    aucs = np.full(k, np.nan)
    step = max(1, min(k, _BLOCK_BYTES // (n * y_score.dtype.itemsize)))  # columns per block
    buffer = np.empty((step, n), dtype=y_score.dtype)  # reused by every block: paged in once
    for k0 in range(0, k, step):
        block = column_block(y_score, k0, min(k, k0 + step), out=buffer)  # (b, N) columns, sorted in place below
        if not isinstance(grouped, tuple):
            grouped = grouped.result()
        order, starts, counts = grouped

        def column_auc(j: int) -> float:
            col, c = block[j], k0 + j
            n_pos = int(counts[c])
            if not 0 < n_pos < n:
                if not all_finite(col):
                    raise ValueError(NOT_FINITE)
                return float("nan")
            pos = np.sort(col[order[starts[c]:starts[c + 1]]])  # (P,) scores of class c's samples
            col.sort()
            if not (np.isfinite(col[0]) and np.isfinite(col[-1])):  # NaN sorts last, -inf first, +inf last
                raise ValueError(NOT_FINITE)
            return _auc_from_rank_sum(rank_sum_members(col, pos), n_pos, n)

        aucs[k0:k0 + block.shape[0]] = list(map_columns(column_auc, range(block.shape[0])))
    return aucs, grouped[2]


def _ovr_auc_torch(y_true, y_score):
    """GPU path: sort column blocks on the device, count ranks with searchsorted."""
    ops = _TorchOps
    n, k = y_score.shape
    order, starts, counts = ops.group_by_label(y_true, k)
    aucs = np.full(k, np.nan)
    step = max(1, min(k, _BLOCK_ELEMS // n))  # columns per sorted block
    for k0 in range(0, k, step):
        block = ops.column_block(y_score, k0, min(k, k0 + step))  # (b, N), each row sorted
        for j in range(block.shape[0]):
            c = k0 + j
            n_pos = int(counts[c])
            if 0 < n_pos < n:
                pos = ops.sort(y_score[order[starts[c]:starts[c + 1]], c])  # (P,) scores of class c's samples
                aucs[c] = _auc_from_rank_sum(ops.rank_sum(block[j], pos), n_pos, n)
    return aucs, counts


def micro_auc(y_true, y_score) -> float:
    """AUC of the pooled one-vs-rest problem: all N*K scores, positives = each row's true-class score."""
    ops = _ops(y_score)
    n, k = y_score.shape
    rows = np.arange(n) if not is_tensor(y_score) else _torch_arange(n, y_score.device)
    pos = ops.sort(y_score[rows, y_true])  # (N,) sorted true-class scores
    step = max(1, min(k, _BLOCK_ELEMS // n))
    total = 0
    for k0 in range(0, k, step):
        # rank counts are additive over disjoint parts of the pool: sort the pool one column block at a time
        total += ops.rank_sum(ops.sort(y_score[:, k0:k0 + step]), pos)
    return _auc_from_rank_sum(total, n, n * k)


def _torch_arange(n, device):
    import torch

    return torch.arange(n, device=device)


def _warn_undefined(aucs: np.ndarray, counts: np.ndarray, n: int, class_names) -> None:
    bad = np.flatnonzero(np.isnan(aucs))
    if bad.size == 0:
        return
    names = [f"{c} ({class_names[c]!r})" if class_names is not None else str(c) for c in bad[:20]]
    why = ["no positives" if counts[c] == 0 else "no negatives" for c in bad[:20]]
    listed = ", ".join(f"class {nm}: {w}" for nm, w in zip(names, why)) + (" ..." if bad.size > 20 else "")
    warnings.warn(f"ROC AUC is undefined for {bad.size} class(es) and set to NaN ({listed}); macro/weighted "
                  f"averages use the {aucs.size - bad.size} defined class(es)", UndefinedMetricWarning, stacklevel=3)


def _multiclass_inputs(y_true, y_score, num_classes, classes, check_finite: bool = True):
    """Validated (labels, scores) on one backend: NumPy, or torch when the scores live on a GPU.

    check_finite=False leaves the NumPy finiteness check to `ovr_auc_per_class` (on the sorted columns).
    """
    s = check_scores(y_score, ndim=(2,), keep_cuda=True, check_finite=check_finite)
    n, k = s.shape
    nc = resolve_num_classes(num_classes, classes)
    if k < 2 or (nc is not None and nc != k):
        raise ValueError(f"y_score has {k} columns; need one per class (>= 2{f', here {nc}' if nc else ''})")
    if classes is not None:
        y = encode_classes(y_true, classes, "y_true")
    elif on_cuda(y_true):
        y = y_true
        if y.ndim != 1 or y.numel() == 0 or int(y.min()) < 0 or int(y.max()) >= k:
            raise ValueError(f"y_true must be non-empty (N,) labels in 0..{k - 1}")
    else:
        y = check_labels(y_true, "y_true", k)
    if y.shape[0] != n:
        raise ValueError(f"y_true has {y.shape[0]} samples but y_score has {n} rows")
    if is_tensor(s):
        import torch

        y = torch.as_tensor(y, device=s.device).long()
    return y, s


def roc_auc_score(y_true: Any, y_score: Any, *, average: str | None = "macro", num_classes: int | None = None,
                  classes: Sequence | None = None, class_names: Sequence[str] | None = None):
    """ROC AUC for (N,) binary scores, or one-vs-rest for (N, K) scores (any scores: need not sum to 1).

    Binary: y_true holds two values; positives are 1 (or classes[1] when `classes` is given). Returns a float.
    Multiclass, average: 'macro' (mean over classes), 'weighted' (by positives), 'micro' (pooled N*K problem,
    as sklearn's multi_class='ovr', average='micro'), None ((K,) array).
    Where sklearn raises (a class with no positives or no negatives in y_true) the class's AUC is NaN, an
    UndefinedMetricWarning names it, and macro/weighted average over the defined classes (NaN if none is).
    """
    if average not in (None, "macro", "micro", "weighted"):
        raise ValueError(f"average must be 'macro', 'micro', 'weighted' or None, got {average!r}")
    if (y_score.ndim if is_tensor(y_score) else np.ndim(y_score)) == 1:
        s = to_numpy(check_scores(y_score, ndim=(1,)))
        pos_label = 1
        if classes is not None:
            if len(classes) != 2:
                raise ValueError(f"binary y_score needs exactly 2 classes, got {len(classes)}")
            y_true, pos_label = encode_classes(y_true, classes, "y_true"), 1
        pos = _binary_target(y_true, s.shape[0], pos_label)
        n_pos = int(np.count_nonzero(pos))
        value = float("nan")
        if 0 < n_pos < s.shape[0]:
            value = _auc_from_rank_sum(rank_sum_members(np.sort(s), np.sort(s[pos])), n_pos, s.shape[0])
        if np.isnan(value):
            warnings.warn(f"ROC AUC is undefined: y_true has only {'negatives' if not pos.any() else 'positives'}; "
                          "returning NaN", UndefinedMetricWarning, stacklevel=2)
        return value
    y, s = _multiclass_inputs(y_true, y_score, num_classes, classes, check_finite=average == "micro")
    if average == "micro":
        return micro_auc(y, s)
    aucs, counts = ovr_auc_per_class(y, s)  # checks finiteness on the sorted columns
    if class_names is None and classes is not None:
        class_names = [str(c) for c in classes]
    _warn_undefined(aucs, counts, s.shape[0], class_names)
    if average is None:
        return aucs
    defined = ~np.isnan(aucs)
    if not defined.any():
        return float("nan")
    if average == "weighted":
        return float(np.average(aucs[defined], weights=counts[defined]))
    return float(np.mean(aucs[defined]))
