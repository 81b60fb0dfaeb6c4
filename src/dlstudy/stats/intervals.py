"""`metric_interval`: the interval of one metric of one run's test predictions, for run and study reports alike.

Which interval a metric gets is the metric table's `interval` column (`dlstudy.metrics.table`): 'proportion'
(accuracy: a count of hits out of N, Wilson or Clopper-Pearson) or 'bootstrap' (a percentile bootstrap over the
test samples). Callers choose only the resamples, seed and confidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dlstudy.metrics._validate import check_labels
from dlstudy.metrics.table import METRICS
from dlstudy.stats.bootstrap import METHODS, bootstrap_ci
from dlstudy.stats.proportions import PROPORTION_METHODS, proportion_ci

_NAMES = {"wilson": "Wilson", "clopper-pearson": "Clopper-Pearson", "percentile": "bootstrap", "bca": "BCa bootstrap"}


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    method: str  # how it was made, for a table: 'Wilson', 'Clopper-Pearson', 'bootstrap', 'BCa bootstrap'


def _kind(key: str) -> str:
    spec = METRICS.get(key)
    if spec is None or not (spec.interval or spec.bootstrappable):
        known = [k for k, m in METRICS.items() if m.interval or m.bootstrappable]
        raise ValueError(f"no interval for metric {key!r}; one of {', '.join(known)}")
    return spec.interval or "bootstrap"


def metric_interval(y_true: Any, y_score: Any, key: str, confidence: float = 0.95, *, resamples: int = 2000,
                    seed: int = 0, num_classes: int | None = None, method: str | None = None) -> Interval:
    """Estimate and interval of metric `key` on (N,) labels and (N, K) scores (or (N,) predicted labels).

    method: for a 'proportion' metric 'wilson' (default) | 'clopper-pearson'; for a 'bootstrap' one 'percentile'
    (default) | 'bca', with `resamples` and `seed`.
    """
    kind = _kind(key)
    if kind == "proportion":
        method = method or "wilson"
        if method not in PROPORTION_METHODS:
            raise ValueError(f"method for {key} must be one of {PROPORTION_METHODS}, got {method!r}")
        y = check_labels(y_true, "y_true", num_classes)
        y_pred = y_score.argmax(axis=1) if np.ndim(y_score) == 2 else np.asarray(y_score)
        hits, n = int(np.count_nonzero(y_pred == y)), y.shape[0]
        return Interval(hits / n, *proportion_ci(hits, n, confidence, method), _NAMES[method])
    method = method or "percentile"
    if method not in METHODS:
        raise ValueError(f"method for {key} must be one of {METHODS}, got {method!r}")
    estimate, low, high = bootstrap_ci(y_true, y_score, key, resamples, confidence, method, seed,
                                       num_classes=num_classes)
    return Interval(estimate, low, high, _NAMES[method])
