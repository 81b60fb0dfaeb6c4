"""Label-vs-label metrics: confusion matrix and everything derived from it (accuracy, P/R/F, report), top-k.

All scores are computed from the (K, K) confusion matrix, counted by `dlstudy.metrics.counts.confusion_counts`
(one cache-sized pass over the N label pairs), so every metric is O(N) once plus O(K^2). Values equal scikit-learn's
(same formulas, same float64 divisions) including `zero_division`. Labels are 0..K-1 (K from `num_classes` or max
label + 1), or anything via `classes=[...]`.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from dlstudy.metrics._validate import (UndefinedMetricWarning, check_labels, check_scores, encode_classes,
                                       label_pair, resolve_num_classes)
from dlstudy.metrics.counts import class_counts, confusion_counts

AVERAGES = (None, "micro", "macro", "weighted")


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None, *, classes: Sequence | None = None,
                     normalize: str | None = None) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class (scikit-learn's layout).

    normalize: None (int64 counts) | 'true' (rows sum to 1) | 'pred' (columns) | 'all'; 0/0 gives 0 like sklearn.

    >>> confusion_matrix([0, 1, 1], [0, 1, 0]).tolist()
    [[1, 0], [1, 1]]
    """
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', got {normalize!r}")
    if classes is not None:  # label names -> 0..K-1
        y_true, y_pred, num_classes = label_pair(y_true, y_pred, num_classes, classes)
    cm = confusion_counts(y_true, y_pred, num_classes)
    if normalize is None:
        return cm
    with np.errstate(divide="ignore", invalid="ignore"):
        if normalize == "true":
            out = cm / cm.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            out = cm / cm.sum(axis=0, keepdims=True)
        else:
            out = cm / cm.sum()
    return np.nan_to_num(out)


def accuracy_score(y_true: Any, y_pred: Any, *, classes: Sequence | None = None) -> float:
    """Fraction of samples whose predicted label equals the true one."""
    y_true, y_pred, _ = label_pair(y_true, y_pred, None, classes)
    return float(np.count_nonzero(y_true == y_pred) / y_true.shape[0])


def _divide(num: np.ndarray, den: np.ndarray, zero_division, what: str) -> np.ndarray:
    """num / den in float64; where den == 0 the result is `zero_division` (sklearn's _prf_divide)."""
    mask = den == 0
    den = np.asarray(den, dtype=np.float64).copy()
    den[mask] = 1.0
    out = np.asarray(num, dtype=np.float64) / den
    if np.any(mask):
        out[mask] = _zero_division_value(zero_division)
        if isinstance(zero_division, str):
            warnings.warn(f"{what} is ill-defined and set to 0.0 for {int(mask.sum())} label(s) "
                          f"(classes {np.flatnonzero(mask).tolist()[:10]}); use zero_division to control this",
                          UndefinedMetricWarning, stacklevel=3)
    return out


def _zero_division_value(zero_division) -> float:
    if isinstance(zero_division, str):
        if zero_division != "warn":
            raise ValueError(f"zero_division must be 'warn', 0, 1 or nan, got {zero_division!r}")
        return 0.0
    if zero_division in (0, 1):
        return float(zero_division)
    if isinstance(zero_division, float) and np.isnan(zero_division):
        return np.nan
    raise ValueError(f"zero_division must be 'warn', 0, 1 or nan, got {zero_division!r}")


