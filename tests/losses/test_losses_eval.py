"""P x K sampler, k-NN and retrieval metrics (vs scikit-learn and pytorch-metric-learning), the collapse guard, and
the triplet -> SVM / k-NN pipeline on digits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlstudy import data
from dlstudy.config import build_run_config
from dlstudy.errors import ConfigError
from dlstudy.engine.evaluation import embedding_scores, evaluate_embeddings, evaluate_model_embeddings
from dlstudy.jobs.train import write_test_embeddings
from dlstudy.losses import PKBatchSampler, build_objective, collapse_diagnostics
from dlstudy.metrics.retrieval import knn_predict, map_at_r, precision_at_1, recall_at_k, retrieval_metrics


# ------------------------------------------------------------------------------------------------ sampler


def test_pk_sampler_yields_p_classes_times_k_images():
    labels = torch.arange(10).repeat_interleave(torch.tensor([12, 12, 12, 12, 12, 12, 12, 12, 12, 2]))
    sampler = PKBatchSampler(labels, P=4, K=3, seed=0, epoch=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(labels) // 12
    for batch in batches:
        assert len(batch) == 12
        counts = Counter(labels[batch].tolist())
        assert len(counts) == 4 and set(counts.values()) == {3}
        for c in counts:  # each class's K images sit together, distinct unless the class has < K images
            members = [i for i in batch if labels[i] == c]
            assert len(set(members)) == (3 if c != 9 else len(set(members)))
            assert c != 9 or set(members) <= {int(i) for i in torch.nonzero(labels == 9)}


def test_pk_sampler_is_deterministic_per_seed_and_epoch():
    labels = torch.randint(0, 8, (200,), generator=torch.Generator().manual_seed(0))
    make = lambda seed, epoch: list(PKBatchSampler(labels, 4, 4, seed=seed, epoch=epoch))  # noqa: E731
    assert make(1, 2) == make(1, 2)
    assert make(1, 2) != make(1, 3) and make(1, 2) != make(2, 2)
    sampler = PKBatchSampler(labels, 4, 4, seed=1, epoch=0)
    sampler.set_epoch(2)
    assert list(sampler) == make(1, 2)


def test_pk_sampler_covers_a_balanced_dataset_before_repeating_within_a_class():
    labels = torch.arange(5).repeat(40)  # 5 classes x 40 images
    seen = [i for b in PKBatchSampler(labels, P=5, K=4, seed=0) for i in b]
    assert len(seen) == 200 and len(set(seen)) == 200  # P = all classes: each queue walked exactly once


def test_pk_sampler_rejects_more_classes_than_present():
    with pytest.raises(ConfigError, match="classes_per_batch"):
        PKBatchSampler(torch.tensor([0, 0, 1, 1]), P=3, K=2)


def test_pk_sampler_plugs_into_data_batches():
    split = data.Split(torch.randint(0, 255, (60, 1, 4, 4), dtype=torch.uint8), torch.arange(6).repeat(10))
    got = list(data.batches(split, 8, shuffle=True, sampler=PKBatchSampler(split.labels, 2, 4, seed=0)))
    assert len(got) == 60 // 8 and all(y.shape == (8,) and len(set(y.tolist())) == 2 for _, y in got)


# ------------------------------------------------------------------------------------------------ k-NN, retrieval


def _clusters(n, k, d=6, seed=0, noise=1.0):
    gen = torch.Generator().manual_seed(seed)
    centers = 2 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=gen)
    return centers[y] + noise * torch.randn(n, d, generator=gen, dtype=torch.float64), y


@pytest.mark.parametrize("k", [1, 5])
def test_knn_predict_matches_sklearn(k):
    from sklearn.neighbors import KNeighborsClassifier

    train_x, train_y = _clusters(300, 4, seed=1)
    test_x, _ = _clusters(80, 4, seed=2)
    ours = knn_predict(train_x, train_y, test_x, k, num_classes=4)
    oracle = KNeighborsClassifier(n_neighbors=k).fit(train_x.numpy(), train_y.numpy())
    np.testing.assert_allclose(ours, oracle.predict_proba(test_x.numpy()), atol=1e-12)


def test_retrieval_metrics_match_pytorch_metric_learning():
    calc_mod = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    ref_x, ref_y = _clusters(400, 5, seed=3, noise=1.5)
    q_x, q_y = _clusters(120, 5, seed=4, noise=1.5)
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.inference import CustomKNN

    knn = CustomKNN(LpDistance(normalize_embeddings=False))  # exact torch k-NN (faiss is not installed)
    calc = calc_mod.AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                                       k="max_bin_count", device=torch.device("cpu"), knn_func=knn)
    oracle = calc.get_accuracy(q_x.float(), q_y, ref_x.float(), ref_y, ref_includes_query=False)
    assert precision_at_1(q_x, q_y, ref_x, ref_y) == pytest.approx(oracle["precision_at_1"], abs=1e-9)
    assert map_at_r(q_x, q_y, ref_x, ref_y) == pytest.approx(oracle["mean_average_precision_at_r"], abs=1e-6)
    combined = retrieval_metrics(q_x, q_y, ref_x, ref_y)  # one k-NN pass for all of them
    assert combined["precision_at_1"] == pytest.approx(oracle["precision_at_1"], abs=1e-9)
    assert combined["map_at_r"] == pytest.approx(oracle["mean_average_precision_at_r"], abs=1e-6)


def test_recall_at_k_matches_naive_loop():
    ref_x, ref_y = _clusters(150, 6, seed=5, noise=2.0)
    q_x, q_y = _clusters(50, 6, seed=6, noise=2.0)
    d = torch.cdist(q_x, ref_x)
    for k in (1, 3, 10):
        naive = np.mean([any(ref_y[j] == q_y[i] for j in d[i].argsort()[:k]) for i in range(len(q_x))])
        assert recall_at_k(q_x, q_y, ref_x, ref_y, k) == pytest.approx(naive)
    stats = retrieval_metrics(q_x, q_y, ref_x, ref_y)
    assert stats["recall_at_1"] == pytest.approx(stats["precision_at_1"])
    assert stats["recall_at_5"] >= stats["recall_at_1"]


# ------------------------------------------------------------------------------------------------ collapse guard


def test_collapse_guard_flags_pinned_loss_and_zero_spread():
    collapsed = torch.ones(50, 8) + 1e-5 * torch.randn(50, 8)
    with pytest.warns(RuntimeWarning, match="collapse"):
        diag = collapse_diagnostics(collapsed, [0.3, 0.21, 0.2, 0.2, 0.2, 0.2], margin=0.2)
    assert diag["collapsed"] and diag["spread"] < 1e-3 and diag["warning"]
    healthy = collapse_diagnostics(F.normalize(torch.randn(50, 8), dim=1), [0.2] * 5, margin=0.2)
    assert not healthy["collapsed"] and healthy["spread"] > 0.5
    learning = collapse_diagnostics(collapsed, [0.1, 0.05, 0.04], margin=0.2)  # tight clusters, loss falling
    assert not learning["collapsed"]


# ------------------------------------------------------------------------------------------------ digits pipeline


class DigitsMLP(torch.nn.Module):
    def __init__(self, emb=16, k=10):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU())
        self.head, self.embedding = torch.nn.Linear(64, k), torch.nn.Linear(64, emb)

    def forward(self, x):
        f = self.body(x)
        return {"logits": self.head(f), "features": f, "embedding": F.normalize(self.embedding(f), dim=1)}


@pytest.fixture(scope="module")
def digits_splits():
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.as_tensor(d.images * 15, dtype=torch.uint8)[:, None]  # (N, 1, 8, 8), 0..240
    labels = torch.as_tensor(d.target)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    tr, va, te = perm[:1200], perm[1200:1400], perm[1400:]
    split = lambda idx: data.Split(images[idx], labels[idx])  # noqa: E731
    return data.DatasetSplits("digits", [str(i) for i in range(10)], split(tr), split(va), split(te),
                              mean=(0.3,), std=(0.4,))


@pytest.fixture(scope="module")
def triplet_model(digits_splits):
    from dlstudy.data import batches

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = DigitsMLP()
    cfg = build_run_config({"loss": {"name": "triplet", "triplet_mining": "semihard"}})
    objective = build_objective(cfg.loss, 10, 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    s = digits_splits
    for epoch in range(4):
        sampler = PKBatchSampler(s.train.labels, P=10, K=4, seed=0, epoch=epoch)
        for x, y in batches(s.train, 40, shuffle=True, epoch=epoch, mean=s.mean, std=s.std, sampler=sampler):
            out = objective(model(x), y)
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
    torch.set_num_threads(threads)
    return model


def test_triplet_then_knn_on_digits_beats_chance(digits_splits, triplet_model, tmp_path):
    cfg = build_run_config({"eval": {"classifier": "knn", "knn_k": 5}})
    extras: dict = {}
    metrics, y_score, y_true = evaluate_model_embeddings(triplet_model, digits_splits, cfg, "cpu", 256, extras)
    assert y_score.shape == (len(y_true), 10)
    assert metrics["accuracy"] == pytest.approx((y_score.argmax(1) == y_true).mean())
    assert metrics["accuracy"] > 0.85  # chance is 0.1
    assert metrics["retrieval"]["precision_at_1"] > 0.85 and metrics["collapse"]["spread"] > 0.3
    assert not metrics["collapse"]["collapsed"]
    emb = extras["embeddings_test"]
    assert emb.shape == (len(y_true), 16)
    assert not collapse_diagnostics(emb, [], margin=0.2, warn=False)["collapsed"]
    path = write_test_embeddings(tmp_path, emb, extras["labels_test"])
    assert torch.equal(torch.load(path, weights_only=True)["embeddings"], emb)


def test_triplet_then_linear_svm_on_digits_beats_chance(digits_splits, triplet_model):
    cfg = build_run_config({"eval": {"classifier": "svm"}, "svm": {"C": [0.1, 1.0]}})
    extras: dict = {}
    metrics, y_score, y_true = evaluate_model_embeddings(triplet_model, digits_splits, cfg, "cpu", 256, extras)
    assert y_score.shape == (len(y_true), 10)
    assert metrics["accuracy"] > 0.85  # chance is 0.1
    assert metrics["score_kind"] == "margins" and extras["score_kind"] == "margins"
    assert extras["svm"].standardize and extras["scores_val"].shape == (len(digits_splits.val), 10)


@pytest.mark.parametrize("with_val", [True, False])
def test_svm_scores_place_classes_absent_from_training(with_val):
    train_x, train_y = _clusters(200, 3, seed=7, noise=0.3)
    train_y = train_y * 2  # classes 0, 2, 4 of 5: 1 and 3 never seen
    test_x, test_y = _clusters(60, 3, seed=7, noise=0.3)
    cfg = build_run_config({"eval": {"classifier": "svm"}, "svm": {"C": [0.01, 1.0]}})
    val = (test_x.float(), test_y * 2) if with_val else None  # without: C chosen on a hold-out of train
    scores = embedding_scores(train_x.float(), train_y, test_x.float(), 5, cfg, val=val)
    assert scores.shape == (60, 5)
    assert set(scores.argmax(1)) <= {0, 2, 4}
    assert (scores.argmax(1) == (test_y * 2).numpy()).mean() > 0.9


def test_embedding_svm_is_the_svm_jobs_svm():
    """One path: the embedding classifier's C, standardisation and margins are those of dlstudy.svm.selection."""
    from dlstudy.svm.selection import full_margins, select_C

    train_x, train_y = _clusters(150, 4, seed=8, noise=0.8)
    val_x, val_y = _clusters(50, 4, seed=10, noise=0.8)
    test_x, test_y = _clusters(40, 4, seed=9, noise=0.8)
    cfg = build_run_config({"eval": {"classifier": "svm"}, "svm": {"C": [0.001, 0.1, 10.0]}})
    extras: dict = {}
    metrics, y_score, _ = evaluate_embeddings(train_x, train_y, test_x, test_y, cfg, list("abcd"),
                                              val=(val_x, val_y), extras=extras)
    f32 = lambda t: t.float().numpy()  # noqa: E731  embeddings are float32 tensors
    svm, _ = select_C(cfg, (f32(train_x), train_y.numpy()), (f32(val_x), val_y.numpy()), "cpu")
    assert extras["svm"].C == svm.C
    np.testing.assert_array_equal(y_score, full_margins(svm, f32(test_x), 4))


def test_evaluate_embeddings_engine_contract():
    """The engine's call: embeddings in, (metrics with METRIC_KEYS + retrieval, scores, labels) out."""
    from dlstudy.runs import METRIC_KEYS

    train_x, train_y = _clusters(150, 4, seed=8, noise=0.5)
    test_x, test_y = _clusters(40, 4, seed=9, noise=0.5)
    for classifier, kind in (("svm", "margins"), ("knn", "probabilities")):
        cfg = build_run_config({"eval": {"classifier": classifier}})
        metrics, y_score, y_true = evaluate_embeddings(train_x, train_y, test_x, test_y, cfg, list("abcd"))
        assert set(METRIC_KEYS) <= set(metrics) and "retrieval" in metrics
        assert metrics["score_kind"] == kind
        if kind == "probabilities":
            np.testing.assert_allclose(y_score.sum(1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(y_true, test_y.numpy())


def test_evaluate_embeddings_rejects_head_classifier():
    x, y = _clusters(20, 2)
    with pytest.raises(ConfigError, match="eval.classifier"):
        evaluate_embeddings(x, y, x, y, build_run_config({}), ["a", "b"])
