"""Evaluate an embedding arm: fit a classifier on the train embeddings, score the test embeddings.

`evaluate_model_embeddings(model, splits, cfg, ...)` embeds the splits and calls `evaluate_embeddings(train_emb,
train_y, test_emb, test_y, cfg, class_names)`; the train job uses it (with DDP `info` and AMP).

`eval.classifier`:
    svm  our dlstudy.svm.LinearSVM built and chosen by dlstudy.svm.selection exactly as the svm job does (the
         `svm.*` settings, inputs standardised by train statistics, ties to the smaller C); several `svm.C` values
         are compared on the val embeddings (or a seeded 20% hold-out of the train embeddings, then the chosen C is
         refitted on all of them); scores are its margins
    knn  k-NN votes (`eval.knn_k`) on the raw embeddings, the geometry the triplet loss trained
The embedding is the model's embedding head output, or its pooled features when it has none.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from dlstudy.config import RunConfig
from dlstudy.errors import ConfigError
from dlstudy.losses.collapse import collapse_diagnostics
from dlstudy.metrics.retrieval import knn_predict, retrieval_metrics

log = logging.getLogger(__name__)

CLASSIFIERS = ("svm", "knn")


def extract_embeddings(model: torch.nn.Module, split, mean, std, device: str | torch.device = "cpu",
                       batch_size: int = 512, **predict_kw) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, E) float32 CPU embeddings (forward_head(pre_logits=True): the features when the model has no embedding
    head) and (N,) labels of a split.

    The engine's `predict` (dlstudy.models.forward's batched pass, sharded under DDP) with the eval transform;
    `predict_kw` passes its `info` (DDP) and `amp_dtype`.
    """
    from dlstudy.engine.loop import predict

    emb, labels, _ = predict(model, split, mean=mean, std=std, device=device, batch_size=batch_size,
                             output="embedding", **predict_kw)
    return emb.float().cpu(), labels.long().cpu()


def fit_embedding_svm(train_x, train_y, cfg: RunConfig, val=None):
    """The LinearSVM (svm.* settings, standardised inputs) of the embedding classifier, C chosen like the svm job.

    Several `svm.C`: chosen on `val` = (val_x, val_y), or, without one, on a seeded 20% hold-out of the train
    embeddings, after which the chosen C is refitted on all of them.
    """
    from dlstudy.svm.selection import holdout, make_svm, select_C

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, y = np.asarray(train_x, dtype=np.float32), np.asarray(train_y, dtype=np.int64)
    if len(cfg.svm.C) == 1:
        return select_C(cfg, (x, y), None, device)[0]
    if val is not None and len(val[1]):
        return select_C(cfg, (x, y), (np.asarray(val[0], dtype=np.float32), np.asarray(val[1])), device)[0]
    fit_i, sel_i = holdout(len(y), seed=cfg.seed)
    chosen = select_C(cfg, (x[fit_i], y[fit_i]), (x[sel_i], y[sel_i]), device)[0]
    return make_svm(cfg, float(chosen.C), device).fit(x, y)


def embedding_classifier(train_emb, train_y, num_classes: int, cfg: RunConfig, val=None):
    """`cfg.eval.classifier` fitted on the train embeddings: a function (N, E) -> (N, K) scores, its score kind
    ('margins' for the SVM, 'probabilities' for k-NN votes) and the fitted LinearSVM (None for k-NN)."""
    from dlstudy.svm.selection import full_margins

    kind = cfg.eval.classifier
    if kind not in CLASSIFIERS:
        raise ConfigError(f"eval.classifier: embedding evaluation handles {list(CLASSIFIERS)}, got {kind!r} "
                          f"('head' is the engine's own evaluation)")
    train_emb = torch.as_tensor(train_emb).float().cpu()
    train_y = torch.as_tensor(train_y).long().cpu()
    if kind == "knn":
        score = lambda x: knn_predict(train_emb, train_y, torch.as_tensor(x).float().cpu(),  # noqa: E731
                                      cfg.eval.knn_k, num_classes)
        return score, "probabilities", None
    if val is not None:  # (val_emb, val_y), possibly on the GPU
        val = (torch.as_tensor(val[0]).float().cpu().numpy(), torch.as_tensor(val[1]).long().cpu().numpy())
    svm = fit_embedding_svm(train_emb.numpy(), train_y.numpy(), cfg, val)
    return (lambda x: full_margins(svm, torch.as_tensor(x).float().cpu().numpy(), num_classes)), "margins", svm