def _nanaverage(a: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean ignoring NaN entries (NaN if all are NaN); weights that sum to 0 are ignored (as sklearn does)."""
    keep = ~np.isnan(a)
    if a.size == 0 or not keep.any():
        return float("nan")
    if weights is None:
        return float(np.nanmean(a))
    w = np.asarray(weights)[keep]
    if w.sum() == 0:
        return float(np.mean(a[keep]))
    return float(np.average(a[keep], weights=w))


def prf_from_confusion(cm: np.ndarray, beta: float = 1.0, average: str | None = None, zero_division=0.0):
    """precision, recall, F-beta, support from a (K, K) confusion matrix; see `precision_recall_fscore`."""
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    if not (beta >= 0):
        raise ValueError(f"beta must be >= 0, got {beta!r}")
    _zero_division_value(zero_division)  # validates before any work
    tp, true, pred = class_counts(cm)  # (K,) correct / true / predicted counts per class
    if average == "micro":
        tp, pred, true = tp.sum(keepdims=True), pred.sum(keepdims=True), true.sum(keepdims=True)
    precision = _divide(tp, pred, zero_division, "Precision")
    recall = _divide(tp, true, zero_division, "Recall")
    if np.isposinf(beta):
        fscore = recall
    elif beta == 0:
        fscore = precision
    else:
        b2 = beta ** 2
        # (1 + b2) tp / ((1 + b2) tp + b2 fn + fp): from counts, so P = R = 0 needs no special case
        fscore = _divide((1 + b2) * tp.astype(np.float64), b2 * true.astype(np.float64) + pred.astype(np.float64),
                         zero_division, "F-score")
    if average is None:
        return precision, recall, fscore, true
    weights = true if average == "weighted" else None
    return _nanaverage(precision, weights), _nanaverage(recall, weights), _nanaverage(fscore, weights), None


def precision_recall_fscore(y_true: Any, y_pred: Any, *, beta: float = 1.0, average: str | None = None,
                            zero_division=0.0, num_classes: int | None = None, classes: Sequence | None = None):
    """Per-class (average=None, arrays of shape (K,)) or averaged precision, recall, F-beta and support.

    average: None | 'micro' (global counts) | 'macro' (unweighted class mean) | 'weighted' (by support).
    zero_division: value for 0/0 (a class never predicted, or absent from y_true): 0, 1, nan ('nan' classes are
    left out of averages) or 'warn' (0 plus an UndefinedMetricWarning). Support is None when averaged, as in
    scikit-learn's `precision_recall_fscore_support`.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes, classes=classes)
    return prf_from_confusion(cm, beta=beta, average=average, zero_division=zero_division)


def per_class_accuracy(y_true: Any, y_pred: Any, num_classes: int | None = None, *, classes: Sequence | None = None,
                       zero_division=float("nan")) -> np.ndarray:
    """(K,) class-wise accuracy = recall of each class; classes absent from y_true get `zero_division` (NaN)."""
    tp, n_true, _ = class_counts(confusion_matrix(y_true, y_pred, num_classes, classes=classes))
    return _divide(tp, n_true, zero_division, "Per-class accuracy")


def balanced_accuracy_score(y_true: Any, y_pred: Any, num_classes: int | None = None, *,
                            classes: Sequence | None = None) -> float:
    """Mean recall over the classes present in y_true (classes only predicted are left out, with a warning)."""
    tp, true, pred = class_counts(confusion_matrix(y_true, y_pred, num_classes, classes=classes))
    present = true > 0
    if np.any(~present & (pred > 0)):
        warnings.warn("y_pred contains classes not in y_true", UndefinedMetricWarning, stacklevel=2)
    return float(np.mean(tp[present] / true[present]))


def top_k_accuracy_score(y_true: Any, y_score: Any, k: int = 5, *, num_classes: int | None = None,
                         classes: Sequence | None = None) -> float:
    """Fraction of samples whose true class is among the k highest of its (K,) scores.

    Ties are broken like scikit-learn (stable ascending argsort reversed): among equal scores the class with the
    larger index ranks first. Works in row chunks, never sorting the (N, K) scores.
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    y_score = check_scores(y_score, ndim=(2,))
    n, num_k = y_score.shape
    nc = resolve_num_classes(num_classes, classes)
    if nc is not None and nc != num_k:
        raise ValueError(f"y_score has {num_k} columns but there are {nc} classes")
    y_true = encode_classes(y_true, classes, "y_true") if classes is not None else check_labels(y_true, "y_true", num_k)
    if y_true.shape[0] != n:
        raise ValueError(f"y_true has {y_true.shape[0]} samples but y_score has {n} rows")
    cols = np.arange(num_k)
    step = max(1, (1 << 22) // num_k)  # rows per chunk: bounded (B, K) temporaries
    hits = 0
    for lo in range(0, n, step):
        s, t = y_score[lo:lo + step], y_true[lo:lo + step]
        s_true = s[np.arange(s.shape[0]), t][:, None]  # (B, 1) score of the true class
        ahead = (s > s_true).sum(axis=1) + ((s == s_true) & (cols > t[:, None])).sum(axis=1)
        hits += int(np.count_nonzero(ahead < k))
    return hits / n
