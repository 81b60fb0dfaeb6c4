"""Fit time, test accuracy and peak memory of our LinearSVM vs scikit-learn's LinearSVC, measured in one run.

Same formulation (one-vs-rest squared hinge, C, fit_intercept) and the same standardised float32 inputs for both.
LinearSVC is used as people use it (its defaults: dual='auto', tol=1e-4); ours at its default tol (relative duality
gap 1e-3) in float32. Peak memory is the largest RSS growth of this process during the fit, sampled every 5 ms,
relative to the size of the training feature matrix.

    python benchmarks/bench_svm.py                 # MNIST (../shared/data/mnist) + synthetic 50,000 x 2,048
    python benchmarks/bench_svm.py --quick         # small sizes, seconds
    python benchmarks/bench_svm.py --n-train 20000 --C 0.01 --threads 2
"""

from __future__ import annotations

import argparse
import gzip
import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


class PeakRSS:
    """Context manager: peak resident-memory growth (bytes) of this process while the block runs."""

    def __enter__(self):
        try:
            import psutil
        except ImportError:  # bench extra absent (a test venv): fit time is still measured, memory reads as nan
            self._proc, self.growth = None, float("nan")
            return self
        self._proc = psutil.Process(os.getpid())
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self._proc is None:
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self.growth = self.peak - self.base


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist(n_train: int | None, seed: int = 0):
    """Raw MNIST pixels (N, 784) float32 and labels, or None when ../shared/data/mnist is absent."""
    if not SHARED_MNIST.is_dir():
        return None
    Xtr = _read_idx(SHARED_MNIST / "train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255
    ytr = _read_idx(SHARED_MNIST / "train-labels-idx1-ubyte.gz").astype(np.int64)
    Xte = _read_idx(SHARED_MNIST / "t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255
    yte = _read_idx(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    if n_train and n_train < len(ytr):
        idx = np.random.default_rng(seed).permutation(len(ytr))[:n_train]
        Xtr, ytr = Xtr[idx], ytr[idx]
    return Xtr, ytr, Xte, yte


def synthetic(n: int, d: int, seed: int = 0):
    """CNN-like features: make_classification, 10 classes, float32, 80/20 train/test."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n, n_features=d, n_informative=min(d // 8, 256), n_redundant=d // 8,
                               n_classes=10, n_clusters_per_class=2, class_sep=1.0, random_state=seed)
    X = X.astype(np.float32)
    cut = int(0.8 * n)
    return X[:cut], y[:cut], X[cut:], y[cut:]


def standardise(Xtr: np.ndarray, Xte: np.ndarray):
    mean, std = Xtr.mean(0), Xtr.std(0)
    std[std < 1e-6] = 1.0
    return ((Xtr - mean) / std).astype(np.float32), ((Xte - mean) / std).astype(np.float32)


def fit_one(name: str, make, Xtr, ytr, Xte, yte) -> dict:
    with warnings.catch_warnings(record=True) as caught, PeakRSS() as mem:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        model = make().fit(Xtr, ytr)
        fit_s = time.perf_counter() - t0
    return {"model": name, "fit_s": fit_s, "acc": float(np.mean(model.predict(Xte) == yte)),
            "mem_x": mem.growth / Xtr.nbytes, "warned": any("converge" in str(w.message).lower() for w in caught)}


def compare(label: str, data, C: float, device: str) -> list[dict]:
    from sklearn.svm import LinearSVC

    from dlstudy.svm import LinearSVM

    Xtr, ytr, Xte, yte = data
    Xtr, Xte = standardise(Xtr, Xte)
    rows = [fit_one(f"ours ({device}, float32)", lambda: LinearSVM(C=C, dtype="float32", device=device),
                    Xtr, ytr, Xte, yte),
            fit_one("LinearSVC", lambda: LinearSVC(C=C), Xtr, ytr, Xte, yte)]
    for r in rows:
        r["data"] = f"{label} {Xtr.shape[0]}x{Xtr.shape[1]}"
    rows[0]["speedup"] = rows[1]["fit_s"] / rows[0]["fit_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (MNIST 5,000 train; synthetic 12,500 x 512, 10,000 of them train)")
    parser.add_argument("--n-train", type=int, default=None, help="subsample MNIST training images (default all)")
    parser.add_argument("--C", type=float, default=0.01, help="C of both models")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for ours (default 1: liblinear inside LinearSVC is single-threaded)")
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}; C={args.C}, OvR squared hinge")
    print(f"{'data':24s} {'model':22s} {'fit s':>8s} {'test acc':>9s} {'peak mem / X':>13s} {'speedup':>8s}",
          flush=True)
    if not args.skip_mnist:
        data = mnist(args.n_train or (5000 if args.quick else None))
        if data is None:
            print(f"MNIST not found at {SHARED_MNIST}: skipping the MNIST rows")
        for device in devices if data is not None else []:
            print_rows(compare("MNIST raw", data, args.C, device))
    if not args.skip_synthetic:
        data = synthetic(*((12500, 512) if args.quick else (50000, 2048)))
        for device in devices:
            print_rows(compare("synthetic", data, args.C, device))


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        speed = f"{r['speedup']:.1f}x" if "speedup" in r else ""
        warn = "  (ConvergenceWarning)" if r["warned"] else ""
        print(f"{r['data']:24s} {r['model']:22s} {r['fit_s']:8.2f} {r['acc']:9.4f} {r['mem_x']:13.2f} {speed:>8s}{warn}",
              flush=True)

if __name__ == "__main__":
    main()
