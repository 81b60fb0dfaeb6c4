"""Matplotlib drawing primitives. Each plot takes `ax=None` (a new figure) and returns the axes; `save_figure`
turns a figure into PNG bytes and writes them atomically (dlstudy.io).

The only package that imports matplotlib is dlstudy.figures (tests/test_layers.py holds the line).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlstudy.metrics._validate import check_labels, check_scores, to_numpy
from dlstudy.metrics.ranking import _roc_points, micro_auc, micro_roc_curve, ovr_auc_per_class

_ANNOTATE_MAX = 30  # up to this many classes every cell carries its number
_TICKS_MAX = 40  # beyond this many classes tick labels are thinned to about this many


PNG_DPI = 120


def figure_png(fig, dpi: int = PNG_DPI) -> bytes:
    """The figure as PNG bytes (tight bounding box); the figure is closed."""
    import matplotlib.pyplot as plt

    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


def save_figure(fig, path: str | Path, dpi: int = PNG_DPI) -> Path:
    """Write the figure atomically as PNG and close it; returns the path."""
    from dlstudy.io import atomic_write_bytes

    return atomic_write_bytes(path, figure_png(fig, dpi))


def _axes(ax, size=(6, 5)):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=size)
    return ax


def _names(class_names, k: int) -> list[str]:
    names = [str(c) for c in class_names] if class_names is not None else [str(c) for c in range(k)]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} entries but there are {k} classes")
    return names


def _class_ticks(ax, names: list[str], axis: str) -> None:
    """All class names up to _TICKS_MAX classes, else every step-th (the plot stays legible at K=200)."""
    k = len(names)
    step = max(1, int(np.ceil(k / _TICKS_MAX)))
    pos = np.arange(0, k, step)
    labels = [names[i] for i in pos]
    if axis == "x":
        ax.set_xticks(pos)
        ax.set_xticklabels(labels, rotation=90 if k > 10 else 45, ha="center" if k > 10 else "right",
                           fontsize=8 if k > 10 else 9)
    else:
        ax.set_yticks(pos)
        ax.set_yticklabels(labels, fontsize=8 if k > 10 else 9)


def plot_confusion_matrix(cm: Any, class_names: Sequence[str] | None = None, normalize: bool | str = False,
                          ax=None, title: str | None = None):
    """Heatmap of a (K, K) confusion matrix (rows = true class); counts, or rows normalised with 'true'.

    Up to 30 classes every cell is annotated (counts, or fractions to 2 decimals); beyond that the cells are
    colour only and the tick labels are thinned.
    """
    cm = np.asarray(to_numpy(cm))
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (K, K) matrix, got shape {cm.shape}")
    if normalize not in (False, None, "true"):
        raise ValueError(f"normalize must be False or 'true', got {normalize!r}")
    k = cm.shape[0]
    names = _names(class_names, k)
    values = cm.astype(np.float64)
    if normalize == "true":
        rows = values.sum(axis=1, keepdims=True)
        values = np.divide(values, rows, out=np.zeros_like(values), where=rows > 0)
    ax = _axes(ax, (6, 5) if k <= 12 else (10, 9))
    im = ax.imshow(values, cmap="Blues", interpolation="nearest", vmin=0)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if k <= _ANNOTATE_MAX:
        thresh = values.max() / 2 if values.size else 0
        for i in range(k):
            for j in range(k):
                text = f"{values[i, j]:.2f}" if normalize == "true" else f"{int(cm[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8 if k > 10 else 9,
                        color="white" if values[i, j] > thresh else "black")
    _class_ticks(ax, names, "x")
    _class_ticks(ax, names, "y")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize == "true" else "confusion matrix"))
    return ax


def _macro_curve(curves: list[tuple[np.ndarray, np.ndarray]], grid_size: int = 1001):
    """Mean TPR over classes on a common FPR grid (the usual 'macro-average ROC curve')."""
    grid = np.linspace(0.0, 1.0, grid_size)
    tprs = [np.interp(grid, fpr, tpr) for fpr, tpr in curves]
    mean = np.mean(tprs, axis=0)
    mean[0] = 0.0
    return grid, mean


def _classes_to_draw(aucs: np.ndarray, max_classes: int) -> dict[int, str]:
    """class -> legend suffix: every defined class, or with many classes the best, median and worst by AUC."""
    defined = np.flatnonzero(~np.isnan(aucs))
    if defined.size <= max_classes:
        return {int(c): "" for c in defined}
    order = defined[np.argsort(aucs[defined], kind="stable")]
    return {int(order[-1]): ", best", int(order[order.size // 2]): ", median", int(order[0]): ", worst"}


def plot_roc_curves(y_true: Any, y_score: Any, class_names: Sequence[str] | None = None, ax=None,
                    max_classes: int = 10, title: str | None = None):
    """One-vs-rest ROC curves with micro and macro averages, AUC in the legend.

    Up to `max_classes` classes every class gets a curve; with more, only the averages plus the best, median and
    worst class. The macro legend value is the mean of the per-class AUCs (classes without positives skipped).
    """
    s = to_numpy(check_scores(y_score, ndim=(2,)))
    y = check_labels(y_true, "y_true", s.shape[1])
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} samples but y_score has {s.shape[0]} rows")
    k = s.shape[1]
    names = _names(class_names, k)
    aucs, _ = ovr_auc_per_class(y, s)
    curves = {}
    for c in np.flatnonzero(~np.isnan(aucs)):
        col = s[:, c]
        curves[int(c)] = _roc_points(np.sort(col), np.sort(col[y == c]))[:2]
    ax = _axes(ax, (6, 6))
    for c, role in _classes_to_draw(aucs, max_classes).items():
        fpr, tpr = curves[c]
        ax.plot(fpr, tpr, lw=1, alpha=0.8, label=f"{names[c]} (AUC {aucs[c]:.3f}{role})")
    fpr, tpr, _ = micro_roc_curve(y, s)
    ax.plot(fpr, tpr, lw=2.2, ls="--", color="black", label=f"micro average (AUC {micro_auc(y, s):.3f})")
    if curves:
        grid, mean_tpr = _macro_curve(list(curves.values()))
        ax.plot(grid, mean_tpr, lw=2.2, ls=":", color="tab:red",
                label=f"macro average (AUC {np.nanmean(aucs):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="-", alpha=0.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or (f"ROC curves, one-vs-rest ({k} classes)"))
    ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_per_class_accuracy(per_class_acc: Any, class_names: Sequence[str] | None = None, ax=None,
                            title: str | None = None):
    """Bar chart of class-wise accuracy with the mean as a dashed line; NaN (absent classes) left blank."""
    acc = np.asarray(to_numpy(per_class_acc), dtype=np.float64)
    if acc.ndim != 1 or acc.size == 0:
        raise ValueError(f"per_class_acc must be a non-empty (K,) vector, got shape {acc.shape}")
    k = acc.size
    names = _names(class_names, k)
    ax = _axes(ax, (7, 4) if k <= 20 else (12, 4))
    ax.bar(np.arange(k), np.nan_to_num(acc), color="tab:blue", width=0.8 if k <= 50 else 1.0)
    if (~np.isnan(acc)).any():
        mean = float(np.nanmean(acc))
        ax.axhline(mean, color="tab:red", ls="--", lw=1, label=f"mean {mean:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    _class_ticks(ax, names, "x")
    ax.set_ylim(0, 1.0)
    ax.set_xlim(-0.5, k - 0.5)
    ax.set_ylabel("accuracy")
    ax.set_title(title or "per-class accuracy")
    return ax
