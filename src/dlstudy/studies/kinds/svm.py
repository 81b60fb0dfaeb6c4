"""Summary of an `svm` study (Q1): per-arm test metrics of the SVM, mean ± std over seeds, beside the reference."""

from __future__ import annotations

from pathlib import Path

from dlstudy.config import StudyConfig
from dlstudy.metrics.table import study_metrics
from dlstudy.report import Block, Figure, Paragraph, Table
from dlstudy.studies.summary.records import ArmRun, fmt_mean_std, group_by_arm, mean_std, metric, val_accuracy

METRICS = study_metrics()  # (metrics.json key, column title), a view of dlstudy.metrics.table.METRICS
COLUMNS = ["Arm", "features", "multi_class", "C"] + [title for _, title in METRICS]


def _svm_info(runs: list[ArmRun]) -> tuple[str, str, str]:
    """features, formulation (with kernel when rbf) and the C values chosen over seeds."""
    first = runs[0].metrics.get("svm", {})
    features = str(first.get("features") or runs[0].config.get("svm", {}).get("features", "—"))
    multi_class = str(first.get("multi_class") or runs[0].config.get("svm", {}).get("multi_class", "—"))
    if first.get("kernel") == "rbf":
        multi_class += " (rbf)"
    chosen = sorted({r.metrics.get("svm", {}).get("C") for r in runs} - {None})
    return features, multi_class, " / ".join(f"{c:g}" for c in chosen) or "—"


def summarize(study_dir: Path, study: StudyConfig, runs: list[ArmRun]) -> tuple[list[Block], list[dict]]:
    """The table Arm | features | multi_class | C | accuracy | macro P/R/F1 | AUC and summary.csv rows."""
    table_rows, summary = [], []
    for arm, arm_runs in group_by_arm(runs).items():
        features, multi_class, chosen = _svm_info(arm_runs)
        table_rows.append([arm, features, multi_class, chosen]
                          + [fmt_mean_std(metric(r, k) for r in arm_runs) for k, _ in METRICS])
        row = {"arm": arm, "n_seeds": len(arm_runs), "features": features, "multi_class": multi_class, "C": chosen}
        for key, _ in METRICS:
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(metric(r, key) for r in arm_runs)
        summary.append(row)
    blocks: list[Block] = [Table(COLUMNS, table_rows, "Test metrics of the SVM per arm, mean ± std over seeds "
                                 "(macro averages; AUC one-vs-rest on decision_function scores; C chosen on val)")]
    ref = study.reference.get("accuracy") if study.reference else None
    if ref is not None and summary:
        by_arm = group_by_arm(runs)
        best = max(summary, key=lambda r: val_accuracy(by_arm.get(r["arm"], [])))  # chosen on val, not test
        blocks.append(Paragraph(f"Reference report: test accuracy {ref}. Arm with the best validation accuracy: "
                                f"{best['arm']}, test accuracy {best['accuracy_mean']:.3f}."))
    for arm, arm_runs in group_by_arm(runs).items():  # first seed's figures of each arm
        for name, caption in (("confusion_matrix_normalized", "confusion matrix (rows normalised)"), ("roc", "ROC")):
            path = arm_runs[0].path / "figures" / f"{name}.png"
            if path.is_file():
                rel = path.relative_to(study_dir) if path.is_relative_to(study_dir) else path
                blocks.append(Figure(rel, f"{arm}, seed {arm_runs[0].seed}: {caption}"))
    return blocks, summary
