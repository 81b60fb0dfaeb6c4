"""Many comparisons at once: Holm's step-down adjustment of p-values."""

from __future__ import annotations

import numpy as np


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order.

    Sorted ascending, p_(i) becomes max_{j <= i} (m - j + 1) p_(j), capped at 1 (monotone in p; equals
    statsmodels' multipletests(method='holm')). Reject the hypotheses whose adjusted p is below alpha: the
    family-wise error rate over all m tests stays at alpha.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be a 1-D sequence, got shape {p.shape}")
    if np.any(~((p >= 0) & (p <= 1))):
        raise ValueError("pvalues must lie in [0, 1] (no NaN)")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(np.maximum.accumulate(p[order] * np.arange(m, 0, -1)), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out
