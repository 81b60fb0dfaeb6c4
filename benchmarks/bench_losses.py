"""Our losses and embedding metrics vs pytorch-metric-learning / scikit-learn, measured in one run (CPU).

    .venv/bin/python benchmarks/bench_losses.py [--batch 128] [--dim 128] [--threads 1]

Rows (time per call, best of several; ratio = peer time / our time, > 1 means we are faster):
  triplet loss forward + backward on a P x K batch, for batch-all, batch-hard and semi-hard mining, vs
  pytorch-metric-learning's TripletMarginLoss with no miner / BatchHardMiner / TripletMarginMiner("semihard")
  (PML's semi-hard miner keeps every semi-hard triplet, FaceNet's rule picks one negative per pair: same family,
  not the same triplets, so that row compares cost only);
  k-NN class votes vs sklearn KNeighborsClassifier.predict_proba (brute force);
  retrieval_metrics (precision@1, recall@1/5, MAP@R) vs PML AccuracyCalculator's precision@1 + MAP@R (exact torch
  k-NN).
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

from timing import best_time


def triplet_rows(batch: int, dim: int) -> list[tuple[str, float, float]]:
    from pytorch_metric_learning import losses, miners
    from pytorch_metric_learning.distances import LpDistance

    from dlstudy.losses import triplet_loss

    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(batch, dim, generator=gen, requires_grad=True)
    labels = torch.arange(batch // 4).repeat_interleave(4)  # P x K with K = 4
    peer = losses.TripletMarginLoss(margin=0.2, distance=LpDistance(normalize_embeddings=True))
    peer_miners = {"all": None, "hard": miners.BatchHardMiner(),
                   "semihard": miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")}
    rows = []
    for mining, miner in peer_miners.items():
        def ours():
            triplet_loss(emb, labels, 0.2, mining)[0].backward()

        def theirs():
            tuples = miner(emb, labels) if miner is not None else None
            peer(emb, labels, tuples).backward()

        rows.append((f"triplet {mining} fwd+bwd B={batch} E={dim}", best_time(ours), best_time(theirs)))
    return rows


def knn_rows(n_train: int, n_test: int, dim: int) -> list[tuple[str, float, float]]:
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN
    from sklearn.neighbors import KNeighborsClassifier

    from dlstudy.metrics.retrieval import knn_predict, retrieval_metrics

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(100, dim)).astype(np.float32)
    ytr, yte = rng.integers(0, 100, n_train), rng.integers(0, 100, n_test)
    xtr = (centers[ytr] + 2 * rng.normal(size=(n_train, dim))).astype(np.float32)
    xte = (centers[yte] + 2 * rng.normal(size=(n_test, dim))).astype(np.float32)
    txtr, tytr, txte, tyte = map(torch.from_numpy, (xtr, ytr, xte, yte))
    sk = KNeighborsClassifier(n_neighbors=5, algorithm="brute")
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count",
                              device=torch.device("cpu"), knn_func=CustomKNN(LpDistance(normalize_embeddings=False)))
    return [
        (f"k-NN votes k=5 {n_test} x {n_train} E={dim}", best_time(lambda: knn_predict(txtr, tytr, txte, 5, 100), 3),
         best_time(lambda: sk.fit(xtr, ytr).predict_proba(xte), 3)),
        (f"P@1 + MAP@R {n_test} x {n_train} E={dim}",
         best_time(lambda: retrieval_metrics(txte, tyte, txtr, tytr), 3),
         best_time(lambda: calc.get_accuracy(txte, tyte, txtr, tytr, ref_includes_query=False), 3)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = triplet_rows(args.batch, args.dim) + knn_rows(args.n_train, args.n_test, args.dim)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); "
          f"shared machine, numbers taken under contention")
    print(f"| {'case':<44} | {'ours ms':>9} | {'peer ms':>9} | {'peer/ours':>9} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 11}|{'-' * 11}|")
    for name, ours, peer in rows:
        print(f"| {name:<44} | {ours * 1e3:9.2f} | {peer * 1e3:9.2f} | {peer / ours:9.2f} |")


if __name__ == "__main__":
    main()
