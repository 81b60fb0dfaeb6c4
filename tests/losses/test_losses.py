"""Triplet loss, center loss and the objectives against naive Python loops, autograd and pytorch-metric-learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dlstudy.config import LossConfig
from dlstudy.errors import ConfigError
from dlstudy.losses import (OBJECTIVES, build_objective, center_loss, center_update, mine_triplets,
                            pairwise_distances, triplet_loss)


# ------------------------------------------------------------------------------------------------ naive oracles


def naive_distance(x, i, j, squared, distance):
    if distance == "cosine":
        return 1 - (x[i] @ x[j]) / (x[i].norm() * x[j].norm())
    diff = x[i] - x[j]
    d2 = (diff * diff).sum()
    return d2 if squared else d2.sqrt()


def naive_triplets(x, labels, mining, squared, distance):
    """List of (a, p, n) by the definitions in dlstudy.losses.triplet, one triplet at a time."""
    y = labels.tolist()
    b = len(y)
    d = lambda i, j: float(naive_distance(x.detach(), i, j, squared, distance))  # noqa: E731
    out = []
    for a in range(b):
        pos = [p for p in range(b) if p != a and y[p] == y[a]]
        neg = [n for n in range(b) if y[n] != y[a]]
        if not pos or not neg:
            continue
        if mining == "all":
            out += [(a, p, n) for p in pos for n in neg]
        elif mining == "hard":
            out.append((a, max(pos, key=lambda p: d(a, p)), min(neg, key=lambda n: d(a, n))))
        else:
            for p in pos:
                outside = [n for n in neg if d(a, n) > d(a, p)]
                n = min(outside, key=lambda n: d(a, n)) if outside else max(neg, key=lambda n: d(a, n))
                out.append((a, p, n))
    return out


def naive_triplet_loss(emb, labels, margin, mining, squared, normalize, soft, distance):
    x = emb / emb.norm(dim=1, keepdim=True) if normalize else emb
    losses = []
    for a, p, n in naive_triplets(x, labels, mining, squared, distance):
        diff = naive_distance(x, a, p, squared, distance) - naive_distance(x, a, n, squared, distance)
        losses.append(F.softplus(diff) if soft else torch.clamp(diff + margin, min=0))
    if soft:
        return sum(losses) / len(losses)
    active = [v for v in losses if v > 0]
    return sum(active) / len(active) if active else emb.sum() * 0


CASES = [  # (mining, squared, normalize, soft, distance)
    *[(m, False, True, False, "euclidean") for m in ("all", "hard", "semihard")],
    *[(m, True, False, False, "euclidean") for m in ("all", "hard", "semihard")],
    *[(m, False, True, True, "euclidean") for m in ("all", "hard", "semihard")],
    *[(m, False, False, False, "cosine") for m in ("all", "hard", "semihard")],
    ("semihard", False, False, False, "euclidean"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mining,squared,normalize,soft,distance", CASES)
def test_triplet_loss_matches_naive_loop(mining, squared, normalize, soft, distance, dtype):
    gen = torch.Generator().manual_seed(CASES.index((mining, squared, normalize, soft, distance)))
    emb = (0.4 * torch.randn(12, 5, generator=gen)).to(dtype)
    labels = torch.randint(0, 3, (12,), generator=gen)
    margin = 0.3 if squared or not normalize else 0.2
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    ours, stats = triplet_loss(e1, labels, margin, mining, squared, normalize, soft, distance)
    ref = naive_triplet_loss(e2, labels, margin, mining, squared, normalize, soft, distance)
    ours.backward()
    ref.backward()
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-10)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, ref.to(dtype), **tol)
    torch.testing.assert_close(e1.grad, e2.grad, **tol)
    assert stats["num_triplets"] == len(naive_triplets(e2.detach() / e2.detach().norm(dim=1, keepdim=True)
                                                       if normalize else e2.detach(), labels, mining, squared,
                                                       distance))
    assert 0.0 <= stats["active_fraction"] <= 1.0


def test_mining_picks_hand_computed_triplets():
    # 1-D points, raw Euclidean distance |x_i - x_j|; the expected sets are worked out by hand in the comments.
    x = torch.tensor([[0.0], [1.2], [0.5], [3.0], [10.0], [25.0]])
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    dist = pairwise_distances(x)
    as_set = lambda t: set(zip(*(v.tolist() for v in t)))  # noqa: E731
    # hard: farthest positive (the only one) and nearest negative of each anchor.
    assert as_set(mine_triplets(dist, y, "hard")) == {(0, 1, 2), (1, 0, 2), (2, 3, 0), (3, 2, 1), (4, 5, 3),
                                                      (5, 4, 3)}
    # semihard: nearest negative farther than the positive; anchor 4 (d_ap = 15, every negative closer) falls
    # back to its farthest negative, point 0 at distance 10.
    assert as_set(mine_triplets(dist, y, "semihard")) == {(0, 1, 3), (1, 0, 3), (2, 3, 4), (3, 2, 0), (4, 5, 0),
                                                          (5, 4, 3)}
    assert len(as_set(mine_triplets(dist, y, "all"))) == 6 * 1 * 4


@pytest.mark.parametrize("mining", ["all", "hard", "semihard"])
def test_triplet_loss_invariant_to_batch_order_and_label_renaming(mining):
    gen = torch.Generator().manual_seed(11)
    emb, y = torch.randn(24, 6, generator=gen, dtype=torch.float64), torch.arange(6).repeat(4)
    perm = torch.randperm(24, generator=gen)
    rename = torch.randperm(6, generator=gen)  # a bijection of the label values
    base, stats = triplet_loss(emb, y, mining=mining)
    shuffled, stats2 = triplet_loss(emb[perm], rename[y][perm], mining=mining)
    torch.testing.assert_close(base, shuffled)
    assert stats == stats2


def test_triplet_loss_without_triplets_is_zero_with_gradient():
    emb = torch.randn(4, 3, requires_grad=True)
    loss, stats = triplet_loss(emb, torch.arange(4), mining="all")  # no positives
    loss.backward()
    assert loss.item() == 0.0 and stats["num_triplets"] == 0 and torch.all(emb.grad == 0)


def test_collapsed_embeddings_give_loss_equal_to_margin():
    emb = torch.ones(8, 4, requires_grad=True)
    loss, stats = triplet_loss(emb, torch.arange(4).repeat(2), margin=0.2, mining="semihard")
    assert loss.item() == pytest.approx(0.2) and stats["active_fraction"] == 1.0
    loss.backward()
    assert torch.isfinite(emb.grad).all()  # safe sqrt at zero distance


def test_batch_all_and_batch_hard_match_pytorch_metric_learning():
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.miners import BatchHardMiner

    gen = torch.Generator().manual_seed(3)
    emb, y = torch.randn(32, 8, generator=gen, dtype=torch.float64), torch.randint(0, 6, (32,), generator=gen)
    oracle = pml_losses.TripletMarginLoss(margin=0.2, distance=LpDistance(normalize_embeddings=True, p=2, power=1))
    ours, _ = triplet_loss(emb, y, 0.2, "all")
    torch.testing.assert_close(ours, oracle(emb, y))
    ours_hard, _ = triplet_loss(emb, y, 0.2, "hard")
    torch.testing.assert_close(ours_hard, oracle(emb, y, BatchHardMiner()(emb, y)))


def test_invalid_triplet_arguments_raise():
    with pytest.raises(ValueError, match="mining"):
        triplet_loss(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), mining="easy")
    with pytest.raises(ValueError, match="distance"):
        triplet_loss(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), distance="manhattan")
    with pytest.raises(ValueError, match="embeddings"):
        triplet_loss(torch.randn(4, 2), torch.zeros(3, dtype=torch.long))


# ------------------------------------------------------------------------------------------------ center loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_center_loss_matches_naive_loop(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=gen).to(dtype)
    centers = torch.randn(3, 4, generator=gen).to(dtype)
    y = torch.randint(0, 3, (10,), generator=gen)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = center_loss(x1, y, centers)
    ref = sum(0.5 * ((x2[i] - centers[y[i]]) ** 2).sum() for i in range(10)) / 10
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(x1.grad, x2.grad)


def test_center_update_matches_wen_formula():
    gen = torch.Generator().manual_seed(1)
    centers = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(9, 3, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 2, 2, 0, 1, 2])  # class 3 absent: must not move
    alpha = 0.3
    expected = centers.clone()
    for j in range(4):
        members = [i for i in range(9) if y[i] == j]
        delta = sum((centers[j] - x[i] for i in members), torch.zeros(3, dtype=torch.float64)) / (1 + len(members))
        expected[j] = centers[j] - alpha * delta
    center_update(centers, x, y, alpha)
    torch.testing.assert_close(centers, expected)


def test_centres_untouched_by_optimizer_and_moved_by_after_step():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 5)
    objective = build_objective(LossConfig(name="center+ce", center_lr=0.5), num_classes=5, feature_dim=6)
    objective.center.centers.data.normal_()
    params = list(model.parameters()) + list(objective.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1)
    x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
    before = objective.center.centers.detach().clone()
    out = objective({"logits": model(x), "features": x, "embedding": None}, y)
    out["loss"].backward()
    optimizer.step()
    torch.testing.assert_close(objective.center.centers.detach(), before)  # no grad, no weight decay
    expected = before.clone()
    center_update(expected, x, y, 0.5)
    objective.after_step()
    torch.testing.assert_close(objective.center.centers.detach(), expected)
    assert "center.centers" in objective.state_dict()


# ------------------------------------------------------------------------------------------------ objectives


class TinyEmbedder(torch.nn.Module):
    def __init__(self, d_in=6, feat=8, emb=4, k=3):
        super().__init__()
        self.body, self.head, self.embedding = torch.nn.Linear(d_in, feat), torch.nn.Linear(feat, k), \
            torch.nn.Linear(feat, emb)

    def forward(self, x):
        f = torch.relu(self.body(x))
        return {"logits": self.head(f), "features": f, "embedding": F.normalize(self.embedding(f), dim=1)}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_forward_backward(name):
    torch.manual_seed(0)
    model = TinyEmbedder()
    objective = build_objective(LossConfig(name=name), num_classes=3, feature_dim=8, embedding_dim=4)
    x, y = torch.randn(12, 6), torch.arange(3).repeat(4)
    out = objective(model(x), y)
    assert set(out) >= {"loss", "ce", "triplet", "center", "active_triplets"}
    assert out["loss"].ndim == 0 and math.isfinite(out["loss"].item())
    out["loss"].backward()
    objective.after_step()
    assert model.body.weight.grad is not None and model.body.weight.grad.abs().sum() > 0
    parts = OBJECTIVES[name].components
    expected = sum(getattr(objective, f"{c}_weight") * out[c] for c in parts)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert objective.needs_pk_sampler == ("triplet" in parts)
    if "ce" not in parts:
        assert model.head.weight.grad is None  # triplet alone does not train the classifier head
    objective.float_components = False  # tensors instead of floats: no host sync per component on CUDA
    out_t = objective(model(x), y)
    assert all(isinstance(out_t[c], torch.Tensor) and not out_t[c].requires_grad for c in parts)
    for c in set(parts) - {"center"}:  # the centres moved in after_step; the other components did not
        assert out_t[c].item() == pytest.approx(out[c], rel=1e-6)


def test_triplet_objective_uses_features_without_embedding_head():
    objective = build_objective(LossConfig(name="triplet"), 3, 8)
    feats = torch.randn(12, 8, requires_grad=True)
    out = objective({"logits": torch.zeros(12, 3), "features": feats, "embedding": None}, torch.arange(3).repeat(4))
    out["loss"].backward()
    assert feats.grad is not None


@pytest.mark.parametrize("field,value,match", [
    ("name", "arcface", "loss.name"), ("triplet_mining", "easy", "loss.triplet_mining"),
    ("triplet_distance", "l1", "loss.triplet_distance"), ("center_weight", -1.0, "loss.center_weight"),
])
def test_build_objective_rejects_bad_config(field, value, match):
    with pytest.raises(ConfigError, match=match):
        build_objective(LossConfig(**{field: value}), 3, 8)


def test_centre_update_uses_the_training_batch_not_a_later_evaluation():
    objective = build_objective(LossConfig(name="center+ce", center_lr=1.0), num_classes=2, feature_dim=3)
    x, y = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    out = objective({"logits": torch.zeros(4, 2, requires_grad=True), "features": x, "embedding": None}, y)
    objective.eval()
    with torch.no_grad():  # an evaluation pass in between (the engine may leave the objective in eval mode)
        objective({"logits": torch.zeros(4, 2), "features": 100 + x, "embedding": None}, y)
    expected = torch.zeros(2, 3)
    center_update(expected, x, y, 1.0)
    objective.after_step()
    torch.testing.assert_close(objective.center.centers.detach(), expected)
    assert out["center"] > 0


def test_centre_update_under_a_process_group_uses_the_reduced_sums(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        centers, x, y = torch.zeros(3, 2), torch.randn(6, 2), torch.tensor([0, 0, 1, 1, 2, 2])
        expected = centers.clone()
        center_update(expected, x, y, 0.5, sync=False)
        center_update(centers, x, y, 0.5)  # world size 1: the all-reduce must leave the update unchanged
        torch.testing.assert_close(centers, expected)
    finally:
        dist.destroy_process_group()
