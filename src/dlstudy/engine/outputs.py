"""What a training run writes besides checkpoints: history/steps CSVs, curves, confusion matrices, ROC, tables."""

from __future__ import annotations

import numpy as np

from dlstudy.runs import METRIC_KEYS, RunDir

HISTORY_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "train_eval_loss", "train_eval_acc",
                  "lr", "backbone_lr", "backbone_frozen", "time_s", "images_per_s"]
STEP_FIELDS = ["epoch", "step", "global_step", "loss", "time_s"]


def metric_block(metrics: dict) -> dict:
    """The foundation's metric keys (+ loss when there) of an evaluation, in METRIC_KEYS order."""
    return {k: metrics[k] for k in (*METRIC_KEYS, "loss") if k in metrics}


def write_logs(run_dir: RunDir, history: list[dict], steps: list[dict] | None) -> None:
    """history.csv (one row per epoch) and steps.csv (one row per optimizer step), rewritten atomically."""
    from dlstudy.io import atomic_write_csv

    atomic_write_csv(run_dir.file("history.csv"), history, HISTORY_FIELDS)
    if steps is not None:
        atomic_write_csv(run_dir.file("steps.csv"), steps, STEP_FIELDS)


def _curve_figure(history: list[dict], key: str, label: str):
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


def save_curves(run_dir: RunDir, history: list[dict]) -> None:
    if not history:
        return
    run_dir.save_figure(_curve_figure(history, "loss", "loss"), "loss_curves")
    run_dir.save_figure(_curve_figure(history, "acc", "accuracy"), "accuracy_curves")


def save_confusion(run_dir: RunDir, metrics: dict, name: str, title: str) -> None:
    import matplotlib.pyplot as plt

    from dlstudy.metrics import plot_confusion_matrix

    k = len(metrics["class_names"])
    fig, ax = plt.subplots(figsize=(min(4 + 0.45 * k, 14), min(3.5 + 0.45 * k, 13)))
    plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), metrics["class_names"], ax=ax)
    ax.set_title(title)
    run_dir.save_figure(fig, name)


def save_roc(run_dir: RunDir, y_true: np.ndarray, y_score: np.ndarray, class_names: list[str], name: str) -> None:
    import matplotlib.pyplot as plt

    from dlstudy.metrics import plot_roc_curves

    fig, ax = plt.subplots(figsize=(6, 5))
    plot_roc_curves(y_true, y_score, class_names, ax=ax)
    run_dir.save_figure(fig, name)


def before_after_rows(before: dict | None, after: dict) -> list[dict]:
    """The reference report's table: accuracy and class-wise accuracy, before vs after fine-tuning."""
    rows = [{"metric": "accuracy", "before": before["accuracy"] if before else None, "after": after["accuracy"]}]
    for key in ("f1_macro", "roc_auc_macro"):
        rows.append({"metric": key, "before": before.get(key) if before else None, "after": after.get(key)})
    for i, name in enumerate(after["class_names"]):
        rows.append({"metric": f"accuracy[{name}]",
                     "before": before["per_class_accuracy"][i] if before else None,
                     "after": after["per_class_accuracy"][i]})
    return rows
