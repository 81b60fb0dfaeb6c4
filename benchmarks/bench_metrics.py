"""Benchmark dlstudy.metrics against scikit-learn (and optionally torchmetrics) on N = 1e6 predictions.

    .venv/bin/python benchmarks/bench_metrics.py            # K = 10 and 200, 7 repeats
    .venv/bin/python benchmarks/bench_metrics.py --quick    # K = 10 only, 5 repeats

Each row times the whole public call as a user writes it, validation and dtype conversions included, on inputs of
the dtypes its name gives: labels straight from NumPy (`rng.integers`: int64) or their int32 copy, scores float64
softmax probabilities or their float32 copy. scikit-learn is called the way a user calls it (no `labels=`; it
then finds the classes with `np.unique`, as ours finds K from max label + 1). Ours and scikit-learn alternate,
repeat by repeat (at least --repeats rounds; rows under ~0.3 s keep alternating until 3 s is spent), and each keeps
its best time: the machine may be shared, the minimum is the least disturbed run, and alternating exposes both to
the same load. "x sklearn" is the ratio of those two best times from the same run.
Peak extra memory is measured with `tracemalloc` in a separate call (NumPy buffers; torch's allocator is not
traced). scikit-learn's macro AUC at K = 200 (~40-80 s, ~3 GB) runs once, with tracemalloc on during that run.
max |diff| compares the results with scikit-learn's.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc

import numpy as np

from dlstudy import metrics as ours

MB = 1 << 20


def make_data(n: int, k: int, seed: int = 0):
    """int64 labels, float64 softmax scores (true class boosted: AUC ~ 0.8), int64 argmax predictions."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    scores = rng.standard_normal((n, k))
    scores[np.arange(n), y_true] += 1.5
    scores -= scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)  # (N, K) float64 probabilities
    return y_true, scores, scores.argmax(axis=1)


def best_times(fns, repeats: int, budget_s: float = 3.0, max_repeats: int = 100):
    """Best wall time of each function over at least `repeats` rounds (fast ones: more rounds, until `budget_s` is
    spent), the functions alternating within a round."""
    best, outs = [float("inf")] * len(fns), [None] * len(fns)
    rounds, t_start = 0, time.perf_counter()
    while rounds < repeats or (time.perf_counter() - t_start < budget_s and rounds < max_repeats):
        for i, fn in enumerate(fns):
            gc.collect()
            t0 = time.perf_counter()
            outs[i] = fn()
            best[i] = min(best[i], time.perf_counter() - t0)
        rounds += 1
    return best, outs


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


def _flat(r):
    return np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in r]) if isinstance(r, tuple) \
        else np.ravel(np.asarray(r, dtype=float))


def tasks(n: int, k: int):
    """name -> (ours, sklearn, torchmetrics or None); rows for K > 10 are the two that depend on K."""
    from sklearn import metrics as skm

    y, s64, p = make_data(n, k)
    y32, p32, s32 = y.astype(np.int32), p.astype(np.int32), s64.astype(np.float32)
    yb, col = y == 0, s64[:, 0]  # binary target and a strided column view, as a user would pass them

    def prf(a, b):
        return lambda: ours.precision_recall_fscore(a, b, average="macro")[:3]

    rows = {
        "confusion matrix (int64 labels)": (lambda: ours.confusion_matrix(y, p), lambda: skm.confusion_matrix(y, p)),
        "confusion matrix (int32 labels)": (lambda: ours.confusion_matrix(y32, p32),
                                            lambda: skm.confusion_matrix(y32, p32)),
        "macro P/R/F1 (int64 labels)": (prf(y, p),
                                        lambda: skm.precision_recall_fscore_support(y, p, average="macro")[:3]),
        "ROC curve, 1 class (bool labels, float64 scores)": (lambda: ours.roc_curve(yb, col),
                                                             lambda: skm.roc_curve(yb, col)),
        "macro OvR ROC AUC (int64 labels, float64 scores)": (lambda: ours.roc_auc_score(y, s64),
                                                              lambda: skm.roc_auc_score(y, s64, multi_class="ovr")),
        "macro OvR ROC AUC (int64 labels, float32 scores)": (lambda: ours.roc_auc_score(y, s32),
                                                              lambda: skm.roc_auc_score(y, s32, multi_class="ovr")),
        "macro OvR ROC AUC (int32 labels, float32 scores)": (lambda: ours.roc_auc_score(y32, s32),
                                                              lambda: skm.roc_auc_score(y32, s32, multi_class="ovr")),
    }
    if k > 10:  # the rows whose cost grows with K
        rows = {name: fns for name, fns in rows.items()
                if name in ("confusion matrix (int64 labels)", "macro OvR ROC AUC (int64 labels, float32 scores)")}
    return rows, (y, p, s32)


