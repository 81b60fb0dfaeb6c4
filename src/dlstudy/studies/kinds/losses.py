"""Summary of a `losses` study (the reference report's Que-2): one row per arm, Model | Loss | accuracy | precision |
recall | f_score (mean ± std over seeds), the reference report's numbers beside ours, retrieval metrics of the
embedding arms, collapse warnings, and a 2-D PCA figure of test embeddings coloured by class.

What it reads from each run folder:
    config.yaml       model.name, loss.name, eval.classifier, loss.triplet_margin
    metrics.json      accuracy, precision_macro, recall_macro, f1_macro (top level, i.e. after training);
                      optional "retrieval" {precision_at_1, recall_at_1, recall_at_5, map_at_r} (or those keys at
                      top level) and optional "collapse" {collapsed, warning}
    history.csv       the triplet loss column (triplet / train_triplet, or train_loss for loss=triplet) for the
                      collapse guard
    embeddings_test.pt  optional {"embeddings": (N, E), "labels": (N,)} written by the engine for embedding arms
Reference numbers: study.reference.arms.<arm> = {model, loss, accuracy, precision, recall, f_score}.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from dlstudy.config import StudyConfig
from dlstudy.figures.study import scatter_panels_figure
from dlstudy.losses.collapse import collapse_diagnostics
from dlstudy.report.blocks import Figure, Heading, Paragraph, Table
from dlstudy.studies.summary.records import ArmRun, config_value, fmt_mean_std, group_by_arm, mean_std, metric

log = logging.getLogger(__name__)

COLUMNS = (("accuracy", "accuracy"), ("precision_macro", "precision"), ("recall_macro", "recall"),
           ("f1_macro", "f_score"))  # (metrics.json key, the reference table's column name)
RETRIEVAL = (("precision_at_1", "P@1"), ("recall_at_1", "R@1"), ("recall_at_5", "R@5"), ("map_at_r", "MAP@R"))
LOSS_LABELS = {"ce": "cross-entropy", "triplet+ce": "triplet + CE", "center+ce": "center + CE", "triplet": "triplet"}
MAX_PCA_CLASSES = 20  # more colours than this are unreadable; larger label sets show their first 20 classes


# ------------------------------------------------------------------------------------------------ pure helpers


def pca_2d(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 2) projection on the two leading principal components (SVD of the centred data)."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[:2].T
    return proj if proj.shape[1] == 2 else np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))


def loss_label(run: ArmRun) -> str:
    """'triplet + SVM' for a triplet arm classified by the SVM, 'cross-entropy' for ce, ..."""
    name = config_value(run, "loss", "name", "ce")
    label = LOSS_LABELS.get(name, name)
    classifier = config_value(run, "eval", "classifier", "head")
    if classifier != "head":
        label += " + " + ("SVM" if classifier == "svm" else f"{classifier}".upper().replace("KNN", "k-NN"))
    return label


def retrieval_value(run: ArmRun, key: str) -> float | None:
    block = run.metrics.get("retrieval")
    value = block.get(key) if isinstance(block, dict) else run.metrics.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _reference(study: StudyConfig, arm: str) -> dict:
    arms = (study.reference or {}).get("arms") or {}
    return arms.get(arm) or {}


def _fmt_reference(ref: dict) -> str:
    values = [ref.get(col) for _, col in COLUMNS]
    if all(v is None for v in values):
        return "—"
    return " / ".join("—" if v is None else f"{float(v):.3f}" for v in values)


# ------------------------------------------------------------------------------------------------ tables


def results_table(study: StudyConfig, groups: dict[str, list[ArmRun]]) -> Table:
    rows = []
    for arm, runs in groups.items():
        ref = _reference(study, arm)
        rows.append([config_value(runs[0], "model", "name", "?"), loss_label(runs[0]), arm, len(runs)]
                    + [fmt_mean_std(metric(r, key) for r in runs) for key, _ in COLUMNS]
                    + [ref.get("model", "—"), ref.get("loss", "—"), _fmt_reference(ref)])
    columns = (["Model", "Loss", "arm", "seeds"] + [col for _, col in COLUMNS]
               + ["reference model", "reference loss", "reference acc / prec / rec / f"])
    source = (study.reference or {}).get("source", "")
    caption = ("Test metrics per arm, mean ± std over seeds (precision, recall, f_score: macro averages)"
               + (f"; reference: {source}" if source else ""))
    return Table(columns, rows, caption)


def retrieval_table(groups: dict[str, list[ArmRun]]) -> Table | None:
    rows = []
    for arm, runs in groups.items():
        cells = [fmt_mean_std(retrieval_value(r, key) for r in runs) for key, _ in RETRIEVAL]
        if any(c != "—" for c in cells):
            rows.append([arm, loss_label(runs[0])] + cells)
    if not rows:
        return None
    return Table(["arm", "Loss"] + [title for _, title in RETRIEVAL], rows,
                 "Embedding retrieval, test queries against train references (Euclidean): precision@1, recall@k "
                 "(a same-class neighbour among the k nearest), MAP@R")


def summary_rows(study: StudyConfig, groups: dict[str, list[ArmRun]]) -> list[dict]:
    rows = []
    for arm, runs in groups.items():
        row: dict = {"arm": arm, "model": config_value(runs[0], "model", "name"), "loss": loss_label(runs[0]),
                     "n_seeds": len(runs), "seeds": " ".join(str(r.seed) for r in runs)}
        for key, _ in COLUMNS:
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(metric(r, key) for r in runs)
        for key, _ in RETRIEVAL:
            row[f"{key}_mean"], _std = mean_std(retrieval_value(r, key) for r in runs)
        ref = _reference(study, arm)
        for _, col in COLUMNS:
            row[f"reference_{col}"] = ref.get(col)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ embeddings


def load_test_embeddings(run: ArmRun) -> tuple[np.ndarray, np.ndarray] | None:
    """(embeddings (N, E), labels (N,)) from the run's embeddings_test.pt, or None when absent or unreadable."""
    path = Path(run.path) / "embeddings_test.pt"
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        emb, labels = obj["embeddings"], obj["labels"]
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        log.warning("%s: cannot read test embeddings (%s); no PCA figure for this run", path, exc)
        return None
    return np.asarray(emb, dtype=np.float64), np.asarray(labels).astype(np.int64)


