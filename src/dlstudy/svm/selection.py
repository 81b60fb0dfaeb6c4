"""The one way dlstudy builds an SVM from a config, chooses C, and scores classes the SVM never saw.

Used by the svm job (pixels or backbone features) and by the embedding classifier of train runs (triplet + SVM):
the same `svm.*` settings, the same standardisation (inside `LinearSVM(standardize=True)`), the same rule for C
(best selection accuracy; ties go to the smaller C, the more regularised model), the same margins as scores.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from dlstudy.config import RunConfig
from dlstudy.errors import ConfigError
from dlstudy.svm.estimator import LinearSVM

log = logging.getLogger(__name__)


def make_svm(cfg: RunConfig, C: float, device: str) -> LinearSVM:
    """A LinearSVM with the config's `svm.*` settings and C; inputs are standardised by the training statistics."""
    s = cfg.svm
    return LinearSVM(C=C, multi_class=s.multi_class, loss=s.loss, fit_intercept=s.fit_intercept,
                     class_weight=s.class_weight, tol=s.tol, max_iter=s.max_iter, random_state=cfg.seed,
                     device=device, kernel=s.kernel, gamma=s.gamma, n_components=s.n_components,
                     batch_size=s.batch_size, dtype=s.dtype, standardize=True)


def holdout(n: int, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit, select) index arrays: a seeded random split of n training rows, for choosing C without a val split."""
    perm = np.random.default_rng(seed).permutation(n)
    n_sel = max(1, int(round(n * fraction)))
    return np.sort(perm[n_sel:]), np.sort(perm[:n_sel])


def select_C(cfg: RunConfig, fit: tuple, select: tuple | None, device: str) -> tuple[LinearSVM, list[dict]]:
    """Fit one SVM per C of `svm.C` on `fit` = (X, y); the best accuracy on `select` = (X, y) wins.

    Returns (the chosen model, one row per C for the c_selection table). One C needs no selection set.
    """
    grid = sorted(float(c) for c in cfg.svm.C)
    bad = [c for c in grid if not c > 0]
    if bad or not grid:
        raise ConfigError(f"svm.C: expected one or more values > 0, got {cfg.svm.C}")
    has_select = select is not None and len(select[1]) > 0
    if len(grid) > 1 and not has_select:
        raise ConfigError(f"svm.C: {len(grid)} values need a validation split to choose from, but "
                          f"data.val_fraction={cfg.data.val_fraction} leaves none; give one C or a val_fraction > 0")
    rows, best = [], None
    for C in grid:
        t0 = time.perf_counter()
        svm = make_svm(cfg, C, device).fit(*fit)
        fit_s = time.perf_counter() - t0
        sel_acc = selection_accuracy(svm, *select) if has_select else float("nan")
        rows.append({"C": C, "val_accuracy": sel_acc, "train_accuracy": svm.train_accuracy_,
                     "objective": svm.objective_, "dual_gap": svm.dual_gap_, "n_iter": svm.n_iter_,
                     "converged": svm.converged_, "fit_time_s": fit_s})
        log.info("svm: C=%g selection accuracy %.4f (%d iterations, %.1fs)", C, sel_acc, svm.n_iter_, fit_s)
        if best is None or sel_acc > best[0]:  # strict: a tie keeps the smaller C seen first
            best = (sel_acc, svm, fit_s)
    model = best[1]
    model.fit_time_s_ = best[2]
    return model, rows


def selection_accuracy(svm: LinearSVM, X, y) -> float:
    """Accuracy on (X, y), where rows of classes the SVM never saw count as errors."""
    return float(np.mean(svm.predict(X) == np.asarray(y)))


def full_margins(svm: LinearSVM, X, num_classes: int) -> np.ndarray:
    """(N, num_classes) float32 decision values; a class absent from training scores below every real margin,
    so it is never the argmax (classes_ must be integer labels 0..num_classes-1)."""
    raw = np.asarray(svm._decision_matrix(X), dtype=np.float32)  # (N, K_train) columns = classes_, also for K = 2
    classes = np.asarray(svm.classes_).astype(np.int64)
    if len(classes) == num_classes:
        return raw[:, np.argsort(classes)] if not np.array_equal(classes, np.arange(num_classes)) else raw
    scores = np.full((len(raw), num_classes), raw.min() - 1.0 if raw.size else 0.0, dtype=np.float32)
    scores[:, classes] = raw
    return scores
