"""Benchmark dlstudy.stats bootstraps against scipy.stats.bootstrap on the same statistic.

    .venv/bin/python benchmarks/bench_stats.py            # N = 10,000, K = 200, 10,000 resamples
    .venv/bin/python benchmarks/bench_stats.py --quick    # 2,000 resamples, scipy's slow rows skipped

Data as bench_metrics.py: seeded labels and float32 softmax scores, the true class boosted by `boost` (1.5: ~12%
accuracy at K = 200, so nearly every sample is its own (true, predicted) cell, the worst case of the count
bootstrap; 4.0: ~90% accuracy, few cells). Each row: one arm's percentile interval (and BCa, which adds the
jackknife) or a paired difference, wall time of one run (the fast rows: median of 3), peak extra memory of ours by
`tracemalloc` in a separate run, and scipy.stats.bootstrap (vectorized=True, batch=500) computing the same
statistic on row resamples, with the ratio. scipy's ROC AUC statistic is dlstudy.metrics.roc_auc_score, one
resample at a time (it has no batched form), timed on --scipy-auc-resamples and scaled to the full count.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc

import numpy as np
from scipy import stats as sps

from dlstudy import metrics as mt
from dlstudy import stats as ours
from dlstudy.metrics import counts as _counts

MB = 1 << 20


def make_data(n: int, k: int, boost: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    scores = rng.standard_normal((n, k), dtype=np.float32)
    scores[np.arange(n), y_true] += boost
    scores -= scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)  # (N, K) float32 softmax probabilities
    return y_true, scores


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def peak_mb(fn) -> float:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / MB


def f1_statistic(k: int):
    """Vectorised macro F1 of (B, N) label arrays (one bincount of B*K*K cells), the fair scipy peer."""
    def statistic(y_true, y_pred, axis=-1):
        yt, yp = np.atleast_2d(y_true), np.atleast_2d(y_pred)
        codes = (yt * k + yp).astype(np.int64) + (np.arange(yt.shape[0]) * k * k)[:, None]
        cm = np.bincount(codes.ravel(), minlength=yt.shape[0] * k * k).reshape(-1, k, k)
        out = _counts.f1_macro(np.diagonal(cm, axis1=1, axis2=2), cm.sum(axis=2), cm.sum(axis=1))
        return out if np.ndim(y_true) > 1 else out[0]
    return statistic


def scipy_row(stat, data, paired, b: int, vectorized=True, batch=500, method="percentile"):
    return lambda: sps.bootstrap(data, stat, n_resamples=b, paired=paired, vectorized=vectorized, batch=batch,
                                 method=method, rng=0).confidence_interval


def rows(n: int, k: int, b: int, quick: bool, auc_b: int):
    """(label, ours fn, scipy fn or None, scipy scale, repeats)."""
    out = []
    for boost in (1.5, 4.0):
        y, s = make_data(n, k, boost)
        pred = s.argmax(axis=1)
        acc = f"{mt.accuracy_score(y, pred):.2f}"
        correct = (y == pred).astype(np.float64)
        out.append((f"accuracy (acc {acc})", lambda y=y, s=s: ours.bootstrap_ci(y, s, "accuracy", b),
                    scipy_row(np.mean, (correct,), False, b), 1.0, 3))
        out.append((f"accuracy BCa (acc {acc})",
                    lambda y=y, s=s: ours.bootstrap_ci(y, s, "accuracy", b, method="bca"),
                    scipy_row(np.mean, (correct,), False, b, method="bca"), 1.0, 3))
        f1_peer = None if quick and boost == 1.5 else scipy_row(f1_statistic(k), (y, pred), True, b)
        out.append((f"macro F1 (acc {acc})", lambda y=y, s=s: ours.bootstrap_ci(y, s, "f1_macro", b),
                    f1_peer, 1.0, 3))
        f1_bca_peer = None if quick or boost == 1.5 else scipy_row(f1_statistic(k), (y, pred), True, b, method="bca")
        out.append((f"macro F1 BCa (acc {acc})",
                    lambda y=y, s=s: ours.bootstrap_ci(y, s, "f1_macro", b, method="bca"), f1_bca_peer, 1.0, 3))
    y, s = make_data(n, k, 1.5)
    s2 = make_data(n, k, 1.5, seed=1)[1]
    out.append(("paired macro F1 (2 arms)", lambda: ours.paired_bootstrap(y, s, s2, "f1_macro", b), None, 1.0, 3))

    def auc_peer(average):
        def stat(idx):
            r = idx.astype(np.int64)
            return mt.roc_auc_score(y[r], s[r], average=average)
        return scipy_row(stat, (np.arange(n, dtype=np.float64),), False, auc_b, vectorized=False, batch=None)

    for average in ("macro", "micro"):
        out.append((f"ROC AUC {average}", lambda a=average: ours.bootstrap_ci(y, s, f"roc_auc_{a}", b),
                    None if quick else auc_peer(average), b / auc_b, 1))
    out.append(("ROC AUC macro BCa", lambda: ours.bootstrap_ci(y, s, "roc_auc_macro", b, method="bca"), None, 1, 1))
    out.append(("paired ROC AUC macro", lambda: ours.paired_bootstrap(y, s, s2, "roc_auc_macro", b), None, 1, 1))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--scipy-auc-resamples", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="2,000 resamples; skip scipy's slowest rows")
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs")
    args = ap.parse_args(argv)
    b = 2000 if args.quick else args.resamples
    print(f"numpy {np.__version__}, N = {args.n:,}, K = {args.k}, {b:,} resamples", flush=True)
    table = []
    for label, mine, peer, scale, repeats in rows(args.n, args.k, b, args.quick, args.scipy_auc_resamples):
        t_ours, _ = timed(mine, repeats)
        mem = float("nan") if args.no_memory else peak_mb(mine)
        t_peer = timed(peer, 1 if scale != 1 else repeats)[0] * scale if peer is not None else float("nan")
        table.append((label, t_ours, t_peer, mem))
        print(f"  done {label}: ours {t_ours:.3f} s, scipy {t_peer:.3f} s", flush=True)
    print(f"\nN = {args.n:,} test samples, K = {args.k} classes, {b:,} resamples, 95% percentile interval unless "
          "BCa; wall time (median of 3 for the fast rows); scipy.stats.bootstrap on the same statistic\n")
    head = ("statistic", "ours s", "scipy s", "x scipy", "ours peak MB")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, t_o, t_p, mem in table:
        peer = "-" if np.isnan(t_p) else f"{t_p:.3f}"
        ratio = "-" if np.isnan(t_p) else f"{t_p / t_o:.0f}x"
        print(f"| {label} | {t_o:.3f} | {peer} | {ratio} | {'-' if np.isnan(mem) else f'{mem:.0f}'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
