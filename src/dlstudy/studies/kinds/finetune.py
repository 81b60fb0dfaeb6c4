"""Summary of a `finetune` study (the reference report's Q1 bonus): test metrics before vs after fine-tuning.

Reads each run's metrics.json (`before` / `after` blocks written by dlstudy.engine) and shows

    arm | n seeds | accuracy before | accuracy after | f1 after | AUC after | train time | images/s
    per-class accuracy before vs after (the reference table), with `study.reference` beside ours
    the first seed's confusion matrices (before, after), loss/accuracy curves and ROC curves

`study.reference` may hold {"before": {"accuracy": 0.09, "per_class_accuracy": [...]}, "after": {...}}.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlstudy.config import StudyConfig
from dlstudy.report.blocks import Block, Figure, Heading, Paragraph, Table
from dlstudy.studies.summary.records import ArmRun, fmt_mean_std, group_by_arm, mean_std, metric

MAX_CLASS_COLUMNS = 20  # wider per-class tables stay in the run's own report
FIGURES = (("confusion_before", "confusion matrix before fine-tuning (test)"),
           ("confusion_after", "confusion matrix after fine-tuning (test)"),
           ("loss_curves", "loss per epoch (train and val)"), ("accuracy_curves", "accuracy per epoch (train and val)"),
           ("roc_after", "ROC curves after fine-tuning (test, one-vs-rest)"))


def _per_class_mean(runs: list[ArmRun], block: str) -> np.ndarray | None:
    """(K,) per-class test accuracy of `block`, mean over seeds; None when no run has it."""
    rows = [metric(r, "per_class_accuracy", block) for r in runs]
    rows = [np.asarray(r, dtype=float) for r in rows if r]
    return np.mean(rows, axis=0) if rows else None


def headline_table(groups: dict[str, list[ArmRun]]) -> Table:
    rows = []
    for arm, runs in groups.items():
        data = ", ".join(sorted({str(n) for r in runs if (n := (r.config.get("data") or {}).get("name"))})) or "—"
        rows.append([arm, data, len(runs), fmt_mean_std(metric(r, "accuracy", "before") for r in runs),
                     fmt_mean_std(metric(r, "accuracy", "after") for r in runs),
                     fmt_mean_std(metric(r, "f1_macro", "after") for r in runs),
                     fmt_mean_std(metric(r, "roc_auc_macro", "after") for r in runs),
                     fmt_mean_std((metric(r, "train_time_s") for r in runs), 1),
                     fmt_mean_std((metric(r, "images_per_s") for r in runs), 0)])
    return Table(["arm", "data", "n seeds", "accuracy before", "accuracy after", "f1 after", "AUC after",
                  "train time (s)", "images/s"], rows,
                 "Test metrics before (new random head) and after fine-tuning (best-val checkpoint), mean ± std "
                 "over seeds")


def class_table(arm: str, runs: list[ArmRun], reference: dict) -> Table | None:
    """The reference report's table: accuracy and class-wise accuracy, before vs after (ours, then reference)."""
    before, after = _per_class_mean(runs, "before"), _per_class_mean(runs, "after")
    if after is None:
        return None
    names = metric(runs[0], "class_names", "after") or [str(i) for i in range(len(after))]
    if len(names) > MAX_CLASS_COLUMNS:  # e.g. a pretraining arm on Tiny ImageNet: 200 columns help nobody
        return None
    columns = ["", "accuracy"] + list(names)
    rows = []
    for label, block, per_class in (("before", "before", before), ("after", "after", after)):
        acc = mean_std(metric(r, "accuracy", block) for r in runs)[0]
        rows.append([f"{label} (ours)", acc] + (list(per_class) if per_class is not None else [None] * len(names)))
        ref = reference.get(block) if isinstance(reference, dict) else None
        if isinstance(ref, dict) and "accuracy" in ref:
            ref_pc = list(ref.get("per_class_accuracy") or [])
            rows.append([f"{label} (reference)", ref["accuracy"]] + ref_pc + [None] * (len(names) - len(ref_pc)))
    return Table(columns, rows, f"{arm}: accuracy and class-wise accuracy on test, before vs after "
                                f"(mean over {len(runs)} seed(s))")


def _figures(study_dir: Path, arm: str, run: ArmRun) -> list[Block]:
    blocks: list[Block] = []
    for name, caption in FIGURES:
        path = Path(run.path) / "figures" / f"{name}.png"
        if path.is_file():
            try:
                path = path.relative_to(study_dir)
            except ValueError:
                pass
            blocks.append(Figure(path, f"{arm} (seed {run.seed}): {caption}"))
    return blocks


def summary_rows(groups: dict[str, list[ArmRun]]) -> list[dict]:
    rows = []
    for arm, runs in groups.items():
        row = {"arm": arm, "n_seeds": len(runs), "seeds": " ".join(str(r.seed) for r in runs)}
        for key, block in (("accuracy", "before"), ("accuracy", "after"), ("f1_macro", "after"),
                           ("roc_auc_macro", "after")):
            row[f"{key}_{block}_mean"], row[f"{key}_{block}_std"] = mean_std(metric(r, key, block) for r in runs)
        row["train_time_s_mean"] = mean_std(metric(r, "train_time_s") for r in runs)[0]
        rows.append(row)
    return rows


def summarize(study_dir: Path, study: StudyConfig, runs: list[ArmRun]) -> tuple[list[Block], list[dict]]:
    """Before-vs-after tables per arm (with the reference numbers) and the first seed's figures."""
    study_dir = Path(study_dir)
    groups = group_by_arm(runs)
    blocks: list[Block] = [headline_table(groups)]
    reference = study.reference or {}
    for arm, arm_runs in groups.items():
        blocks.append(Heading(f"Arm {arm}", 3))
        table = class_table(arm, arm_runs, reference)
        if table is not None:
            blocks.append(table)
        else:
            blocks.append(Paragraph(f"{arm}: no per-class table here (none in metrics.json, or more than "
                                    f"{MAX_CLASS_COLUMNS} classes: see the arm's run report)"))
        blocks.extend(_figures(study_dir, arm, arm_runs[0]))
    return blocks, summary_rows(groups)
