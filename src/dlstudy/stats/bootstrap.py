"""Bootstrap intervals of classification metrics, for one arm and for the difference of two paired arms.

Label metrics resample cell counts (`_counts`), ROC AUC resamples row weights (`_ranks`); both are Efron's
bootstrap, N rows drawn with replacement. Resamples are drawn in chunks of a size fixed by the data's shape; chunk i
uses its own generator `SeedSequence(seed).spawn(n_chunks)[i]`, so a seed gives the same distribution on every
machine.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from dlstudy.metrics._validate import check_labels, check_scores
from dlstudy.metrics.counts import CountMetric
from dlstudy.metrics.table import bootstrap_metrics
from dlstudy.stats import _counts, _ranks
from dlstudy.stats._checks import check_choice, check_confidence, check_count, check_seed

METHODS = ("percentile", "bca")
_CHUNK_ELEMS = 1 << 22  # (chunk, N) or (chunk, C) temporaries of at most ~32 MB each
_DRAW_ELEMS = 1 << 18  # draws per chunk of the count bootstrap: its temporaries stay in cache (2 MB)


METRICS = bootstrap_metrics()  # name -> dlstudy.metrics.table.Metric: grain + from_counts, or ROC AUC's average


# ------------------------------------------------------------------ the statistic of one or two arms


@dataclass(frozen=True)
class CountArms:
    """A label metric of A arms (1, or 2 paired) on shared cells."""

    table: _counts.CellTable
    metric: CountMetric

    @property
    def chunk(self) -> int:
        return max(1, min(4096, _DRAW_ELEMS // _counts.draw_width(self.table)))

    def values(self, counts: np.ndarray) -> np.ndarray:
        """(A, B) metric of each arm for (B, C) cell counts."""
        return np.stack([self.metric(*_counts.class_counts(self.table, counts, a))
                         for a in range(len(self.table.preds))])

    def estimate(self) -> np.ndarray:
        return self.values(self.table.counts[None, :])[:, 0]

    def resample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.values(_counts.draw_cell_counts(self.table, rng, size))

    def jackknife(self):
        """(A, J) leave-one-out values, one per cell, and (J,) how many rows share each."""
        c, k = self.table.counts.shape[0], self.table.num_classes
        step = max(1, _CHUNK_ELEMS // (4 * k))
        out = [[self.metric(*_counts.jackknife_class_counts(self.table, a, slice(i, i + step)))
                for i in range(0, c, step)] for a in range(len(self.table.preds))]
        return np.stack([np.concatenate(v) for v in out]), self.table.counts


@dataclass(frozen=True)
class RankArms:
    """ROC AUC of A arms (1, or 2 paired) on the same rows."""

    problems: tuple  # one _ranks.RankProblems per arm

    @property
    def n(self) -> int:
        return self.problems[0].bins_t.shape[0]

    @property
    def chunk(self) -> int:
        g = max(p.bins_t.shape[1] for p in self.problems)
        return max(1, min(64, _CHUNK_ELEMS // (2 * max(g, self.n))))  # (G, 64) sums stay in cache (measured)

    def estimate(self) -> np.ndarray:
        return np.array([_ranks.weighted_auc(p, np.ones((self.n, 1)))[0] for p in self.problems])

    def resample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        wt = np.ascontiguousarray(_ranks.draw_row_weights(rng, self.n, size).T, dtype=np.float32)  # (N, B)
        return np.stack([_ranks.weighted_auc(p, wt) for p in self.problems])

    def jackknife(self):
        """(A, N) leave-one-out values and (N,) ones."""
        step = max(1, _CHUNK_ELEMS // (8 * max(p.offsets.size for p in self.problems)))
        vals = [np.concatenate([_ranks.jackknife_auc(p, slice(i, i + step)) for i in range(0, self.n, step)])
                for p in self.problems]
        return np.stack(vals), np.ones(self.n, dtype=np.int64)


def _as_labels(y_score, name: str, n: int, num_classes: int | None) -> np.ndarray:
    """(N,) predicted labels: given, or the argmax of (N, K) scores."""
    ndim = np.ndim(y_score) if not hasattr(y_score, "ndim") else y_score.ndim
    if ndim == 2:
        return check_scores(y_score, n=n, ndim=(2,)).argmax(axis=1)  # ties: the first class, as Evaluator
    y = check_labels(y_score, name, num_classes)
    if y.shape[0] != n:
        raise ValueError(f"y_true and {name} must have the same length, got {n} and {y.shape[0]}")
    return y


def _prepare(metric: str, y_true: Any, arms: list, names: list, num_classes: int | None):
    """Validated CountArms or RankArms for `metric` of the arms' scores or labels."""
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    spec = METRICS[metric]
    widths = {np.shape(a)[1] for a in arms if np.ndim(a) == 2}
    if len(widths) > 1:
        raise ValueError(f"{' and '.join(names)} have different numbers of columns: {sorted(widths)}")
    if num_classes is not None and widths and widths != {num_classes}:
        raise ValueError(f"{' and '.join(names)}: {widths.pop()} columns but num_classes={num_classes}")
    k = num_classes if num_classes is not None else (widths.pop() if widths else None)
    y = check_labels(y_true, "y_true", k)
    if spec.grain is None:
        scores = []
        for a, name in zip(arms, names):
            if np.ndim(a) != 2:
                raise ValueError(f"{metric} needs (N, K) scores in {name}, got shape {np.shape(a)}")
            scores.append(check_scores(a, n=y.shape[0], ndim=(2,)))
        build = _ranks.macro_problems if spec.average == "macro" else _ranks.micro_problems
        return RankArms(tuple(build(y, s) for s in scores))
    preds = [_as_labels(a, name, y.shape[0], k) for a, name in zip(arms, names)]
    if k is None:
        k = int(max(y.max(), *(p.max() for p in preds))) + 1
    return CountArms(_counts.cell_table(y, preds, k, spec.grain), spec.from_counts)