def torchmetrics_fns(name: str, data, k: int):
    import torch
    from torchmetrics.functional import classification as tmf

    y, p, s32 = (torch.from_numpy(a) for a in data)
    if name.startswith("confusion matrix (int64"):
        return lambda: tmf.multiclass_confusion_matrix(p, y, num_classes=k)
    if name.startswith("macro OvR ROC AUC (int64 labels, float32"):
        return lambda: tmf.multiclass_auroc(s32, y, num_classes=k, average="macro", thresholds=None)
    return None


def run(n: int, k: int, repeats: int, with_tm: bool):
    rows = []
    named, data = tasks(n, k)
    for name, (mine, sk) in named.items():
        slow = k >= 100 and "ROC AUC" in name
        if slow:  # ~1 min and ~3 GB: measure scikit-learn once, time and memory in the same run
            (t_ours,), (r_ours,) = best_times([mine], repeats)
            mem_sk, t_sk, r_sk = peak_mb(sk)
        else:
            (t_ours, t_sk), (r_ours, r_sk) = best_times([mine, sk], repeats)
            mem_sk = peak_mb(sk)[0]
        mem_ours = peak_mb(mine)[0]
        tm = torchmetrics_fns(name, data, k) if with_tm else None
        t_tm = best_times([tm], 1 if slow else 3)[0][0] if tm else float("nan")
        a, b = _flat(r_ours), _flat(r_sk)
        diff = float(np.max(np.abs(a - b), where=a != b, initial=0.0)) if a.shape == b.shape else float("nan")
        rows.append((k, name, t_ours, t_sk, t_tm, mem_ours, mem_sk, diff))
        print(f"  done K={k} {name}: ours {t_ours * 1e3:.1f} ms, sklearn {t_sk * 1e3:.1f} ms", flush=True)
    return rows


def print_table(rows, n: int, repeats: int, with_tm: bool):
    print(f"\nN = {n:,}; best of >= {repeats} alternating repeats (fast rows: until 3 s is spent, <= 100); peak extra "
          "memory by tracemalloc (NumPy buffers)\n")
    head = ["K", "task (input dtypes)", "ours ms", "sklearn ms", "x sklearn"]
    head += ["torchmetrics ms", "x tm"] if with_tm else []
    head += ["ours MB", "sklearn MB", "max |diff|"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for k, name, t_o, t_s, t_t, m_o, m_s, diff in rows:
        cells = [str(k), name, f"{t_o * 1e3:.1f}", f"{t_s * 1e3:.1f}", f"{t_s / t_o:.1f}x"]
        if with_tm:
            cells += [f"{t_t * 1e3:.1f}", f"{t_t / t_o:.1f}x"] if not np.isnan(t_t) else ["", ""]
        cells += [f"{m_o:.1f}", f"{m_s:.1f}", f"{diff:.1e}"]
        print("| " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, nargs="+", default=None, help="class counts (default 10 200; --quick: 10)")
    ap.add_argument("--repeats", type=int, default=None, help="alternating repeats (default 7; --quick: 5)")
    ap.add_argument("--quick", action="store_true", help="K = 10 only, 5 repeats")
    ap.add_argument("--torchmetrics", action="store_true", help="add torchmetrics for the rows it has")
    args = ap.parse_args(argv)
    if args.torchmetrics:
        try:
            import torchmetrics  # noqa: F401
        except ImportError:
            ap.error("--torchmetrics needs torchmetrics: pip install -e '.[bench]'")
    ks = args.k or ([10] if args.quick else [10, 200])
    repeats = args.repeats or (5 if args.quick else 7)
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for k in ks:
        rows += run(args.n, k, repeats, args.torchmetrics)
    print_table(rows, args.n, repeats, args.torchmetrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
