"""Every figure of a run folder, drawn from the folder's files alone (so `dlstudy report RUN` can redraw them).

    draw_run_figures(run_dir) -> [the PNGs written under run_dir/figures/]
        train run     loss_curves, accuracy_curves        history.csv
                      confusion_before, confusion_after   metrics.json "before" / "after"
                      roc_after                           predictions.npz
        svm run       confusion_matrix, confusion_matrix_normalized   metrics.json
                      roc                                 predictions.npz (decision_function margins)
        evaluation    confusion_matrix                    metrics.json (+ its "evaluation" block for the title)
                      roc                                 predictions.npz, when the split holds two classes or more
                      per_class_accuracy                  metrics.json

A folder without metrics.json (an unfinished run) gets no figures. `dlstudy.report.finish_run` calls this before
it writes the report, so the jobs never draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlstudy.errors import DlstudyError
from dlstudy.figures.plots import plot_confusion_matrix, plot_per_class_accuracy, plot_roc_curves, save_figure
from dlstudy.io import read_csv, read_json


def draw_run_figures(run_dir: str | Path) -> list[Path]:
    """Draw the figures the folder's files allow (see the module docstring); returns the paths written."""
    run_dir = Path(run_dir)
    metrics = _read_metrics(run_dir)
    if "evaluation" in metrics:
        figures = _evaluation_figures(run_dir, metrics)
    elif "after" in metrics:
        figures = _train_figures(run_dir, metrics)
    elif "svm" in metrics:
        figures = _svm_figures(run_dir, metrics)
    else:
        return []
    return [save_figure(fig, run_dir / "figures" / f"{name}.png") for name, fig in figures]


def _read_metrics(run_dir: Path) -> dict:
    """metrics.json, or {} when it is missing or damaged (the report names the damage; no figure is drawn)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    try:
        metrics = read_json(path)
    except DlstudyError:
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _predictions(run_dir: Path):
    """predictions.npz of the test split (y_true, scores, class_names), or None when the folder has none."""
    from dlstudy.predictions import read_predictions

    path = run_dir / "predictions.npz"
    return read_predictions(path) if path.is_file() else None


def _history(run_dir: Path) -> list[dict]:
    """history.csv rows with numbers parsed back (epoch int, empty cells None), [] without the file."""
    path = run_dir / "history.csv"
    return [{k: _cell(v) for k, v in row.items()} for row in read_csv(path)] if path.is_file() else []


def _cell(text: str):
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


# ------------------------------------------------------------------------------------------------ the three kinds


def _train_figures(run_dir: Path, metrics: dict) -> list:
    history, figures = _history(run_dir), []
    for key, name, label in (("loss", "loss_curves", "loss"), ("acc", "accuracy_curves", "accuracy")):
        if history and {"epoch", f"train_{key}", f"val_{key}"} <= history[0].keys():
            figures.append((name, _curve_figure(history, key, label)))
    for when in ("before", "after"):
        if _has_confusion(metrics.get(when)):
            figures.append((f"confusion_{when}", _confusion_figure(metrics[when], f"{when} training (test)")))
    preds = _predictions(run_dir)
    if preds is not None:
        figures.append(("roc_after", _roc_figure(preds.y_true, preds.scores, preds.class_names)))
    return figures


def _svm_figures(run_dir: Path, metrics: dict) -> list:
    import matplotlib.pyplot as plt

    if not _has_confusion(metrics):
        return []
    cm, names, figures = np.asarray(metrics["confusion_matrix"]), metrics["class_names"], []
    for name, normalize in (("confusion_matrix", False), ("confusion_matrix_normalized", "true")):
        fig, ax = plt.subplots(figsize=(7, 6))
        plot_confusion_matrix(cm, names, normalize=normalize, ax=ax)
        figures.append((name, fig))
    preds = _predictions(run_dir)
    if preds is not None:
        fig, ax = plt.subplots(figsize=(7, 6))
        plot_roc_curves(preds.y_true, preds.scores, names, ax=ax)  # decision_function margins, not probabilities
        figures.append(("roc", fig))
    return figures


def _evaluation_figures(run_dir: Path, metrics: dict) -> list:
    import matplotlib.pyplot as plt

    info = metrics["evaluation"]
    if not _has_confusion(metrics):
        return []
    figures = [("confusion_matrix", _confusion_figure(metrics, f"{info['data']} {info['split']}"))]
    preds = _predictions(run_dir)
    if preds is not None and len(np.unique(preds.y_true)) > 1:
        figures.append(("roc", _roc_figure(preds.y_true, preds.scores, preds.class_names)))
    k = len(metrics["class_names"])
    fig, ax = plt.subplots(figsize=(min(4 + 0.35 * k, 16), 4))
    plot_per_class_accuracy(metrics["per_class_accuracy"], metrics["class_names"], ax=ax)
    figures.append(("per_class_accuracy", fig))
    return figures


def _has_confusion(block) -> bool:
    """A metric block that a confusion matrix can be drawn from (a hand-made or older metrics.json may lack it)."""
    return isinstance(block, dict) and bool(block.get("confusion_matrix")) and bool(block.get("class_names"))


# ------------------------------------------------------------------------------------------------ single figures


def _curve_figure(history: list[dict], key: str, label: str):
    """Train (running), train-subset (eval mode, when measured) and val `key` per epoch."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", label="train (running, during the epoch)")
    if any(r.get(f"train_eval_{key}") is not None for r in history):
        ax.plot(epochs, [r[f"train_eval_{key}"] for r in history], "s--", label="train subset (eval mode)")
    ax.plot(epochs, [r[f"val_{key}"] for r in history], "^-", label="val")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _confusion_figure(metrics: dict, title: str):
    """The counts heatmap of a metric block (its confusion_matrix and class_names), sized by the class count."""
    import matplotlib.pyplot as plt

    k = len(metrics["class_names"])
    fig, ax = plt.subplots(figsize=(min(4 + 0.45 * k, 14), min(3.5 + 0.45 * k, 13)))
    plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), metrics["class_names"], ax=ax)
    ax.set_title(title)
    return fig


def _roc_figure(y_true: np.ndarray, y_score: np.ndarray, class_names: list[str]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    plot_roc_curves(y_true, y_score, class_names, ax=ax)
    return fig
