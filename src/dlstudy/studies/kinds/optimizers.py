"""Summary of an `optimizers` study: arms are (optimizer, batch size) pairs, each run over several seeds.

Reads what dlstudy.engine writes per run: history.csv (epoch, train_loss, train_acc, val_loss, val_acc,
train_eval_loss, train_eval_acc = the fixed train subset in eval mode, lr, time_s = that epoch's training seconds),
steps.csv (one row per optimizer step, in order: loss, time_s; optional) and metrics.json (`accuracy` = test
accuracy of the best-validation epoch's weights, `best_epoch`), and writes into `<study>/figures/`:

    optim_loss_epochs.png    train-subset and val loss against epochs, mean over seeds with a ±1 std band
    optim_loss_time.png      the same against wall-clock training time
    optim_accuracy.png       train-subset and val accuracy against epochs
    optim_step_loss.png      per-step training loss, averaged in bins of 1/50 epoch (smoothing), against epochs

and a table Optimizer | batch size | test_accuracy | train_accuracy | time | time-to-target, with the reference
report's numbers beside ours (`study.reference.arms.<arm>.{test_accuracy, train_accuracy}`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlstudy.config import StudyConfig
from dlstudy.report.blocks import Figure, Heading, Paragraph, Table
from dlstudy.figures.study import Band, curve_panels_figure, step_loss_figure
from dlstudy.io import read_csv
from dlstudy.studies.summary.records import (TRAIN_ACC_KEYS, ArmRun, config_value, first_present,
                                             fmt_mean_std, group_by_arm, history_value, mean_std, protocol_of,
                                             test_accuracy, train_accuracy)

TRAIN_LOSS_KEYS = ("train_eval_loss", "train_loss")  # first present wins: the eval-mode subset, else running means
WALL_KEY = "wall_s"  # derived: cumulative training seconds at the end of each epoch (history time_s is per epoch)
STEP_BINS_PER_EPOCH = 50  # per-step losses are averaged in bins of 1/50 epoch: smooths batch-1 noise, caps points
MIN_STEPS_PER_BIN = 4  # fewer, wider bins for arms with few steps (mini-batches on a small set): no empty bins


# ------------------------------------------------------------------------------------------------ pure helpers


def aggregate_curves(histories: Sequence[Sequence[dict]], key: str, x_key: str = "epoch"
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean ± std over seeds of one history column, row by row: (x (T,), mean (T,), std (T,)).

    Rows are aligned by position and cut to the shortest history (a diverged seed stops early); x is the mean of
    `x_key` over seeds (identical for epochs, averaged for wall-clock time). Missing cells are NaN and skipped;
    std is the sample std (ddof=1), 0 where only one seed has a value.
    """
    histories = [h for h in histories if h]
    if not histories:
        empty = np.zeros(0)
        return empty, empty, empty
    length = min(len(h) for h in histories)
    xs = np.array([[history_value(row, x_key) for row in h[:length]] for h in histories])  # (S, T)
    ys = np.array([[history_value(row, key) for row in h[:length]] for h in histories])  # (S, T)
    return _nan_mean(xs), _nan_mean(ys), _nan_std(ys)


