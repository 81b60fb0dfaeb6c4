"""The generic study summary: per-arm mean ± std of the headline metrics and a bar chart of accuracy."""

from __future__ import annotations

from pathlib import Path

from dlstudy.config import StudyConfig
from dlstudy.report import Block, Figure, Table
from dlstudy.figures.study import bar_figure
from dlstudy.studies.summary.records import ArmRun, fmt_mean_std, group_by_arm, mean_std, metric

# (metrics.json key, column title)
HEADLINE = (("accuracy", "accuracy"), ("precision_macro", "precision"), ("recall_macro", "recall"),
            ("f1_macro", "f1"), ("roc_auc_macro", "AUC"))


def summary_rows(runs: list[ArmRun], keys=tuple(k for k, _ in HEADLINE), block: str | None = None) -> list[dict]:
    """summary.csv rows: arm, n_seeds, seeds, then <key>_mean and <key>_std for every key (over seeds)."""
    rows = []
    for arm, arm_runs in group_by_arm(runs).items():
        row: dict = {"arm": arm, "n_seeds": len(arm_runs), "seeds": " ".join(str(r.seed) for r in arm_runs)}
        for key in keys:
            mean, std = mean_std(metric(r, key, block) for r in arm_runs)
            row[f"{key}_mean"], row[f"{key}_std"] = mean, std
        rows.append(row)
    return rows


def metrics_table(runs: list[ArmRun], caption: str = "", block: str | None = None) -> Table:
    """Arm | n seeds | accuracy | precision | recall | f1 | AUC, each mean ± std over seeds."""
    rows = []
    for arm, arm_runs in group_by_arm(runs).items():
        rows.append([arm, len(arm_runs)] + [fmt_mean_std(metric(r, k, block) for r in arm_runs) for k, _ in HEADLINE])
    return Table(["arm", "n seeds"] + [title for _, title in HEADLINE], rows,
                 caption or "Test metrics per arm, mean ± std over seeds (macro averages; AUC one-vs-rest)")


def accuracy_bar_figure(runs: list[ArmRun], path: Path, key: str = "accuracy", title: str = "") -> Path:
    """Bar per arm of the mean of `key` with a ±1 std error bar, saved as PNG at `path`."""
    groups = group_by_arm(runs)
    stats = [mean_std(metric(r, key) for r in rs) for rs in groups.values()]
    return bar_figure(list(groups), [m for m, _ in stats], [s for _, s in stats], path, f"test {key}",
                      title or f"Test {key} per arm (mean ± std over seeds)")


def summarize(study_dir: Path, study: StudyConfig, runs: list[ArmRun]) -> tuple[list[Block], list[dict]]:
    """Table of headline metrics per arm (mean ± std) and a bar chart of test accuracy."""
    figure = accuracy_bar_figure(runs, Path(study_dir) / "figures" / "accuracy_per_arm.png")
    blocks: list[Block] = [metrics_table(runs),
                           Figure(figure.relative_to(study_dir), "Test accuracy per arm, mean ± std over seeds")]
    return blocks, summary_rows(runs)
