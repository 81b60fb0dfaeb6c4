"""Fit time, test accuracy and peak memory of our LinearSVM against a peer, measured in one run, as ratios.

One table. Each fit runs in its own subprocess: time, and peak memory = the subprocess's high-water RSS (ru_maxrss,
reached during the fit: loading the arrays before it allocates nothing twice) minus its RSS just before the fit,
over the bytes of the float32 X:

  MNIST 20,000 x 784 standardised (../shared/data/mnist), C in {0.001, 0.01, 0.1}: ours (OvR squared hinge, float32,
      one torch thread) vs scikit-learn's LinearSVC as people use it (its defaults: dual='auto', tol=1e-4, one
      thread inside liblinear). Same formulation and inputs; the stopping rules differ in kind: ours stops at a
      relative duality gap of 1e-3 (objective certified within 0.1% of the optimum), liblinear's primal Newton when
      the gradient norm fell by tol (scaled by the class balance). LinearSVC also regularises the bias.
  CIFAR-10 raw pixels 36,000 x 3,072 (dlstudy.data.load_dataset of ../shared/data, test = the 10,000 held-out
      images), C in {0.001, 0.01}: ours as `dlstudy svm --data cifar10` fits it (standardize=True, float64 solver on
      the float32 pixels, all cores) vs the same with plain conjugate gradients (preconditioner.RANK = 0), the solver
      before the Nystrom preconditioner. LinearSVC takes hours here; --cifar-linearsvc adds it.
  synthetic 40,000 x 2,048 (make_classification; --synthetic): ours vs LinearSVC at --C.

    python benchmarks/bench_svm.py                 # MNIST + CIFAR-10 rows (~45 min on 2 cores, most of it LinearSVC)
    python benchmarks/bench_svm.py --quick         # MNIST 5,000 at C = 0.01, CIFAR-10 6,000 at C = 0.01: minutes
    python benchmarks/bench_svm.py --skip-cifar --mnist-C 0.001
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED_MNIST = SHARED / "mnist"


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


# ------------------------------------------------------------------------------------------------ data


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


def cifar10(n_train: int | None):
    """CIFAR-10 raw pixels on [0, 1] (36,000 train / 10,000 test of the shared tar) via dlstudy's own loader."""
    if not (SHARED / "cifar10-train-jpg.tar.gz").is_file():
        return None
    from dlstudy.config import DataConfig
    from dlstudy.data import load_dataset
    from dlstudy.svm.features import pixel_features

    splits = load_dataset(DataConfig(name="cifar10", root=str(SHARED), max_train=n_train))
    return (pixel_features(splits.train.images), splits.train.labels.numpy(),
            pixel_features(splits.test.images), splits.test.labels.numpy())


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


# ------------------------------------------------------------------------------------------------ fits


def _make(model: str, C: float, device: str = "cpu"):
    """ours-f32: the MNIST/synthetic setting; ours-job: `dlstudy svm`'s (standardize, float64); LinearSVC."""
    from sklearn.svm import LinearSVC

    from dlstudy.svm import LinearSVM

    if model == "ours-f32":
        return LinearSVM(C=C, dtype="float32", device=device)
    if model == "ours-job":
        return LinearSVM(C=C, standardize=True, device=device)
    return LinearSVC(C=C)


def fit_one(name: str, make, Xtr, ytr, Xte, yte) -> dict:
    """Fit in this process; fit time, test accuracy, peak RSS growth / X bytes, whether it warned."""
    with warnings.catch_warnings(record=True) as caught, PeakRSS() as mem:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        model = make().fit(Xtr, ytr)
        fit_s = time.perf_counter() - t0
    return {"model": name, "fit_s": fit_s, "acc": float(np.mean(model.predict(Xte) == yte)),
            "mem_x": mem.growth / Xtr.nbytes, "n_iter": int(np.max(getattr(model, "n_iter_", 0))),
            "warned": any("converge" in str(w.message).lower() for w in caught)}


def compare(label: str, data, C: float, device: str) -> list[dict]:
    """In this process: ours (float32) vs LinearSVC on standardised `data` (used by gpu_check.py)."""
    Xtr, ytr, Xte, yte = data
    Xtr, Xte = standardise(Xtr, Xte)
    rows = [fit_one(f"ours ({device}, float32)", lambda: _make("ours-f32", C, device), Xtr, ytr, Xte, yte),
            fit_one("LinearSVC", lambda: _make("LinearSVC", C), Xtr, ytr, Xte, yte)]
    for r in rows:
        r["data"] = f"{label} {Xtr.shape[0]}x{Xtr.shape[1]}"
    rows[0]["speedup"] = rows[1]["fit_s"] / rows[0]["fit_s"]
    return rows


def _worker(spec_file: str) -> None:
    """Subprocess side of fit_isolated: load the arrays, fit once, print one JSON line."""
    import torch

    spec = json.loads(Path(spec_file).read_text())
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    if spec.get("precond_rank") is not None:
        from dlstudy.svm import preconditioner

        preconditioner.RANK = spec["precond_rank"]
    with np.load(spec["data"]) as npz:
        Xtr, ytr, Xte, yte = (npz[k] for k in ("Xtr", "ytr", "Xte", "yte"))
    model = _make(spec["model"], spec["C"])
    gc.collect()
    base = _rss()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        model.fit(Xtr, ytr)
        fit_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the kernel's high-water mark (Linux: KiB)
    row = {"model": spec["name"], "fit_s": fit_s, "acc": float(np.mean(model.predict(Xte) == yte)),
           "mem_x": (peak - base) / Xtr.nbytes, "n_iter": int(np.max(getattr(model, "n_iter_", 0))),
           "warned": any("converge" in str(w.message).lower() for w in caught), "threads": torch.get_num_threads()}
    print(json.dumps(row), flush=True)


