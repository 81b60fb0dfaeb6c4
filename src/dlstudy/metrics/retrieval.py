"""Metrics of embeddings: k-NN votes and retrieval metrics (test queries vs train references), in torch.

Not imported by `dlstudy.metrics` itself (which stays NumPy-only and light): `from dlstudy.metrics.retrieval import ...`.

Retrieval metrics follow pytorch-metric-learning's AccuracyCalculator with separate query and reference sets
(ref_includes_query=False), Euclidean distance:
    precision_at_1  fraction of queries whose nearest reference has the query's label
    recall_at_k     fraction of queries with at least one same-label reference among the k nearest
                    (Recall@K of Oh Song et al. 2016; equals precision_at_1 at k = 1)
    map_at_r        MAP@R (Musgrave et al. 2020): R = number of references with the query's label;
                    AP@R = 1/R * sum_{i <= R} P(i) * rel(i) over the R nearest references; averaged over queries
"""

from __future__ import annotations

import numpy as np
import torch

_CHUNK_ELEMENTS = 1 << 25  # (queries x references) distance entries per chunk: ~128 MB of float32


def _as_tensor(x, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None else t


def knn_indices(query: torch.Tensor, ref: torch.Tensor, k: int) -> torch.Tensor:
    """(Nq, k) indices of the k nearest references (Euclidean) of each query, nearest first, in query chunks."""
    query, ref = _as_tensor(query), _as_tensor(ref)
    if query.ndim != 2 or ref.ndim != 2 or query.shape[1] != ref.shape[1]:
        raise ValueError(f"knn: expected (Nq, D) queries and (Nr, D) references, got {tuple(query.shape)} "
                         f"and {tuple(ref.shape)}")
    if not 1 <= k <= len(ref):
        raise ValueError(f"knn: k={k} must be between 1 and the number of references ({len(ref)})")
    dtype = torch.promote_types(query.dtype, torch.float32)
    query, ref = query.to(dtype), ref.to(dtype=dtype, device=query.device)
    ref_sq = (ref * ref).sum(dim=1)  # (Nr,); ||q||^2 is constant per row so it does not change the ranking
    chunk = max(1, _CHUNK_ELEMENTS // max(len(ref), 1))
    out = []
    for start in range(0, len(query), chunk):
        # (c, Nr) squared distance minus ||q||^2, in one fused addmm (a separate add costs as much as the matmul)
        d = torch.addmm(ref_sq[None, :], query[start:start + chunk], ref.T, alpha=-2.0)
        out.append(d.topk(k, dim=1, largest=False).indices)
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


def knn_predict(train_emb, train_y, test_emb, k: int = 5, num_classes: int | None = None) -> np.ndarray:
    """(N, K) scores of test embeddings: the fraction of the k nearest training embeddings in each class.

    Matches sklearn's KNeighborsClassifier(n_neighbors=k).predict_proba (uniform weights, Euclidean distance).
    """
    train_y = _as_tensor(train_y).long()
    num_classes = int(train_y.max()) + 1 if num_classes is None else num_classes
    k = min(k, len(train_y))
    idx = knn_indices(_as_tensor(test_emb), _as_tensor(train_emb), k)  # (N, k)
    neighbour_y = train_y.to(idx.device)[idx]  # (N, k)
    votes = torch.zeros(len(idx), num_classes, dtype=torch.float64, device=idx.device)
    votes.scatter_add_(1, neighbour_y, torch.ones_like(neighbour_y, dtype=torch.float64))
    return (votes / k).cpu().numpy()


def _neighbour_hits(query, query_y, ref, ref_y, k: int) -> torch.Tensor:
    """(Nq, k) bool: does the i-th nearest reference share the query's label."""
    query_y, ref_y = _as_tensor(query_y).long(), _as_tensor(ref_y).long()
    idx = knn_indices(query, ref, k)
    return ref_y.to(idx.device)[idx] == query_y.to(idx.device)[:, None]


def precision_at_1(query, query_y, ref, ref_y) -> float:
    """Fraction of queries whose nearest reference has the query's label."""
    return float(_neighbour_hits(query, query_y, ref, ref_y, 1)[:, 0].double().mean())


def recall_at_k(query, query_y, ref, ref_y, k: int = 5) -> float:
    """Fraction of queries with at least one same-label reference among their k nearest."""
    return float(_neighbour_hits(query, query_y, ref, ref_y, k).any(dim=1).double().mean())


def _map_at_r_from_hits(hits: torch.Tensor, r: torch.Tensor) -> float:
    """MAP@R from (Nq, k >= max R) neighbour hits and (Nq,) R per query."""
    hits = hits[:, :max(int(r.max()), 1)].double().cpu()
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64)
    hits = hits * (ranks[None, :] <= r[:, None])  # only the first R neighbours count
    precision_at_i = hits.cumsum(dim=1) / ranks[None, :]
    ap = (precision_at_i * hits).sum(dim=1) / r.clamp_min(1)
    return float(ap[r > 0].mean()) if bool((r > 0).any()) else 0.0


def _r_per_query(query_y: torch.Tensor, ref_y: torch.Tensor) -> torch.Tensor:
    """(Nq,) R: the number of references sharing each query's label."""
    counts = torch.bincount(ref_y, minlength=int(max(query_y.max(), ref_y.max())) + 1)
    return counts[query_y].double().cpu()


def map_at_r(query, query_y, ref, ref_y) -> float:
    """MAP@R of the queries against the references (see the module docstring)."""
    query_y, ref_y = _as_tensor(query_y).long(), _as_tensor(ref_y).long()
    r = _r_per_query(query_y, ref_y)
    if int(r.max()) == 0:
        return 0.0
    return _map_at_r_from_hits(_neighbour_hits(query, query_y, ref, ref_y, int(r.max())), r)


def retrieval_metrics(query, query_y, ref, ref_y, ks: tuple[int, ...] = (1, 5)) -> dict:
    """precision_at_1, recall_at_<k> for each k, map_at_r: test queries vs train references, from one k-NN pass."""
    query_y, ref_y = _as_tensor(query_y).long(), _as_tensor(ref_y).long()
    r = _r_per_query(query_y, ref_y)
    k = min(max(int(r.max()), *ks), len(ref_y))
    hits = _neighbour_hits(query, query_y, ref, ref_y, k)  # (Nq, k), nearest first
    out = {"precision_at_1": float(hits[:, 0].double().mean())}
    for kk in ks:
        out[f"recall_at_{kk}"] = float(hits[:, :kk].any(dim=1).double().mean())
    out["map_at_r"] = _map_at_r_from_hits(hits, r) if int(r.max()) > 0 else 0.0
    return out
