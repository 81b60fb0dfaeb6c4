"""The `svm` job: features -> LinearSVM per C (fitted on train, chosen on val) -> test metrics, figures, report."""

from __future__ import annotations

import logging
import time

import numpy as np

from dlstudy.config import ModelConfig, RunConfig, to_dict
from dlstudy.errors import ConfigError
from dlstudy.runs import RunDir, read_json, resolve_device
from dlstudy.svm.estimator import LinearSVM
from dlstudy.svm.features import backbone_features, cached, feature_cache_key, raw_features

log = logging.getLogger(__name__)


def build_features(cfg: RunConfig, splits, device: str) -> dict[str, np.ndarray]:
    """{split: (N, F) float32}: standardised raw pixels, or cached pooled features of cfg.svm.features."""
    if cfg.svm.features == "raw":
        return raw_features(splits)
    from dlstudy.data import cache_dir
    from dlstudy.models import MODELS, build_model, use_small_stem

    if cfg.svm.features not in MODELS:
        raise ConfigError(f"svm.features: expected 'raw' or a model of dlstudy.models.MODELS {sorted(MODELS)}, "
                          f"got {cfg.svm.features!r}")
    image_size = splits.image_shape[-1]
    small_stem = use_small_stem(cfg.model.small_input_stem, image_size)  # changes the features: part of the key
    key = feature_cache_key(to_dict(cfg.data), f"{cfg.svm.features}{'-small-stem' if small_stem else ''}",
                            cfg.svm.weights, image_size)

    def compute():
        mcfg = ModelConfig(name=cfg.svm.features, weights=cfg.svm.weights,
                           small_input_stem=cfg.model.small_input_stem)
        model = build_model(mcfg, splits.num_classes, 3, image_size)  # gray images are replicated to RGB
        return backbone_features(splits, model, cfg.train.eval_batch_size, device)

    if not cfg.data.cache:
        return compute()
    return cached(cache_dir(cfg.data.cache_dir) / "features" / f"{key}.pt", compute)


def make_svm(cfg: RunConfig, C: float, device: str) -> LinearSVM:
    s = cfg.svm
    return LinearSVM(C=C, multi_class=s.multi_class, loss=s.loss, fit_intercept=s.fit_intercept,
                     class_weight=s.class_weight, tol=s.tol, max_iter=s.max_iter, random_state=cfg.seed,
                     device=device, kernel=s.kernel, gamma=s.gamma, n_components=s.n_components,
                     batch_size=s.batch_size, dtype=s.dtype)


def select_C(cfg: RunConfig, feats: dict, y: dict, device: str) -> tuple[LinearSVM, list[dict]]:
    """Fit one SVM per C on train; the best validation accuracy wins (ties: the smaller C, more regularised)."""
    rows, best = [], None
    if len(cfg.svm.C) > 1 and not len(y["val"]):
        raise ConfigError(f"svm.C: {len(cfg.svm.C)} values need a validation split to choose from, but "
                          f"data.val_fraction={cfg.data.val_fraction} leaves none; give one C or a val_fraction > 0")
    for C in sorted(cfg.svm.C):
        if not C > 0:
            raise ConfigError(f"svm.C: every value must be > 0, got {cfg.svm.C}")
        t0 = time.perf_counter()
        svm = make_svm(cfg, C, device).fit(feats["train"], y["train"])
        fit_s = time.perf_counter() - t0
        val_acc = svm.score(feats["val"], y["val"]) if len(y["val"]) else float("nan")
        rows.append({"C": C, "val_accuracy": val_acc, "train_accuracy": svm.train_accuracy_,
                     "objective": svm.objective_, "dual_gap": svm.dual_gap_, "n_iter": svm.n_iter_,
                     "converged": svm.converged_, "fit_time_s": fit_s})
        log.info("svm: C=%g val accuracy %.4f (%d iterations, %.1fs)", C, val_acc, svm.n_iter_, fit_s)
        if best is None or val_acc > best[0]:
            best = (val_acc, svm, fit_s)
    model = best[1]
    model.fit_time_s_ = best[2]
    return model, rows


