"""The `svm` job: start -> features -> LinearSVM per C (fitted on train, chosen on val) -> write -> finish_run.

Besides metrics.json and tables/c_selection.csv it keeps what `dlstudy evaluate` / `load_run` need:
`svm_model.npz` (the chosen LinearSVM with its standardisation), `model.json` (which features it takes) and
`predictions[_val].npz`, from which finish_run draws the confusion matrices and ROC curves.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from dlstudy.config import ModelConfig, RunConfig, to_dict
from dlstudy.errors import ConfigError
from dlstudy.report import finish_run
from dlstudy.io import estimate_run_bytes, read_json, space_warning
from dlstudy.jobs import NewRun, place_run
from dlstudy.runs import RunDir, resolve_device
from dlstudy.svm.features import backbone_features, cached, feature_cache_key, raw_features
from dlstudy.svm.selection import full_margins, select_C
from dlstudy.tracking import export_run, require

log = logging.getLogger(__name__)


def build_features(cfg: RunConfig, splits, device: str) -> dict[str, np.ndarray]:
    """{split: (N, F) float32}: raw pixels on [0, 1], or cached pooled features of cfg.svm.features."""
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


def feature_spec(cfg: RunConfig, splits) -> dict:
    """What turns images into this SVM's inputs, for model.json: raw pixels, or a backbone with its weights."""
    c, h, w = splits.image_shape
    spec = {"features": cfg.svm.features, "image_size": [h, w], "channels": c, "mean": list(splits.mean),
            "std": list(splits.std)}
    if cfg.svm.features != "raw":
        spec.update(weights=cfg.svm.weights, small_input_stem=cfg.model.small_input_stem)
    return spec


def run_svm_job(cfg: RunConfig, run_dir: RunDir | NewRun, resume: bool = False) -> dict:
    """start -> fit -> write -> finish_run for cfg (task 'svm'); returns the metrics dict (METRIC_KEYS + an 'svm'
    block). A finished run_dir given with resume is not redone."""
    if resume and isinstance(run_dir, RunDir) and run_dir.is_done and run_dir.file("metrics.json").is_file():
        return read_json(run_dir.file("metrics.json"))
    from dlstudy.data import load_dataset

    require(cfg.train.log)  # a missing tracking package fails before any work
    run_dir = place_run(cfg, run_dir)
    device = resolve_device(cfg.device)
    run_dir.start(cfg, device)
    splits = load_dataset(cfg.data)
    t0 = time.perf_counter()
    feats = build_features(cfg, splits, device)
    feature_s = time.perf_counter() - t0
    # predictions and reports, plus svm_model.npz: (K, features) float64 weights (two arrays at most)
    needed = estimate_run_bytes(0, n_scores=len(splits.test.labels) + len(splits.val.labels),
                                num_classes=splits.num_classes, checkpoints=False)
    needed += 16 * splits.num_classes * feats["train"].shape[1]
    if warning := space_warning(run_dir.path, needed):
        log.warning("%s", warning)
    y = {s: getattr(splits, s).labels.numpy() for s in ("train", "val", "test")}
    model, rows = fit_svm(cfg, feats, y, splits.num_classes, splits.class_names, device)
    run_dir.write_table("c_selection", rows)
    metrics = _write_results(run_dir, cfg, splits, model, feats, y)
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
    finish_run(run_dir)  # figures from metrics.json / predictions.npz, the report, DONE
    if cfg.train.log:  # TensorBoard / MLflow: no epochs to stream, so the finished folder is logged as it stands
        export_run(run_dir.path, cfg.train.log)
    return metrics


def fit_svm(cfg: RunConfig, feats: dict, y: dict, num_classes: int, class_names, device: str):
    """(LinearSVM, C-selection rows): one SVM per C fitted on train and chosen on val, its predict_proba
    temperature calibrated on the val rows of classes it was trained on."""
    model, rows = select_C(cfg, (feats["train"], y["train"]), (feats["val"], y["val"]), device)
    seen = np.isin(y["val"], model.classes_)  # val rows of classes the SVM was trained on
    if seen.any():
        model.calibrate(feats["val"][seen], y["val"][seen])  # predict_proba temperature on held-out data
    missing = sorted(set(range(num_classes)) - set(model.classes_.tolist()))
    if missing:
        log.warning("svm: class(es) %s have no training images (raise data.max_train?); they score below every "
                    "other class and are never predicted", [class_names[c] for c in missing])
    return model, rows


def _write_results(run_dir: RunDir, cfg: RunConfig, splits, model, feats: dict, y: dict) -> dict:
    """svm_model.npz, model.json, predictions[_val].npz; returns the test metrics (of predictions.npz)."""
    from dlstudy.predictions import make_predictions, write_predictions

    names = list(splits.class_names)
    scores = full_margins(model, feats["test"], splits.num_classes)  # (N, K) margins, ROC ranks them as they are
    test = make_predictions(y["test"], scores, "margins", names, splits.test.sample_ids())
    model.save(run_dir.file("svm_model.npz"))
    run_dir.write_model_card("svm", names, feature_spec(cfg, splits), svm="svm_model.npz")
    write_predictions(run_dir.file("predictions.npz"), test)
    if len(y["val"]):
        val_scores = full_margins(model, feats["val"], splits.num_classes)
        write_predictions(run_dir.file("predictions_val.npz"),
                          make_predictions(y["val"], val_scores, "margins", names, splits.val.sample_ids()))
    return test.metrics()


__all__ = ["run_svm_job", "build_features", "feature_spec", "fit_svm"]
