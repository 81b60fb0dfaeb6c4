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


def check_labels(y: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    """(N,) integer labels in 0..num_classes-1 as a NumPy int64 array (torch tensors are copied to the host)."""
    y = to_numpy(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,) class labels, got shape {y.shape}")
    _check_nonempty(y, name)
    if y.dtype == bool:
        y = y.astype(np.int64)
    elif y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(f"{name} must hold integer class labels 0..K-1, got non-integer floats; "
                             "pass classes=[...] for other labels")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class labels 0..K-1, got dtype {y.dtype}; "
                         "pass classes=[...] to map other labels")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        bad = lo if lo < 0 else hi
        limit = f"0..{num_classes - 1}" if num_classes is not None else "0..K-1"
        raise ValueError(f"{name} holds label {bad}, outside {limit}")
    return y.astype(np.int64, copy=False)


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
    """Validated (y_true, y_pred, K) for the label-vs-label metrics."""
    num_classes = resolve_num_classes(num_classes, classes)
    if classes is not None:
        y_true = encode_classes(y_true, classes, "y_true")
        y_pred = encode_classes(y_pred, classes, "y_pred")
    else:
        y_true = check_labels(y_true, "y_true", num_classes)
        y_pred = check_labels(y_pred, "y_pred", num_classes)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {y_true.shape[0]} and {y_pred.shape[0]}")
    if num_classes is None:
        num_classes = int(max(y_true.max(), y_pred.max())) + 1
    return y_true, y_pred, int(num_classes)


def check_scores(y_score: Any, n: int | None = None, ndim: tuple[int, ...] = (1, 2), keep_cuda: bool = False):
    """Finite float scores, (N,) or (N, K); float dtype kept (float32 stays float32 for fast sorts)."""
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
        # min/max propagate NaN and show inf without an (N, K) boolean temporary
        finite = s.size == 0 or bool(np.isfinite(s.min()) and np.isfinite(s.max()))
    if s.ndim not in ndim:
        want = " or ".join({1: "(N,)", 2: "(N, K)"}[d] for d in ndim)
        raise ValueError(f"y_score must have shape {want}, got {tuple(s.shape)}")
    if s.shape[0] == 0:
        raise ValueError("y_score is empty: need at least one sample")
    if not finite:
        raise ValueError("y_score contains NaN or inf; scores must be finite (check the model outputs)")
    if n is not None and s.shape[0] != n:
        raise ValueError(f"y_true has {n} samples but y_score has {s.shape[0]} rows")
    return s
