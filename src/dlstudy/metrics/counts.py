"""The counting core: (true, predicted) label pairs -> confusion counts -> per-class counts -> label metrics.

Count once, reduce many (torchmetrics' `_stat_scores_update` / `_reduce` split): `confusion_counts` is the one place
label pairs are counted; `confusion_matrix`, `compute_metrics` (the Evaluator) and the bootstrap of `dlstudy.stats`
all start from it or from `bin_counts`, the weighted bincount it rests on. A resample axis is a leading B:

    weights (B, N) integer resample counts  ->  confusion counts (B, K, K)  ->  tp, n_true, n_pred (B, K)  ->  (B,)

The metrics of counts at the bottom (accuracy, balanced accuracy, macro P/R/F1) take (B, K) class counts; the
metric table (`dlstudy.metrics.table`) names them and the bootstrap evaluates them on resampled counts.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from dlstudy.metrics._validate import label_array, label_pair, on_cuda, resolve_num_classes

_PAIR_CHUNK = 1 << 16  # label pairs per bincount: the chunk and its int64 bins stay in cache


def bin_counts(bins: np.ndarray, size: int, weights: np.ndarray | None = None) -> np.ndarray:
    """(size,) int64 occurrences of each bin 0..size-1 among (N,) int bins; with (B, N) integer weights, (B, size):
    row b counts sample i weights[b, i] times (a bootstrap resample as counts)."""
    if weights is None:
        return np.bincount(bins, minlength=size).astype(np.int64, copy=False)
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[1] != bins.shape[0] or w.dtype.kind not in "iub":
        raise ValueError(f"weights must be (B, {bins.shape[0]}) integer counts, got {w.dtype} {w.shape}")
    b = w.shape[0]
    flat = (bins[None, :].astype(np.int64) + (np.arange(b, dtype=np.int64) * size)[:, None]).reshape(-1)
    # float64 sums of integer counts: exact below 2^53
    summed = np.bincount(flat, weights=w.reshape(-1).astype(np.float64), minlength=b * size)
    return summed.astype(np.int64).reshape(b, size)


def _cuda_confusion_matrix(y_true, y_pred, num_classes: int | None) -> np.ndarray:
    """Torch path for labels already on a GPU: one bincount on the device, only K*K counts come back."""
    import torch

    if y_true.ndim != 1 or y_true.shape != y_pred.shape or y_true.numel() == 0:
        raise ValueError(f"y_true and y_pred must be non-empty (N,) of equal length, got {tuple(y_true.shape)} "
                         f"and {tuple(y_pred.shape)}")
    y_true, y_pred = y_true.long(), y_pred.long()
    lo = int(torch.minimum(y_true.min(), y_pred.min()))
    hi = int(torch.maximum(y_true.max(), y_pred.max()))
    k = num_classes if num_classes is not None else hi + 1
    if lo < 0 or hi >= k:
        raise ValueError(f"labels must lie in 0..{k - 1}, found {lo if lo < 0 else hi}")
    counts = torch.bincount(y_true * k + y_pred, minlength=k * k)
    return counts.reshape(k, k).cpu().numpy().astype(np.int64)


def _chunked_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None) -> np.ndarray | None:
    """(K, K) int64 counts of (true, predicted) pairs in one pass over the labels, or None for the general path.

    Each chunk of 2^16 pairs is range-checked while it is in cache (viewed as unsigned, a negative label is the
    largest value, so one `max` checks both ends), combined into bins t*K + p in a reused int64 buffer (the dtype
    `bincount` reads without a copy; int32 labels are widened in cache) and counted. Without num_classes, K grows
    with the largest label seen (the counts so far move into the larger table). The labels are read from memory
    once and no (N,) temporary is paged in. None when a label is out of range (the general path raises the
    precise error) or K*K outgrows a chunk (one bincount over all N bins is then cheaper).
    """
    n, k = y_true.shape[0], num_classes or 1
    if k * k > _PAIR_CHUNK:
        return None
    cm = np.zeros((k, k), dtype=np.int64)
    bins = np.empty(min(n, _PAIR_CHUNK), dtype=np.int64)
    views = [y.view(f"u{y.dtype.itemsize}") for y in (y_true, y_pred)]
    # a negative label viewed as unsigned is >= 2^(bits-1): past the K*K bound below, except int8's 128..255
    int8 = np.int8 in (y_true.dtype, y_pred.dtype)
    for lo in range(0, n, _PAIR_CHUNK):
        hi = max(int(v[lo:lo + _PAIR_CHUNK].max()) for v in views)
        if hi >= k:
            if num_classes is not None or (hi + 1) ** 2 > _PAIR_CHUNK or (int8 and hi >= 128):
                return None
            grown = np.zeros((hi + 1, hi + 1), dtype=np.int64)
            grown[:k, :k] = cm
            cm, k = grown, hi + 1
        b = bins[:min(_PAIR_CHUNK, n - lo)]
        np.multiply(y_true[lo:lo + _PAIR_CHUNK], k, out=b, dtype=np.int64)
        np.add(b, y_pred[lo:lo + _PAIR_CHUNK], out=b, dtype=np.int64)
        cm += np.bincount(b, minlength=k * k).reshape(k, k)
    return cm


def confusion_counts(y_true: Any, y_pred: Any, num_classes: int | None = None,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """(K, K) int64 counts of (true, predicted) label pairs, rows = true class; with (B, N) integer resample counts
    `weights`, (B, K, K): the confusion counts of each resample. Labels are integers 0..K-1 (K = num_classes, else
    the largest label + 1); NumPy, lists or torch tensors (CUDA tensors are counted on the device)."""
    num_classes = resolve_num_classes(num_classes, None)
    if weights is None and on_cuda(y_true) and on_cuda(y_pred):
        return _cuda_confusion_matrix(y_true, y_pred, num_classes)
    if weights is None:  # the common case: one cache-sized pass
        t, p = label_array(y_true, "y_true"), label_array(y_pred, "y_pred")
        cm = _chunked_counts(t, p, num_classes) if t.shape == p.shape else None
        if cm is not None:
            return cm
    y_true, y_pred, k = label_pair(y_true, y_pred, num_classes, None)  # says precisely what is wrong, if anything
    counts = bin_counts(np.multiply(y_true, k, dtype=np.int64) + y_pred, k * k, weights)
    return counts.reshape(*counts.shape[:-1], k, k)


def class_counts(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tp, n_true, n_pred, each (..., K) int64, from (..., K, K) confusion counts (rows = true class)."""
    return np.diagonal(cm, axis1=-2, axis2=-1).astype(np.int64), cm.sum(axis=-1), cm.sum(axis=-2)


# ------------------------------------------------------------------ metrics of class counts, (B, K) -> (B,)
# zero_division = 0 like dlstudy.metrics' defaults: a class never predicted has precision 0, never true recall 0;
# tp is 0 wherever the denominator is, so tp / max(den, 1) needs no mask.

CountMetric = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def accuracy(tp, n_true, n_pred):
    return tp.sum(axis=1) / n_true.sum(axis=1)


def balanced_accuracy(tp, n_true, n_pred):
    # mean recall over the classes present in y_true
    return (tp / np.maximum(n_true, 1)).sum(axis=1) / np.count_nonzero(n_true, axis=1)


def precision_macro(tp, n_true, n_pred):
    return (tp / np.maximum(n_pred, 1)).mean(axis=1)


def recall_macro(tp, n_true, n_pred):
    return (tp / np.maximum(n_true, 1)).mean(axis=1)


def f1_macro(tp, n_true, n_pred):
    return (2 * tp / np.maximum(n_true + n_pred, 1)).mean(axis=1)