def _triplet_losses(run: ArmRun) -> list[float]:
    """The training triplet loss per epoch from history.csv (train_loss when the objective is triplet alone)."""
    keys = ["triplet", "train_triplet"] + (["train_loss"] if config_value(run, "loss", "name") == "triplet" else [])
    for key in keys:
        values = [row.get(key) for row in run.history]
        values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))]
        if values:
            return values
    return []


def run_collapse(run: ArmRun, loaded: tuple[np.ndarray, np.ndarray] | None) -> dict | None:
    """The engine's collapse record in metrics.json, else our own diagnosis from the saved test embeddings."""
    recorded = run.metrics.get("collapse")
    if isinstance(recorded, dict):
        return recorded
    if loaded is None or "triplet" not in str(config_value(run, "loss", "name", "")) or len(loaded[0]) < 2:
        return None
    margin = math.log(2.0) if config_value(run, "loss", "triplet_soft", False) else float(
        config_value(run, "loss", "triplet_margin", 0.2))
    losses = _triplet_losses(run)
    return collapse_diagnostics(torch.as_tensor(loaded[0]), losses, margin, warn=False)


def pca_figure(panels: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> Path:
    """One scatter per (title, embeddings, labels): 2-D PCA coloured by class, at most 20 classes each."""
    projected = []
    for title, emb, labels in panels:
        keep = labels < MAX_PCA_CLASSES  # (N,) the first 20 classes when there are more
        projected.append((title, pca_2d(emb[keep]), labels[keep], len(np.unique(labels))))  # xy: (N_kept, 2)
    return scatter_panels_figure(projected, path, MAX_PCA_CLASSES)


# ------------------------------------------------------------------------------------------------ summary


def _embedding_blocks(study_dir: Path, groups: dict[str, list[ArmRun]]) -> list:
    """Collapse warnings and the PCA figure of the first seed of every arm that saved test embeddings."""
    panels, warnings_ = [], []
    for arm, runs in groups.items():
        shown = False
        for run in runs:
            loaded = load_test_embeddings(run)
            diag = run_collapse(run, loaded)
            if diag and diag.get("collapsed"):
                warnings_.append(f"{arm} seed {run.seed}: {diag.get('warning') or 'embedding collapse'}")
            if loaded is not None and not shown:
                panels.append((f"{arm} (seed {run.seed})", *loaded))
                shown = True
    blocks: list = []
    if warnings_:
        blocks.append(Paragraph("Warning, collapsed embeddings: " + "; ".join(warnings_)))
    if panels:
        path = pca_figure(panels, Path(study_dir) / "figures" / "loss_embeddings_pca.png")
        blocks.append(Figure(path.relative_to(study_dir), "Test embeddings (features for arms without an embedding head), 2-D PCA, "
                                   "coloured by class; one seed per arm"))
    return blocks


def summarize(study_dir: Path, study: StudyConfig, runs: list[ArmRun]) -> tuple[list, list[dict]]:
    """Report blocks of the losses study and its summary.csv rows (one per arm)."""
    groups = group_by_arm(runs)
    blocks: list = [Heading("Loss functions: cross-entropy, triplet + CE, center + CE, triplet + SVM", 2),
                    results_table(study, groups)]
    retrieval = retrieval_table(groups)
    if retrieval is not None:
        blocks.append(retrieval)
    target = (study.reference or {}).get("expected")
    if target:
        blocks.append(Paragraph(f"Expected with this budget: {target}"))
    blocks += _embedding_blocks(study_dir, groups)
    return blocks, summary_rows(study, groups)
