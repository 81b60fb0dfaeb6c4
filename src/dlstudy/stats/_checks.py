"""Argument checks shared by every function of `dlstudy.stats`: each names the argument at fault."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def check_confidence(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)) \
            or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    return float(confidence)


def check_choice(value, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_count(value, name: str, minimum: int = 0) -> int:
    """A whole number >= minimum (NumPy integers and integral floats such as 10.0 are accepted)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)) \
            or not float(value).is_integer() or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_seed(seed) -> int:
    return check_count(seed, "seed", 0)


def check_correctness(x, name: str) -> np.ndarray:
    """(N,) bool per-sample correctness (0/1 integers are accepted)."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D (N,) array of per-sample correctness, got shape {a.shape}")
    if a.dtype != bool:
        if a.dtype.kind not in "iuf" or not np.all((a == 0) | (a == 1)):
            raise ValueError(f"{name} must hold booleans (True = sample classified correctly) or 0/1")
        a = a.astype(bool)
    return a


def check_values(x, name: str) -> np.ndarray:
    """(S,) finite float64 values (one per seed)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers (one per seed), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} and {name_b} must have the same length (the same samples or seeds, in the "
                         f"same order), got {a.shape[0]} and {b.shape[0]}")