def embedding_scores(train_emb, train_y, test_emb, num_classes: int, cfg: RunConfig, val=None) -> np.ndarray:
    """(N, num_classes) test scores of the classifier `cfg.eval.classifier` fitted on the train embeddings."""
    score, _, _ = embedding_classifier(train_emb, train_y, num_classes, cfg, val)
    return np.asarray(score(test_emb))


def evaluate_embeddings(train_emb, train_y, test_emb, test_y, cfg: RunConfig, class_names: list[str],
                        val=None, extras: dict | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """(metrics, y_score (N, K), y_true (N,)) of test embeddings classified per cfg.eval.classifier.

    Embeddings are (N, E) tensors of one model (its embedding head, or its features without one). metrics holds
    dlstudy.metrics' keys (runs.METRIC_KEYS, "score_kind": SVM margins or k-NN vote probabilities, ranked as they
    are by ROC AUC, like the svm job's), plus "retrieval" (precision_at_1, recall_at_1/5, map_at_r of test
    queries vs train references) when cfg.eval.retrieval_metrics and "collapse" (collapse_diagnostics of the test
    embeddings by spread alone; warns in the log when they collapsed). `val` = (val_emb, val_y) chooses among
    several svm.C; `extras`, when a dict, receives "svm" (the fitted LinearSVM or None), "score_kind" and, with
    `val`, "scores_val" (its (N_val, K) scores).
    """
    from dlstudy.metrics import compute_metrics

    test_emb, test_y = torch.as_tensor(test_emb).float().cpu(), torch.as_tensor(test_y).long().cpu()
    score, score_kind, svm = embedding_classifier(train_emb, train_y, len(class_names), cfg, val)
    y_score = np.asarray(score(test_emb), dtype=np.float32)
    metrics = compute_metrics(test_y.numpy(), y_score, class_names, scores=score_kind)
    if extras is not None:
        extras.update(svm=svm, score_kind=score_kind)
        if val is not None:
            extras["scores_val"] = np.asarray(score(val[0]), dtype=np.float32)
    if cfg.eval.retrieval_metrics:
        metrics["retrieval"] = retrieval_metrics(test_emb, test_y, torch.as_tensor(train_emb).float().cpu(),
                                                 torch.as_tensor(train_y).long().cpu())
    if len(test_emb) >= 2:  # collapse guard on spread alone (the loss history is the engine's): logs a warning
        metrics["collapse"] = collapse_diagnostics(test_emb, [], cfg.loss.triplet_margin)
    return metrics, y_score, test_y.numpy()


def evaluate_model_embeddings(model: torch.nn.Module, splits, cfg: RunConfig, device: str | torch.device = "cpu",
                              batch_size: int = 512, extras: dict | None = None,
                              **predict_kw) -> tuple[dict, np.ndarray, np.ndarray]:
    """Embed train, val (when it has images) and test with `model`, then evaluate_embeddings: the one embedding
    evaluation, used by the train job (which passes `info` and `amp_dtype` in `predict_kw`) and the tests.

    `extras`, when a dict, receives "embeddings_test" / "labels_test" (CPU tensors; the train job writes them)
    besides evaluate_embeddings' own extras.
    """
    embed = lambda split: extract_embeddings(model, split, splits.mean, splits.std, device, batch_size,  # noqa: E731
                                             **predict_kw)
    train_x, train_y = embed(splits.train)
    test_x, test_y = embed(splits.test)
    val = embed(splits.val) if len(splits.val.labels) > 0 else None
    if extras is not None:
        extras["embeddings_test"], extras["labels_test"] = test_x, test_y
    return evaluate_embeddings(train_x, train_y, test_x, test_y, cfg, splits.class_names, val, extras)