# ------------------------------------------------------------------ distribution, interval, p-value


def _bootstrap_distribution(arms, n_resamples: int, seed: int) -> np.ndarray:
    """(A, n_resamples) bootstrap distribution of each arm's metric (same resamples for every arm)."""
    chunk = arms.chunk
    sizes = [min(chunk, n_resamples - i) for i in range(0, n_resamples, chunk)]
    seqs = np.random.SeedSequence(seed).spawn(len(sizes))
    # threads were measured: no gain (the sampling and sparse kernels hold the GIL)
    return np.concatenate([arms.resample(np.random.default_rng(q), size) for q, size in zip(seqs, sizes)], axis=1)


def _acceleration(jack: np.ndarray, weights: np.ndarray) -> float:
    """BCa acceleration from jackknife values (J,), each standing for `weights` rows (Efron & Tibshirani eq.
    14.15; scipy.stats.bootstrap's formula with rows grouped). 0 when every leave-one-out value is equal."""
    d = np.average(jack, weights=weights) - jack
    den = float(np.sum(weights * d ** 2))
    return 0.0 if den == 0 else float(np.sum(weights * d ** 3)) / (6 * den ** 1.5)


def _interval(theta_hat: float, theta_b: np.ndarray, confidence: float, method: str, jack=None, weights=None):
    """(low, high) percentile or BCa interval from a bootstrap distribution, as scipy.stats.bootstrap computes it
    (linear interpolation between order statistics)."""
    alpha = (1 - confidence) / 2
    levels = np.array([alpha, 1 - alpha])
    if method == "bca":
        b = theta_b.shape[0]
        z0 = ndtri((np.count_nonzero(theta_b < theta_hat) + np.count_nonzero(theta_b <= theta_hat)) / (2 * b))
        a = _acceleration(jack, weights)
        z = z0 + ndtri(levels)
        with np.errstate(invalid="ignore", divide="ignore"):
            levels = ndtr(z0 + z / (1 - a * z))
        if not np.all(np.isfinite(levels)):
            warnings.warn("the BCa interval cannot be computed: the estimate lies outside the bootstrap "
                          "distribution (a degenerate distribution); returning NaN", RuntimeWarning, stacklevel=3)
            return float("nan"), float("nan")
    low, high = np.quantile(theta_b, levels)
    return float(low), float(high)


