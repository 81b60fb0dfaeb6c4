"""Input checks of `LinearSVM`: the design matrix as a tensor without needless copies, labels, sample weights."""

from __future__ import annotations

import warnings

import numpy as np
import torch

FLOATS = (torch.float32, torch.float64)
CHUNK_ELEMENTS = 1 << 22  # rows are processed in chunks of ~4M entries (32 MB in float64): bounded temporaries


def row_chunks(n: int, d: int):
    """Slices of rows covering range(n), each of about CHUNK_ELEMENTS entries of a (n, d) matrix."""
    step = max(1, CHUNK_ELEMENTS // max(d, 1))
    return (slice(i, i + step) for i in range(0, n, step))


def storage_dtype(src: torch.dtype, dtype: torch.dtype) -> torch.dtype:
    """The precision X is kept in: its own when floating (float32 is never widened: the solver multiplies it in
    float32 and keeps its state in `dtype`), narrowed to float32 when dtype is float32; `dtype` for integers."""
    if dtype == torch.float32 or src not in FLOATS:
        return dtype
    return src


def as_2d_tensor(X, where: str, dtype: torch.dtype) -> torch.Tensor:
    """X as a (N, D) tensor in storage_dtype (no copy when it already is one); ValueError naming `where` otherwise."""
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{where}: sparse X is not supported (a dense solver); pass X.toarray()")
    if isinstance(X, torch.Tensor):
        T = X.detach().cpu() if X.device.type != "cpu" else X.detach()
    else:
        arr = np.asarray(X)
        if arr.dtype.kind == "c":
            raise ValueError(f"{where}: Complex data not supported, got X of dtype {arr.dtype}")
        if arr.dtype.kind == "O":
            arr = arr.astype(np.float64)  # numbers stored as objects; anything else raises numpy's TypeError
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{where}: X must be numeric, got dtype {arr.dtype}")
        with warnings.catch_warnings():  # read-only arrays (memmaps) are fine: X is never written to
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            T = torch.from_numpy(np.ascontiguousarray(arr))
    if T.ndim != 2:
        raise ValueError(f"{where}: X must be 2-D (n_samples, n_features), got shape {tuple(T.shape)}. Reshape your "
                         f"data with X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample.")
    T = T.to(storage_dtype(T.dtype, dtype))
    for axis, what in ((0, "sample"), (1, "feature")):
        if T.shape[axis] == 0:  # scikit-learn's wording
            raise ValueError(f"{where}: X is empty: 0 {what}(s) (shape={tuple(T.shape)}) while a minimum of 1 "
                             f"is required.")
    for rows in row_chunks(*T.shape):  # chunked, so the check never allocates a full (N, D) mask
        bad = ~torch.isfinite(T[rows])
        if bool(bad.any()):
            r, c = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"{where}: X contains NaN or inf (first at row {rows.start + r}, column {c}: "
                             f"{float(T[rows.start + r, c])})")
    return T


def check_sample_weight(sample_weight, n: int, where: str) -> np.ndarray | None:
    """(n,) float64 non-negative finite weights, not all zero (a scalar is broadcast), or None."""
    if sample_weight is None:
        return None
    sw = np.asarray(sample_weight, dtype=np.float64)
    if sw.ndim == 0:
        sw = np.full(n, float(sw))
    if sw.shape != (n,):
        raise ValueError(f"{where}: sample_weight must have shape ({n},), one weight per row of X; "
                         f"got {sw.shape}")
    if not np.isfinite(sw).all() or (sw < 0).any():
        raise ValueError(f"{where}: sample_weight must be finite and >= 0")
    if not sw.any():
        raise ValueError(f"{where}: sample_weight is zero for every sample; at least one weight must be > 0")
    return sw


def may_share_memory(X, T: torch.Tensor) -> bool:
    """Whether the tensor T made by as_2d_tensor from X may be the caller's memory (then it must not be written)."""
    if isinstance(X, torch.Tensor):
        return X.device.type == "cpu" and X.data_ptr() == T.data_ptr()
    try:
        arr = np.asarray(X)  # a view for arrays, memmaps and single-dtype DataFrames
    except Exception:
        return True
    return arr.__array_interface__["data"][0] == T.data_ptr()
