"""Evaluate an embedding arm: fit a classifier on the train embeddings, score the test embeddings.

The engine extracts embeddings itself (DDP, AMP) and calls `evaluate_embeddings(train_emb, train_y, test_emb,
test_y, cfg, class_names)`; `evaluate_model_embeddings(model, splits, cfg, ...)` does the extraction too.

`eval.classifier`:
    svm  our dlstudy.svm.LinearSVM (the `svm.*` settings; on the GPU when there is one) on train embeddings
         standardised by train statistics; several `svm.C` values are compared on the val embeddings (or a seeded 20%
         hold-out of the train embeddings) and the best one is refitted on all train embeddings
    knn  k-NN votes (`eval.knn_k`) on the raw embeddings, the geometry the triplet loss trained
The embedding is the model's embedding head output, or its pooled features when it has none.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch

from dlstudy.config import RunConfig
from dlstudy.errors import ConfigError
from dlstudy.losses.collapse import collapse_diagnostics
from dlstudy.losses.embeddings import knn_predict, retrieval_metrics
from dlstudy.runs import atomic_write_bytes

log = logging.getLogger(__name__)

CLASSIFIERS = ("svm", "knn")


def extract_embeddings(model: torch.nn.Module, split, mean, std, device: str | torch.device = "cpu",
                       batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, E) float32 CPU embeddings (features when the model has no embedding head) and (N,) labels of a split.

    The engine's `predict` with the eval transform (dlstudy.data.to_float(images, mean, std)).
    """
    from dlstudy.engine.loop import predict  # lazy: the engine imports this package

    output = "embedding" if getattr(model, "embedding", None) is not None else "features"
    emb, labels, _ = predict(model, split, mean=mean, std=std, device=device, batch_size=batch_size, output=output)
    return emb, labels.long()


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[np.ndarray]:
    """z-score every array by the train mean/std (std floored so constant dimensions stay finite)."""
    mu, sd = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)
    return [((t - mu) / sd).double().numpy() for t in (train, *others)]


def _svm_scores(svm, x: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, num_classes) decision values; classes absent from training get a score below every other."""
    raw = np.asarray(svm.decision_function(x), dtype=np.float64)
    classes = np.asarray(svm.classes_)
    if raw.ndim == 1:  # binary problem: one column for classes_[1]
        raw = np.stack([-raw, raw], axis=1)
    if len(classes) == num_classes and np.array_equal(classes, np.arange(num_classes)):
        return raw
    scores = np.full((len(x), num_classes), raw.min() - 1.0)
    scores[:, classes.astype(int)] = raw
    return scores


def _holdout(n: int, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit, select) index arrays: a seeded random split of n training rows for choosing C."""
    perm = np.random.default_rng(seed).permutation(n)
    n_sel = max(1, int(round(n * fraction)))
    return perm[n_sel:], perm[:n_sel]


def fit_svm_scores(train_x, train_y, test_x, num_classes: int, cfg: RunConfig, val=None) -> np.ndarray:
    """Fit LinearSVM on train embeddings, return (N, num_classes) test decision values.

    Several `svm.C`: each is scored on `val` = (val_x, val_y), or, without one, on a seeded 20% hold-out of the
    train embeddings; the best C is then refitted on all train embeddings.
    """
    from dlstudy.svm import LinearSVM

    svm = cfg.svm

    def make(c: float) -> "LinearSVM":  # the svm.* settings of the config; the GPU when there is one
        return LinearSVM(C=c, multi_class=svm.multi_class, loss=svm.loss, fit_intercept=svm.fit_intercept,
                         class_weight=svm.class_weight, tol=svm.tol, max_iter=svm.max_iter, random_state=cfg.seed,
                         device="auto", dtype=svm.dtype, batch_size=svm.batch_size, kernel=svm.kernel,
                         gamma=svm.gamma, n_components=svm.n_components)
    best_c = cfg.svm.C[0]
    if len(cfg.svm.C) > 1:
        if val is not None:
            fit_x, fit_y, sel_x, sel_y = train_x, train_y, val[0], val[1]
        else:
            fit_i, sel_i = _holdout(len(train_y), seed=cfg.seed)
            fit_x, fit_y, sel_x, sel_y = train_x[fit_i], train_y[fit_i], train_x[sel_i], train_y[sel_i]
        fx, sx = _standardise(fit_x, sel_x)
        best_acc = -1.0
        for c in cfg.svm.C:
            acc = float((_svm_scores(make(c).fit(fx, fit_y.numpy()), sx, num_classes).argmax(1)
                         == sel_y.numpy()).mean())
            log.info("embedding SVM C=%g: selection accuracy %.4f", c, acc)
            if acc > best_acc:
                best_c, best_acc = c, acc
    tr, te = _standardise(train_x, test_x)
    return _svm_scores(make(best_c).fit(tr, train_y.numpy()), te, num_classes)


