"""Benchmark dlstudy.metrics against scikit-learn and torchmetrics on N = 1e6 predictions.

    .venv/bin/python benchmarks/bench_metrics.py            # K = 10 and 200, 5 repeats (peers 3)
    .venv/bin/python benchmarks/bench_metrics.py --quick    # 3 repeats, peers once

Seeded labels and softmax scores (float32, the true class boosted so AUC ~ 0.8). For each task: median wall time
(at least the given repeats; calls under ~1 s repeat until 1 s is spent) of ours vs scikit-learn (and
torchmetrics), the ratio, and peak extra memory measured with `tracemalloc` in a
separate run (it sees NumPy's buffers; torch's allocator is not traced, so torchmetrics memory is "n/a").
scikit-learn's macro AUC at K = 200 (~75 s, ~3 GB) is measured once, with tracemalloc on during that run.
Results are checked for agreement with scikit-learn (max |diff| column).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc

import numpy as np
import torch

from dlstudy import metrics as ours

MB = 1 << 20


def make_data(n: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    scores = rng.standard_normal((n, k), dtype=np.float32)
    scores[np.arange(n), y_true] += 1.5
    scores -= scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)  # (N, K) float32 softmax probabilities
    return y_true, scores, scores.argmax(axis=1)


def timed(fn, repeats: int, budget_s: float = 1.0, max_repeats: int = 50):
    """Median of at least `repeats` runs; fast calls repeat until `budget_s` is spent (the machine is shared,
    so a median over more runs is steadier)."""
    times, out = [], None
    while len(times) < repeats or (sum(times) < budget_s and len(times) < max_repeats):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def peak_mb(fn):
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / MB, elapsed, out


def tasks(y, s, p, k):
    """name -> (ours, sklearn, torchmetrics, value for the |diff| check)."""
    from sklearn import metrics as skm
    from torchmetrics.functional import classification as tmf

    yt, st, pt = torch.from_numpy(y), torch.from_numpy(s), torch.from_numpy(p)
    col = np.ascontiguousarray(s[:, 0])
    col_t, yb = torch.from_numpy(col), y == 0
    yb_t = torch.from_numpy(yb.astype(np.int64))
    labels = np.arange(k)

    def tm_prf():
        return [f(pt, yt, num_classes=k, average="macro") for f in
                (tmf.multiclass_precision, tmf.multiclass_recall, tmf.multiclass_f1_score)]

    return {
        "confusion matrix": (lambda: ours.confusion_matrix(y, p, k),
                             lambda: skm.confusion_matrix(y, p, labels=labels),
                             lambda: tmf.multiclass_confusion_matrix(pt, yt, num_classes=k),
                             lambda r: np.abs(np.asarray(r, float)).sum()),
        "macro P/R/F1": (lambda: ours.precision_recall_fscore(y, p, average="macro", num_classes=k)[:3],
                         lambda: skm.precision_recall_fscore_support(y, p, average="macro", labels=labels)[:3],
                         tm_prf, lambda r: np.array([float(v) for v in r])),
        "ROC curve (1 class)": (lambda: ours.roc_curve(yb, col), lambda: skm.roc_curve(yb, col),
                                lambda: tmf.binary_roc(col_t, yb_t, thresholds=None),
                                lambda r: np.concatenate([np.asarray(r[0]), np.asarray(r[1])])),
        "macro OvR ROC AUC": (lambda: ours.roc_auc_score(y, s), lambda: skm.roc_auc_score(y, s, multi_class="ovr"),
                              lambda: tmf.multiclass_auroc(st, yt, num_classes=k, average="macro", thresholds=None),
                              lambda r: np.array([float(r)])),
    }


def run(n: int, k: int, repeats: int, peer_repeats: int, with_tm: bool):
    y, s, p = make_data(n, k)
    rows = []
    for name, (mine, sk, tm, value) in tasks(y, s, p, k).items():
        slow = k >= 100 and name == "macro OvR ROC AUC"
        t_ours, r_ours = timed(mine, repeats)
        mem_ours, _, _ = peak_mb(mine)
        if slow:  # ~75 s and ~3 GB: measure once, time and memory in the same run
            mem_sk, t_sk, r_sk = peak_mb(sk)
        else:
            t_sk, r_sk = timed(sk, peer_repeats)
            mem_sk, _, _ = peak_mb(sk)
        t_tm = timed(tm, 1 if slow else peer_repeats)[0] if with_tm else float("nan")
        a, b = value(r_ours), value(r_sk)
        diff = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("nan")
        rows.append((k, name, t_ours, t_sk, t_tm, mem_ours, mem_sk, diff))
        print(f"  done K={k} {name}: ours {t_ours * 1e3:.1f} ms, sklearn {t_sk * 1e3:.1f} ms", flush=True)
    return rows


def print_table(rows, n):
    print(f"\nN = {n:,}; median wall time; peak extra memory by tracemalloc (NumPy buffers)\n")
    head = ("K", "task", "ours ms", "sklearn ms", "x sklearn", "torchmetrics ms", "x tm", "ours MB", "sklearn MB",
            "max |diff|")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for k, name, t_o, t_s, t_t, m_o, m_s, diff in rows:
        print(f"| {k} | {name} | {t_o * 1e3:.1f} | {t_s * 1e3:.1f} | {t_s / t_o:.1f}x | {t_t * 1e3:.1f} | "
              f"{t_t / t_o:.1f}x | {m_o:.1f} | {m_s:.1f} | {diff:.1e} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, nargs="+", default=[10, 200])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 repeats for ours, peers once")
    ap.add_argument("--no-torchmetrics", action="store_true")
    args = ap.parse_args(argv)
    repeats, peer_repeats = (3, 1) if args.quick else (args.repeats, 3)
    print(f"torch threads {torch.get_num_threads()}, numpy {np.__version__}", flush=True)
    rows = []
    for k in args.k:
        rows += run(args.n, k, repeats, peer_repeats, not args.no_torchmetrics)
    print_table(rows, args.n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