def _finite(theta_b: np.ndarray, metric: str) -> np.ndarray:
    keep = np.isfinite(theta_b)
    if not keep.all():
        warnings.warn(f"{metric} is undefined on {int((~keep).sum())} of {keep.size} resamples (a resample without "
                      "the classes it needs); they are left out", RuntimeWarning, stacklevel=3)
    return theta_b[keep]


def _pvalue(diff_b: np.ndarray) -> float:
    """Two-sided p-value of 'no difference' by inverting the percentile interval: twice the smaller fraction of
    resampled differences on either side of 0 (ties count on both sides), with Davison & Hinkley's +1."""
    b = diff_b.shape[0]
    tail = min(int(np.count_nonzero(diff_b <= 0)), int(np.count_nonzero(diff_b >= 0)))
    return min(1.0, 2 * (tail + 1) / (b + 1))


def _check_common(n_resamples, confidence, method, seed):
    return (check_count(n_resamples, "n_resamples", 1), check_confidence(confidence),
            check_choice(method, METHODS, "method"), check_seed(seed))


# ------------------------------------------------------------------ public functions


def bootstrap_ci(y_true: Any, y_score: Any, metric: str, n_resamples: int = 10000, confidence: float = 0.95,
                 method: str = "percentile", seed: int = 0, *, num_classes: int | None = None):
    """(estimate, low, high): `metric` on the test set and its bootstrap interval.

    y_true: (N,) labels 0..K-1. y_score: (N, K) scores (label metrics use their argmax) or (N,) predicted labels.
    metric: a name of METRICS (the `dlstudy.metrics` / metrics.json key). method: 'percentile' | 'bca'.
    num_classes: K for (N,) labels (default: the largest label + 1); macro P/R/F1 average over all K classes.
    """
    n_resamples, confidence, method, seed = _check_common(n_resamples, confidence, method, seed)
    arms = _prepare(metric, y_true, [y_score], ["y_score"], num_classes)
    estimate = float(arms.estimate()[0])
    theta_b = _finite(_bootstrap_distribution(arms, n_resamples, seed)[0], metric)
    jack, weights = arms.jackknife() if method == "bca" else (None, None)
    low, high = _interval(estimate, theta_b, confidence, method, None if jack is None else jack[0], weights)
    return estimate, low, high


def paired_bootstrap(y_true: Any, scores_a: Any, scores_b: Any, metric: str, n_resamples: int = 10000,
                     confidence: float = 0.95, seed: int = 0, *, method: str = "percentile",
                     num_classes: int | None = None):
    """(difference, low, high, pvalue) of metric(a) - metric(b) on the same test samples.

    Both arms are scored on the same resamples. The interval is percentile (or BCa); the two-sided p-value of
    'no difference' is min(1, 2 (1 + min(#{d* <= 0}, #{d* >= 0})) / (B + 1)) over the B resampled differences
    d*, i.e. the level at which the percentile interval starts to exclude 0.
    """
    n_resamples, confidence, method, seed = _check_common(n_resamples, confidence, method, seed)
    arms = _prepare(metric, y_true, [scores_a, scores_b], ["scores_a", "scores_b"], num_classes)
    est = arms.estimate()
    diff = float(est[0] - est[1])
    dist = _bootstrap_distribution(arms, n_resamples, seed)
    diff_b = _finite(dist[0] - dist[1], metric)
    jack, weights = arms.jackknife() if method == "bca" else (None, None)
    low, high = _interval(diff, diff_b, confidence, method, None if jack is None else jack[0] - jack[1], weights)
    return diff, low, high, _pvalue(diff_b)
