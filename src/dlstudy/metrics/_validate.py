"""Input checks and conversions shared by every metric.

Every public metric accepts NumPy arrays, lists or torch tensors. CPU tensors are turned into NumPy arrays (NumPy
is the fast path on CPU); CUDA tensors stay on the GPU only where a function has a torch path (`on_cuda`), and are
copied to the host otherwise. Bad input raises `ValueError` naming the argument and what was expected.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class UndefinedMetricWarning(UserWarning):
    """A metric is ill-defined for some class (no positives, no predictions); a fallback value was returned."""


def is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def on_cuda(x: Any) -> bool:
    """True for a torch tensor living on a GPU: the only case where a torch path beats NumPy."""
    return is_tensor(x) and x.device.type == "cuda"


def to_numpy(x: Any) -> np.ndarray:
    if is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_nonempty(a, name: str) -> None:
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one sample")


def encode_classes(y: Any, classes: Sequence, name: str) -> np.ndarray:
    """Map arbitrary labels (strings, ints, ...) to 0..K-1 by their position in `classes`."""
    classes = np.asarray(classes)
    if classes.ndim != 1 or classes.size == 0:
        raise ValueError(f"classes must be a non-empty 1-D sequence, got shape {classes.shape}")
    order = np.argsort(classes, kind="stable")
    sorted_classes = classes[order]
    if np.any(sorted_classes[1:] == sorted_classes[:-1]):
        raise ValueError("classes must be unique")
    y = to_numpy(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {y.shape}")
    _check_nonempty(y, name)
    pos = np.clip(np.searchsorted(sorted_classes, y), 0, classes.size - 1)
    unknown = sorted_classes[pos] != y
    if np.any(unknown):
        bad = y[np.flatnonzero(unknown)[0]]
        bad = bad.item() if hasattr(bad, "item") else bad
        raise ValueError(f"{name} holds label {bad!r}, which is not in classes ({classes.size} given)")
    return order[pos]


def label_array(y: Any, name: str) -> np.ndarray:
    """(N,) non-empty NumPy integer labels in native byte order (bool as uint8, integral floats as int64); the
    range is not checked here (see `labels_and_max`). Integer input comes back without a copy."""
    y = to_numpy(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,) class labels, got shape {y.shape}")
    _check_nonempty(y, name)
    if y.dtype == bool:
        y = y.view(np.uint8)
    elif y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(f"{name} must hold integer class labels 0..K-1, got non-integer floats; "
                             "pass classes=[...] for other labels")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class labels 0..K-1, got dtype {y.dtype}; "
                         "pass classes=[...] to map other labels")
    if not y.dtype.isnative:
        y = y.astype(y.dtype.newbyteorder("="))
    return y


def labels_and_max(y: Any, name: str, num_classes: int | None = None, keep_dtype: bool = False):
    """((N,) validated integer labels in 0..num_classes-1, their maximum).

    One pass over integer labels: viewed as unsigned, a negative label becomes the largest value, so a single
    `max` checks both ends. int64 and, with keep_dtype, any other integer dtype come back without a copy.
    """
    y = label_array(y, name)
    hi = int(y.view(f"u{y.dtype.itemsize}").max())
    if y.dtype.kind == "i" and hi >= 1 << (8 * y.dtype.itemsize - 1):  # the sign bit: some label is negative
        hi = int(y.min())
    if hi < 0 or (num_classes is not None and hi >= num_classes):
        limit = f"0..{num_classes - 1}" if num_classes is not None else "0..K-1"
        raise ValueError(f"{name} holds label {hi}, outside {limit}")
    if not keep_dtype or y.dtype == np.uint64:
        y = y.astype(np.int64, copy=False)
    return y, hi


def check_labels(y: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    """(N,) integer labels in 0..num_classes-1 as a NumPy int64 array (torch tensors are copied to the host)."""
    return labels_and_max(y, name, num_classes)[0]


def resolve_num_classes(num_classes: int | None, classes: Sequence | None) -> int | None:
    """num_classes from the argument, the `classes` list, or None (inferred later from the labels)."""
    if classes is not None:
        k = len(classes)
        if num_classes is not None and num_classes != k:
            raise ValueError(f"num_classes={num_classes} but classes has {k} entries")
        return k
    if num_classes is not None and (not isinstance(num_classes, (int, np.integer)) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return num_classes


def label_pair(y_true: Any, y_pred: Any, num_classes: int | None, classes: Sequence | None):
    """Validated (y_true, y_pred, K) for the label-vs-label metrics.

    The labels keep their integer dtype (int64, int32, ...): callers index and count with them directly.
    """
    num_classes = resolve_num_classes(num_classes, classes)
    if classes is not None:
        y_true = encode_classes(y_true, classes, "y_true")
        y_pred = encode_classes(y_pred, classes, "y_pred")
        hi = num_classes - 1
    else:
        y_true, hi_true = labels_and_max(y_true, "y_true", num_classes, keep_dtype=True)
        y_pred, hi_pred = labels_and_max(y_pred, "y_pred", num_classes, keep_dtype=True)
        hi = max(hi_true, hi_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {y_true.shape[0]} and {y_pred.shape[0]}")
    return y_true, y_pred, int(num_classes if num_classes is not None else hi + 1)


NOT_FINITE = "y_score contains NaN or inf; scores must be finite (check the model outputs)"


def all_finite(s: np.ndarray) -> bool:
    """True when every value is finite: one pass (a sum); min/max only when the sum itself overflows."""
    if s.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(s.sum()):  # NaN and inf propagate into the sum, so a finite sum means finite values
            return True
    return bool(np.isfinite(s.min()) and np.isfinite(s.max()))  # NaN/inf, or finite values whose sum overflows


def check_scores(y_score: Any, n: int | None = None, ndim: tuple[int, ...] = (1, 2), keep_cuda: bool = False,
                 check_finite: bool = True):
    """Finite float scores, (N,) or (N, K); float dtype kept (float32 stays float32 for fast sorts).

    check_finite=False skips the NumPy finiteness pass for a caller that sorts the scores and checks the sorted
    ends itself (NaN sorts last, -inf first, +inf last), raising ValueError(NOT_FINITE).
    """
    if keep_cuda and on_cuda(y_score):
        s = y_score.detach()
        if not s.is_floating_point():
            s = s.double()
        finite = bool(s.isfinite().all()) if s.numel() else True
    else:
        s = to_numpy(y_score)
        if s.dtype.kind not in "fiub":
            raise ValueError(f"y_score must hold numbers, got dtype {s.dtype}")
        if s.dtype.kind != "f" or s.dtype.itemsize < 4:
            s = s.astype(np.float64)
        finite = not check_finite or all_finite(s)
    if s.ndim not in ndim:
        want = " or ".join({1: "(N,)", 2: "(N, K)"}[d] for d in ndim)
        raise ValueError(f"y_score must have shape {want}, got {tuple(s.shape)}")
    if s.shape[0] == 0:
        raise ValueError("y_score is empty: need at least one sample")
    if not finite:
        raise ValueError(NOT_FINITE)
    if n is not None and s.shape[0] != n:
        raise ValueError(f"y_true has {n} samples but y_score has {s.shape[0]} rows")
    return s