def embedding_scores(train_emb, train_y, test_emb, num_classes: int, cfg: RunConfig, val=None) -> np.ndarray:
    """(N, num_classes) test scores of the classifier `cfg.eval.classifier` fitted on the train embeddings."""
    kind = cfg.eval.classifier
    if kind not in CLASSIFIERS:
        raise ConfigError(f"eval.classifier: embedding evaluation handles {list(CLASSIFIERS)}, got {kind!r} "
                          f"('head' is the engine's own evaluation)")
    train_emb, test_emb = torch.as_tensor(train_emb).float().cpu(), torch.as_tensor(test_emb).float().cpu()
    train_y = torch.as_tensor(train_y).long().cpu()
    if val is not None:  # (val_emb, val_y), possibly on the GPU
        val = (torch.as_tensor(val[0]).float().cpu(), torch.as_tensor(val[1]).long().cpu())
    if kind == "knn":
        return knn_predict(train_emb, train_y, test_emb, cfg.eval.knn_k, num_classes)
    return fit_svm_scores(train_emb, train_y, test_emb, num_classes, cfg, val)


def evaluate_embeddings(train_emb, train_y, test_emb, test_y, cfg: RunConfig, class_names: list[str],
                        val=None) -> tuple[dict, np.ndarray, np.ndarray]:
    """(metrics, y_score (N, K) probabilities, y_true (N,)) of test embeddings classified per cfg.eval.classifier.

    Embeddings are (N, E) tensors of one model (its embedding head, or its features without one). metrics holds
    dlstudy.metrics.Evaluator's keys (runs.METRIC_KEYS), plus "retrieval" (precision_at_1, recall_at_1/5, map_at_r
    of test queries vs train references) when cfg.eval.retrieval_metrics and "collapse" (collapse_diagnostics of
    the test embeddings by spread alone; warns in the log when they collapsed).
    SVM decision values go through a softmax (Evaluator's logits path) so y_score feeds ROC curves like the head's.
    """
    from dlstudy.metrics import Evaluator

    test_emb, test_y = torch.as_tensor(test_emb).float().cpu(), torch.as_tensor(test_y).long().cpu()
    scores = embedding_scores(train_emb, train_y, test_emb, len(class_names), cfg, val)
    evaluator = Evaluator(len(class_names), class_names, scores="probs" if cfg.eval.classifier == "knn" else "logits")
    evaluator.update(scores, test_y.numpy())
    metrics = evaluator.compute()
    if cfg.eval.retrieval_metrics:
        metrics["retrieval"] = retrieval_metrics(test_emb, test_y, torch.as_tensor(train_emb).float().cpu(),
                                                 torch.as_tensor(train_y).long().cpu())
    if len(test_emb) >= 2:  # collapse guard on spread alone (the loss history is the engine's): logs a warning
        metrics["collapse"] = collapse_diagnostics(test_emb, [], cfg.loss.triplet_margin)
    return metrics, evaluator.y_score_, evaluator.y_true_


def evaluate_model_embeddings(model: torch.nn.Module, splits, cfg: RunConfig, device: str | torch.device = "cpu",
                              batch_size: int = 512, extras: dict | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Embed train (and val, for choosing among several svm.C) and test with `model`, then evaluate_embeddings.

    `extras`, when a dict, receives "embeddings_test" / "labels_test" (CPU tensors, for save_test_embeddings).
    """
    embed = lambda split: extract_embeddings(model, split, splits.mean, splits.std, device, batch_size)  # noqa: E731
    train_x, train_y = embed(splits.train)
    test_x, test_y = embed(splits.test)
    val = None
    if cfg.eval.classifier == "svm" and len(cfg.svm.C) > 1 and len(splits.val.labels) > 0:
        val = embed(splits.val)
    if extras is not None:
        extras["embeddings_test"], extras["labels_test"] = test_x, test_y
    return evaluate_embeddings(train_x, train_y, test_x, test_y, cfg, splits.class_names, val)


def save_test_embeddings(run_dir_path, embeddings: torch.Tensor, labels: torch.Tensor,
                         name: str = "embeddings_test.pt") -> Path:
    """Write {"embeddings": (N, E) float32, "labels": (N,) int64} atomically into the run folder (PCA figure)."""
    buf = io.BytesIO()
    torch.save({"embeddings": torch.as_tensor(embeddings).detach().float().cpu(),
                "labels": torch.as_tensor(labels).detach().long().cpu()}, buf)
    return atomic_write_bytes(Path(run_dir_path) / name, buf.getvalue())