def _figures(run_dir: RunDir, metrics: dict, y_true: np.ndarray, y_score: np.ndarray, names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from dlstudy.metrics import plot_confusion_matrix, plot_roc_curves

    cm = np.asarray(metrics["confusion_matrix"])
    for name, normalize in (("confusion_matrix", False), ("confusion_matrix_normalized", "true")):
        fig, ax = plt.subplots(figsize=(7, 6))
        plot_confusion_matrix(cm, names, normalize=normalize, ax=ax)
        run_dir.save_figure(fig, name)
    fig, ax = plt.subplots(figsize=(7, 6))
    plot_roc_curves(y_true, y_score, names, ax=ax)  # decision_function scores, not calibrated probabilities
    run_dir.save_figure(fig, "roc")


def run_svm_job(cfg: RunConfig, run_dir: RunDir, resume: bool = False) -> dict:
    """Run cfg (task 'svm') into run_dir; returns the metrics dict (METRIC_KEYS + an 'svm' block)."""
    if resume and run_dir.is_done and run_dir.file("metrics.json").is_file():
        return read_json(run_dir.file("metrics.json"))  # a finished run is not redone
    from dlstudy.data import load_dataset
    from dlstudy.metrics import compute_metrics

    device = resolve_device(cfg.device)
    run_dir.start(cfg, device)
    splits = load_dataset(cfg.data)
    t0 = time.perf_counter()
    feats = build_features(cfg, splits, device)
    feature_s = time.perf_counter() - t0
    y = {s: getattr(splits, s).labels.numpy() for s in ("train", "val", "test")}
    model, rows = select_C(cfg, feats, y, device)
    run_dir.write_table("c_selection", rows)
    seen = np.isin(y["val"], model.classes_)  # val rows of classes the SVM was trained on
    if seen.any():
        model.calibrate(feats["val"][seen], y["val"][seen])  # predict_proba temperature on held-out data
    y_score = model.decision_function(feats["test"])  # (N, K_train) columns = classes_
    missing = sorted(set(range(splits.num_classes)) - set(model.classes_.tolist()))
    if missing:
        log.warning("svm: class(es) %s have no training images (raise data.max_train?); they score below every "
                    "other class and are never predicted", [splits.class_names[c] for c in missing])
    # a class absent from train scores below every real margin, so it is never the argmax
    scores = np.full((len(y_score), splits.num_classes), y_score.min() - 1.0 if y_score.size else 0.0,
                     dtype=np.float32)
    scores[:, model.classes_] = y_score
    # Evaluator.compute's own function, on the raw decision scores: Evaluator.update would softmax them, and ROC /
    # AUC must rank the SVM's margins themselves (accuracy and the confusion matrix are the same either way)
    metrics = compute_metrics(y["test"].astype(np.int64), scores, list(splits.class_names))
    metrics["svm"] = {
        "C": float(model.C), "C_grid": [float(c) for c in sorted(cfg.svm.C)], "features": cfg.svm.features,
        "weights": cfg.svm.weights if cfg.svm.features != "raw" else None, "multi_class": model.multi_class,
        "loss": model.loss, "kernel": model.kernel, "objective": model.objective_, "dual_gap": model.dual_gap_,
        "n_iter": model.n_iter_, "converged": model.converged_, "fit_time_s": model.fit_time_s_,
        "feature_time_s": feature_s, "n_features": int(feats["train"].shape[1]),
        "n_train": int(len(y["train"])), "n_val": int(len(y["val"])), "temperature": model.temperature_,
        "val_accuracy": max(r["val_accuracy"] for r in rows),
    }
    metrics["data"] = splits.sizes()
    run_dir.write_metrics(metrics)
    _figures(run_dir, metrics, y["test"], scores, list(splits.class_names))
    run_dir.finish()
    return metrics



__all__ = ["run_svm_job", "build_features", "select_C", "make_svm"]
