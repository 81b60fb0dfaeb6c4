"""Triplet loss with batch-all, batch-hard and semi-hard mining (pure function + thin nn.Module).

Definitions (B embeddings, labels y):
    valid triplet (a, p, n): y_a == y_p, a != p, y_n != y_a
    hinge loss  l = max(0, d(a, p) - d(a, n) + margin)       soft-margin: l = log(1 + exp(d(a, p) - d(a, n)))
Mining:
    all       every valid triplet (Hermans et al. 2017 "batch all")
    hard      one triplet per anchor: its farthest positive and nearest negative ("batch hard")
    semihard  one triplet per (a, p) pair (FaceNet, Schroff et al. 2015): the nearest negative that is still farther
              than the positive, d(a, n) > d(a, p). Fallback when an anchor has no such negative (every negative is
              closer than the positive): the *farthest* negative, i.e. the easiest of the hard ones -- the choice of
              TensorFlow-Addons' triplet_semihard_loss; picking the hardest instead is known to collapse the
              embedding early in training.
Reduction: hinge losses are averaged over *active* triplets (l > 0), as pytorch-metric-learning's AvgNonZeroReducer
does, so the loss does not shrink just because most triplets are already satisfied; the soft-margin loss is never
zero and is averaged over all mined triplets. The fraction of active triplets is reported in the stats (for the
soft margin: triplets with d(a, p) > d(a, n)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MINING_MODES = ("all", "hard", "semihard")
DISTANCES = ("euclidean", "cosine")


def pairwise_distances(x: torch.Tensor, squared: bool = False, distance: str = "euclidean") -> torch.Tensor:
    """(B, D) -> (B, B) distances. Euclidean via the Gram matrix; cosine distance is 1 - cos(x_i, x_j).

    The square root is taken only where d^2 > 0 (the diagonal and duplicates are exactly 0), because the
    gradient of sqrt at 0 is infinite and would turn masked-out entries into NaN gradients.
    """
    if distance == "cosine":
        xn = F.normalize(x, dim=1)
        return 1.0 - xn @ xn.T
    if distance != "euclidean":
        raise ValueError(f"triplet distance: expected one of {list(DISTANCES)}, got {distance!r}")
    sq_norms = (x * x).sum(dim=1)  # (B,)
    d2 = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)  # (B, B)
    d2 = d2 * (1.0 - torch.eye(len(x), dtype=x.dtype, device=x.device))  # exact zeros on the diagonal
    if squared:
        return d2
    zero = d2 == 0
    return torch.sqrt(d2 + zero.to(x.dtype) * 1e-16) * (~zero).to(x.dtype)


def _positive_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index pairs (a, p) with equal labels, a != p, and the (B, B) negative mask."""
    same = labels[:, None] == labels[None, :]  # (B, B)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    a_idx, p_idx = torch.nonzero(same & ~eye, as_tuple=True)  # (P,) each, P = number of positive pairs
    return a_idx, p_idx, ~same