def _nan_mean(a: np.ndarray) -> np.ndarray:
    """Column means over the finite entries of (S, T) `a`; NaN for a column without any."""
    finite = np.isfinite(a)
    count = finite.sum(axis=0)
    total = np.where(finite, a, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _nan_std(a: np.ndarray) -> np.ndarray:
    """Column sample std (ddof=1) over the finite entries; 0 for one entry, NaN for none."""
    finite = np.isfinite(a)
    count = finite.sum(axis=0)
    mean = _nan_mean(a)
    sq = np.where(finite, (a - mean) ** 2, 0.0).sum(axis=0)
    std = np.sqrt(sq / np.maximum(count - 1, 1))
    return np.where(count > 1, std, np.where(count == 1, 0.0, np.nan))


def bin_step_losses(steps: Sequence[dict], epochs: float, bins_per_epoch: int = STEP_BINS_PER_EPOCH,
                    min_steps_per_bin: int = MIN_STEPS_PER_BIN) -> tuple[np.ndarray, np.ndarray]:
    """Per-step losses of one run averaged in equal bins of training progress: (x epochs (B,), loss (B,)).

    Step i (0-based) of n total steps sits at epoch (i + 1) / n * epochs, so arms with different batch sizes
    (54,000 vs 844 steps per MNIST epoch) share one axis. B = epochs * bins_per_epoch, fewer when that would put
    under `min_steps_per_bin` steps in a bin; each bin holds the mean loss of its steps (NaN when empty).
    """
    losses = np.array([history_value(r, "loss") for r in steps])
    if losses.size == 0:
        return np.zeros(0), np.zeros(0)
    n_bins = max(min(int(round(epochs * bins_per_epoch)), losses.size // max(min_steps_per_bin, 1)), 1)
    progress = (np.arange(losses.size) + 1) / losses.size  # (n,) in (0, 1]
    index = np.clip(np.ceil(progress * n_bins - 1e-9).astype(int) - 1, 0, n_bins - 1)  # bin b holds (b/B, (b+1)/B]
    sums = np.bincount(index, weights=np.where(np.isfinite(losses), losses, 0.0), minlength=n_bins)
    counts = np.bincount(index, weights=np.isfinite(losses).astype(float), minlength=n_bins)
    x = (np.arange(n_bins) + 1) / n_bins * epochs
    return x, np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def with_wall_clock(history: Sequence[dict]) -> list[dict]:
    """History rows with `wall_s`: the running sum of the per-epoch training time `time_s` (missing counts 0)."""
    total, out = 0.0, []
    for row in history:
        t = history_value(row, "time_s")
        total += t if math.isfinite(t) else 0.0
        out.append({**row, WALL_KEY: total})
    return out


def time_to_target(history: Sequence[dict], target: float, key: str = "val_acc") -> float | None:
    """Training seconds until the end of the first epoch whose `key` reaches `target`; None if none does."""
    for row in with_wall_clock(history):
        if history_value(row, key) >= target:
            return row[WALL_KEY]
    return None


def default_target(runs_by_arm: dict[str, list[ArmRun]], key: str = "val_acc") -> float | None:
    """The accuracy every arm reaches: the lowest, over arms, of the seed-mean best validation accuracy."""
    bests = []
    for runs in runs_by_arm.values():
        per_seed = [max((history_value(r, key) for r in run.history), default=math.nan) for run in runs]
        mean, _ = mean_std(per_seed)
        if math.isfinite(mean):
            bests.append(mean)
    return min(bests) if bests else None


# ------------------------------------------------------------------------------------------------ reading runs


def _train_time(run: ArmRun) -> float | None:
    """Total training seconds: metrics.json train_time_s, else the sum of the history's per-epoch time_s."""
    value = run.metrics.get("train_time_s")
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    rows = with_wall_clock(run.history)
    return rows[-1][WALL_KEY] if rows else None


def _read_steps(run: ArmRun) -> list[dict]:
    path = run.path / "steps.csv"
    return read_csv(path) if path.is_file() else []


# ------------------------------------------------------------------------------------------------ figures


def _curve_bands(groups: dict[str, list[ArmRun]], labels: dict[str, str], keys: Sequence[str],
                 x_key: str) -> list[Band]:
    """One mean ± std band per arm of the first of `keys` present in its histories, against `x_key`."""
    bands = []
    for i, (arm, runs) in enumerate(groups.items()):
        histories = [with_wall_clock(r.history) for r in runs]
        key = first_present([row for h in histories for row in h], keys)
        bands.append(Band(labels[arm], i, *aggregate_curves(histories, key, x_key)))
    return bands


def _step_loss_bands(groups: dict[str, list[ArmRun]], labels: dict[str, str]) -> list[Band]:
    """Per-step training loss, binned per 1/50 epoch and averaged over seeds; arms whose runs logged no steps
    have no band."""
    bands = []
    for i, (arm, runs) in enumerate(groups.items()):
        curves = []
        for run in runs:
            steps = _read_steps(run)
            epochs = max((history_value(r, "epoch") for r in run.history), default=math.nan)
            epochs = epochs if math.isfinite(epochs) and epochs > 0 else float(config_value(run, "train", "epochs", 1))
            if steps:
                x, y = bin_step_losses(steps, epochs)
                curves.append([{"x": a, "y": b} for a, b in zip(x, y)])
        if curves:
            bands.append(Band(labels[arm], i, *aggregate_curves(curves, "y", "x")))
    return bands


def _figures(study_dir: Path, groups: dict[str, list[ArmRun]], labels: dict[str, str]) -> list[Figure]:
    def panels(specs: Sequence[tuple[str, Sequence[str]]], x_key: str) -> list[tuple[str, list[Band]]]:
        return [(title, _curve_bands(groups, labels, keys, x_key)) for title, keys in specs]

    loss_panels = [("train subset", TRAIN_LOSS_KEYS), ("validation", ("val_loss",))]
    acc_panels = [("train subset", TRAIN_ACC_KEYS), ("validation", ("val_acc",))]
    path = study_dir / "figures"
    step_ylabel = f"training loss (bin means, bins <= 1/{STEP_BINS_PER_EPOCH} epoch)"
    drawn = [
        (curve_panels_figure(panels(loss_panels, "epoch"), path / "optim_loss_epochs.png", "epoch", "loss",
                             log_y=True),
         "Loss against epochs (mean over seeds, band ±1 std)."),
        (curve_panels_figure(panels(loss_panels, WALL_KEY), path / "optim_loss_time.png",
                             "wall-clock training time (s)", "loss", log_y=True),
         "Loss against wall-clock training time (mean over seeds, band ±1 std)."),
        (curve_panels_figure(panels(acc_panels, "epoch"), path / "optim_accuracy.png", "epoch", "accuracy"),
         "Accuracy against epochs (mean over seeds, band ±1 std)."),
        (step_loss_figure(_step_loss_bands(groups, labels), path / "optim_step_loss.png", step_ylabel),
         f"Per-step training loss: the mean of each bin of 1/{STEP_BINS_PER_EPOCH} epoch (wider for arms with few "
         f"steps, >= {MIN_STEPS_PER_BIN} steps a bin), then mean over seeds (band ±1 std, clipped on the log axis)."),
    ]
    return [Figure(Path("figures") / saved.name, caption) for saved, caption in drawn if saved is not None]


# ------------------------------------------------------------------------------------------------ tables


def _reference(study: StudyConfig, arm: str) -> dict:
    arms = (study.reference or {}).get("arms") or {}
    entry = arms.get(arm) if isinstance(arms, dict) else None
    return entry if isinstance(entry, dict) else {}


def _arm_row(arm: str, runs: list[ArmRun], target: float | None, ref: dict) -> dict:
    """One summary.csv row: numbers for machines, plus the mean ± std strings the report table shows."""
    first = runs[0]
    test = [test_accuracy(r) for r in runs]
    train = [train_accuracy(r) for r in runs]
    times = [_train_time(r) for r in runs]
    to_target = [time_to_target(r.history, target) for r in runs] if target is not None else []
    reached = [t for t in to_target if t is not None]
    row = {"arm": arm, "label": ref.get("label", arm), "optimizer": config_value(first, "optim", "name"),
           "batch_size": config_value(first, "train", "batch_size"),
           "lr": ", ".join(sorted({f"{config_value(r, 'optim', 'lr'):g}" for r in runs if config_value(r, "optim", "lr")})),
           "seeds": len(runs)}
    for name, values in (("test_accuracy", test), ("train_accuracy", train), ("time_s", times),
                         ("time_to_target_s", reached)):
        row[f"{name}_mean"], row[f"{name}_std"] = mean_std(values)
    row["target_accuracy"] = target
    row["target_reached"] = f"{len(reached)}/{len(runs)}"
    row["test_accuracy"], row["train_accuracy"] = fmt_mean_std(test), fmt_mean_std(train)
    row["time"] = fmt_mean_std(times, digits=1)
    row["time_to_target"] = fmt_mean_std(reached, digits=1) + ("" if len(reached) == len(runs)
                                                               else f" ({len(reached)}/{len(runs)} seeds)")
    row["reference_test_accuracy"] = ref.get("test_accuracy")
    row["reference_train_accuracy"] = ref.get("train_accuracy")
    return row


def _results_table(rows: list[dict], target: float | None) -> Table:
    target_text = f"{target:.3f}" if target is not None else "—"
    columns = ["Optimizer", "batch size", "lr", "test_accuracy", "train_accuracy", "time (s)",
               f"time to val acc ≥ {target_text} (s)", "reference test", "reference train"]
    cells = [[r["label"], r["batch_size"], r["lr"], r["test_accuracy"], r["train_accuracy"], r["time"],
              r["time_to_target"], r["reference_test_accuracy"], r["reference_train_accuracy"]] for r in rows]
    return Table(columns, cells, caption="Mean ± std over seeds. test_accuracy: the best-validation epoch's "
                                         "weights; train_accuracy: the same weights on a fixed train subset; "
                                         "time: wall-clock training time (evaluation excluded); reference: the "
                                         "reference report's numbers (its own setup).")


def _lr_search_table(study_dir: Path, arms: Sequence[str]) -> Table | None:
    """The equal-effort learning-rate searches the runner left in <arm>/lr-search/lr_search.csv, if any."""
    rows = []
    for arm in arms:
        path = study_dir / arm / "lr-search" / "lr_search.csv"
        if path.is_file():
            rows += [[arm, history_value(r, "lr"), history_value(r, "val_accuracy"), history_value(r, "val_loss"), r.get("diverged")]
                     for r in read_csv(path)]
    if not rows:
        return None
    return Table(["arm", "lr", "val_accuracy", "val_loss", "diverged"], rows,
                 caption="Learning-rate search: one run per grid point, same budget, chosen on validation accuracy.")


ARM_KEYS = ("optim.", "train.batch_size", "seed", "name")  # what arms of an optimizer study may differ in


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(groups: dict[str, list[ArmRun]]) -> list[str]:
    """Config keys, other than the optimizer's, batch size and seed, whose values differ between runs (unfair)."""
    flat = [_flatten(run.config) for runs in groups.values() for run in runs]
    keys = sorted({k for f in flat for k in f if not k.startswith(ARM_KEYS)})
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]


def _protocol(groups: dict[str, list[ArmRun]], target: float | None, target_source: str) -> Paragraph:
    first = next(iter(groups.values()))[0]
    seeds = sorted({r.seed for runs in groups.values() for r in runs})
    differences = config_differences(groups)
    fairness = ("arms differ only in optimizer, batch size and learning rate" if not differences else
                f"WARNING, not an equal-effort comparison: the arms also differ in {', '.join(differences)}")
    text = (f"Every arm trains model `{config_value(first, 'model', 'name')}` on `{config_value(first, 'data', 'name')}` for "
            f"{config_value(first, 'train', 'epochs')} epochs with the `{config_value(first, 'train', 'schedule')}` schedule; "
            f"{fairness}. Seeds {seeds}: numbers are mean ± "
            f"sample std over seeds. Losses and accuracies are measured each epoch on a fixed train subset and on "
            f"the validation split; test accuracy once, after training.")
    if target is not None:
        text += f" Target accuracy {target:.3f} ({target_source})."
    return Paragraph(text)


# ------------------------------------------------------------------------------------------------ protocols


# ------------------------------------------------------------------------------------------------ entry point


def summarize(study_dir: Path, study: StudyConfig, runs: list[ArmRun]) -> tuple[list, list[dict]]:
    """Report blocks (protocol, table, lr search, figures) and one summary row per arm of an optimizers study."""
    study_dir = Path(study_dir)
    groups = group_by_arm(runs)
    if not groups:
        return [Paragraph("No finished runs to summarise.")], []
    target = (study.reference or {}).get("target_accuracy")
    source = "set in the study file"
    if target is None:
        target, source = default_target(groups), "the lowest, over arms, of the mean best validation accuracy"
    rows = [_arm_row(arm, arm_runs, target, _reference(study, arm)) for arm, arm_runs in groups.items()]
    labels = {row["arm"]: f"{row['label']} (bs {row['batch_size']})" for row in rows}
    short, protocol = protocol_of(study_dir, list(groups))
    title = "equal-effort tuning" if short.startswith("tuned") else "fixed learning rates"
    blocks: list = [Heading(f"Optimizers: {title}", 2), _protocol(groups, target, source),
                    Paragraph(f"Protocol: {protocol}."), _results_table(rows, target)]
    lr_table = _lr_search_table(study_dir, list(groups))
    if lr_table is not None:
        blocks.append(lr_table)
    blocks += _figures(study_dir, groups, labels)
    return blocks, rows