def _rss() -> int:
    """Resident set size of this process now, bytes (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fit_isolated(name: str, model: str, C: float, data_file: Path, threads: int,
                 precond_rank: int | None = None) -> dict:
    """Fit in a fresh subprocess, so peak memory is this fit's alone."""
    spec = {"name": name, "model": model, "C": C, "data": str(data_file), "threads": threads,
            "precond_rank": precond_rank}
    spec_file = data_file.with_suffix(f".{abs(hash(name + str(C)))}.json")
    spec_file.write_text(json.dumps(spec))
    out = subprocess.run([sys.executable, __file__, "--worker", str(spec_file)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench worker {name} C={C} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ table


def print_row(r: dict) -> None:
    speed = f"{r['speedup']:.1f}x" if "speedup" in r else ""
    warn = "  (ConvergenceWarning)" if r["warned"] else ""
    print(f"{r['data']:22s} {r['C']:>6g} {r['model']:28s} {r['threads']:>3d} {r['fit_s']:8.2f} {r['n_iter']:>6d} "
          f"{r['acc']:9.4f} {r['mem_x']:13.2f} {speed:>8s}{warn}", flush=True)


def run_pair(tmp: Path, label: str, data, Cs, ours: tuple, peer: tuple) -> None:
    """ours = (name, model, threads, precond_rank), peer likewise; one pair of rows per C, speedup = peer / ours."""
    data_file = tmp / f"{label.split()[0]}.npz"
    np.savez(data_file, Xtr=data[0], ytr=data[1], Xte=data[2], yte=data[3])
    for C in Cs:
        rows = [fit_isolated(name, model, C, data_file, threads, rank) for name, model, threads, rank in (ours, peer)]
        rows[0]["speedup"] = rows[1]["fit_s"] / rows[0]["fit_s"]
        for r in rows:
            r.update(data=f"{label} {data[0].shape[0]}x{data[0].shape[1]}", C=C)
            print_row(r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="MNIST 5,000 and CIFAR-10 6,000 at C = 0.01: minutes")
    parser.add_argument("--mnist-n", type=int, default=20000, help="MNIST training images (default 20,000)")
    parser.add_argument("--mnist-C", type=float, nargs="+", default=[0.001, 0.01, 0.1])
    parser.add_argument("--cifar-C", type=float, nargs="+", default=[0.001, 0.01])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for ours on MNIST/synthetic (default 1: liblinear is single-threaded)")
    parser.add_argument("--cifar-threads", type=int, default=0, help="torch threads on CIFAR-10 (0: all, as `dlstudy svm`)")
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--skip-cifar", action="store_true")
    parser.add_argument("--cifar-linearsvc", action="store_true", help="LinearSVC as the CIFAR-10 peer (hours)")
    parser.add_argument("--synthetic", action="store_true", help="add synthetic 40,000 x 2,048 rows at --C")
    parser.add_argument("--C", type=float, default=0.01, help="C of the synthetic rows")
    args = parser.parse_args()
    if args.worker:
        return _worker(args.worker)
    mnist_n, cifar_n = (5000, 6000) if args.quick else (args.mnist_n, None)
    mnist_Cs, cifar_Cs = ([0.01], [0.01]) if args.quick else (args.mnist_C, args.cifar_C)
    print(f"cpu count {os.cpu_count()}; OvR squared hinge; each fit in its own process; speedup = peer fit s / ours, "
          f"both measured in this run")
    print(f"{'data':22s} {'C':>6s} {'model':28s} {'thr':>3s} {'fit s':>8s} {'Newton':>6s} {'test acc':>9s} "
          f"{'peak mem / X':>13s} {'speedup':>8s}", flush=True)
    linearsvc = ("LinearSVC (defaults)", "LinearSVC", 1, None)
    with tempfile.TemporaryDirectory(prefix="bench_svm_") as tmp:
        if not args.skip_mnist:
            data = mnist(mnist_n)
            if data is None:
                print(f"MNIST not found at {SHARED_MNIST}: skipping the MNIST rows")
            else:
                Xtr, Xte = standardise(data[0], data[2])
                run_pair(Path(tmp), "MNIST std", (Xtr, data[1], Xte, data[3]), mnist_Cs,
                         ("ours (float32)", "ours-f32", args.threads, None), linearsvc)
        if not args.skip_cifar:
            data = cifar10(cifar_n)
            if data is None:
                print(f"CIFAR-10 tar not found in {SHARED}: skipping the CIFAR-10 rows")
            else:
                peer = linearsvc if args.cifar_linearsvc else \
                    ("ours, plain CG (no precond.)", "ours-job", args.cifar_threads, 0)
                run_pair(Path(tmp), "CIFAR-10 px", data, cifar_Cs,
                         ("ours (as dlstudy svm)", "ours-job", args.cifar_threads, None), peer)
        if args.synthetic:
            data = synthetic(50000, 2048)
            Xtr, Xte = standardise(data[0], data[2])
            run_pair(Path(tmp), "synthetic", (Xtr, data[1], Xte, data[3]), [args.C],
                     ("ours (float32)", "ours-f32", args.threads, None), linearsvc)


if __name__ == "__main__":
    main()