def mine_triplets(dist: torch.Tensor, labels: torch.Tensor, mining: str) -> tuple[torch.Tensor, ...]:
    """Index tensors (a, p, n), each (T,), of the mined triplets, vectorised (no loops over triplets)."""
    if mining not in MINING_MODES:
        raise ValueError(f"triplet mining: expected one of {list(MINING_MODES)}, got {mining!r}")
    dist = dist.detach()  # mining is a selection; gradients flow through the gathered distances only
    a_idx, p_idx, neg = _positive_pairs(labels)
    if mining == "hard":
        # One triplet per anchor that has both a positive and a negative.
        pos = ~neg & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        ok = pos.any(dim=1) & neg.any(dim=1)  # (B,)
        hardest_p = dist.masked_fill(~pos, float("-inf")).argmax(dim=1)  # (B,) farthest positive
        hardest_n = dist.masked_fill(~neg, float("inf")).argmin(dim=1)  # (B,) nearest negative
        anchors = torch.arange(len(labels), device=labels.device)
        return anchors[ok], hardest_p[ok], hardest_n[ok]
    neg_mask = neg[a_idx]  # (P, B): candidate negatives of each positive pair's anchor
    if mining == "all":
        pair, n_idx = torch.nonzero(neg_mask, as_tuple=True)  # (T,) each
        return a_idx[pair], p_idx[pair], n_idx
    # Semi-hard: nearest negative farther than the positive; fallback: the farthest negative.
    d_ap = dist[a_idx, p_idx]  # (P,)
    d_an = dist[a_idx]  # (P, B)
    outside = neg_mask & (d_an > d_ap[:, None])  # (P, B)
    nearest_outside = d_an.masked_fill(~outside, float("inf")).argmin(dim=1)  # (P,)
    farthest = d_an.masked_fill(~neg_mask, float("-inf")).argmax(dim=1)  # (P,)
    chosen = torch.where(outside.any(dim=1), nearest_outside, farthest)  # (P,) index of the negative
    has_neg = neg_mask.any(dim=1)
    return a_idx[has_neg], p_idx[has_neg], chosen[has_neg]


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2, mining: str = "all",
                 squared: bool = False, normalize: bool = True, soft: bool = False,
                 distance: str = "euclidean") -> tuple[torch.Tensor, dict]:
    """Triplet loss of a batch and its stats.

    embeddings: (B, D) float; labels: (B,) int. normalize L2-normalises the embeddings first (then the Euclidean
    distance lies in [0, 2], which is why the default margin is a small 0.2). squared uses d^2 (Euclidean only).
    Returns (loss, stats): loss is a scalar tensor (0 with a gradient path when no triplet is active), stats holds
    floats `active_fraction` (active / mined), `num_triplets` (mined), `num_active`.
    """
    if embeddings.ndim != 2 or labels.ndim != 1 or len(embeddings) != len(labels):
        raise ValueError(f"triplet_loss: expected embeddings (B, D) and labels (B,), got "
                         f"{tuple(embeddings.shape)} and {tuple(labels.shape)}")
    if mining not in MINING_MODES:
        raise ValueError(f"triplet mining: expected one of {list(MINING_MODES)}, got {mining!r}")
    x = F.normalize(embeddings, dim=1) if normalize else embeddings
    dist = pairwise_distances(x, squared=squared, distance=distance)
    a, p, n = mine_triplets(dist, labels, mining)
    diff = dist[a, p] - dist[a, n]  # (T,) d(a, p) - d(a, n)
    if soft:
        losses = F.softplus(diff)
        active = diff > 0
        n_used = losses.numel()
    else:
        losses = F.relu(diff + margin)
        active = losses > 0
        n_used = int(active.sum())
    n_active = int(active.sum())
    loss = losses.sum() / max(n_used, 1) + 0.0 * x.sum()  # 0.0 * x keeps a graph when T == 0
    stats = {"active_fraction": n_active / max(losses.numel(), 1), "num_triplets": float(losses.numel()),
             "num_active": float(n_active)}
    return loss, stats


class TripletLoss(nn.Module):
    """nn.Module wrapper of `triplet_loss`; forward returns (loss, stats)."""

    def __init__(self, margin: float = 0.2, mining: str = "semihard", squared: bool = False,
                 normalize: bool = True, soft: bool = False, distance: str = "euclidean"):
        super().__init__()
        if mining not in MINING_MODES:
            raise ValueError(f"loss.triplet_mining: expected one of {list(MINING_MODES)}, got {mining!r}")
        if distance not in DISTANCES:
            raise ValueError(f"loss.triplet_distance: expected one of {list(DISTANCES)}, got {distance!r}")
        self.margin, self.mining, self.squared = margin, mining, squared
        self.normalize, self.soft, self.distance = normalize, soft, distance

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return triplet_loss(embeddings, labels, self.margin, self.mining, self.squared, self.normalize,
                            self.soft, self.distance)

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, mining={self.mining!r}, squared={self.squared}, "
                f"normalize={self.normalize}, soft={self.soft}, distance={self.distance!r}")
