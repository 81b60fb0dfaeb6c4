"""The losses study: both study files validate, and the summary builds its table, retrieval table, collapse
warning and PCA figure from run folders (fake runs written here in the run-folder format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dlstudy.report.blocks import Figure, Paragraph, Table
from dlstudy.io import atomic_write_csv, atomic_write_json
from dlstudy.studies.kinds.losses import loss_label, pca_2d, summarize
from dlstudy.studies.summary.records import load_arm_run
from dlstudy.studies.running.runner import load_study, plan_study

STUDIES = Path(__file__).resolve().parents[2] / "studies"


@pytest.mark.parametrize("name", ["losses.yaml", "losses-quick.yaml"])
def test_study_files_validate_with_five_reference_arms(name, tmp_path):
    study = load_study(STUDIES / name)
    tasks = plan_study(study, tmp_path, source=name)
    assert study.kind == "losses" and len(study.arms) == 5
    assert set(study.reference["arms"]) == {a.name for a in study.arms}
    by_arm = {t.arm: t.cfg for t in tasks}
    assert by_arm["resnet18-triplet+svm"].loss.name == "triplet"
    assert by_arm["resnet18-triplet+svm"].eval.classifier == "svm"
    assert by_arm["densenet121-triplet+ce"].model.embedding_dim
    assert {c.loss.name for c in by_arm.values()} == {"ce", "triplet+ce", "triplet", "center+ce"}


def test_pca_2d_matches_sklearn():
    from sklearn.decomposition import PCA

    x = np.random.default_rng(0).normal(size=(60, 5)) * [5, 3, 1, 0.5, 0.1]
    ours = pca_2d(x)
    oracle = PCA(n_components=2).fit_transform(x)
    np.testing.assert_allclose(np.abs(ours), np.abs(oracle), atol=1e-9)  # components are defined up to sign


def _fake_run(path: Path, model: str, loss: str, classifier: str, acc: float, embeddings=None, history=None,
              retrieval=None):
    path.mkdir(parents=True)
    cfg = {"seed": int(path.name.split("-")[1]), "model": {"name": model}, "loss": {"name": loss,
           "triplet_margin": 0.2}, "eval": {"classifier": classifier}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    metrics = {"accuracy": acc, "precision_macro": acc + 0.01, "recall_macro": acc, "f1_macro": acc - 0.01}
    if retrieval:
        metrics["retrieval"] = retrieval
    atomic_write_json(path / "metrics.json", metrics)
    atomic_write_csv(path / "history.csv", history or [{"epoch": 1, "train_loss": 1.0}])
    if embeddings is not None:
        torch.save({"embeddings": embeddings[0], "labels": embeddings[1]}, path / "embeddings_test.pt")
    return load_arm_run(path)


def test_summary_table_reference_and_embedding_figure(tmp_path):
    study = load_study(STUDIES / "losses-quick.yaml")
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(25).repeat(4)  # 25 classes: the figure shows the first 20
    spread = (torch.randn(100, 8, generator=gen), labels)
    collapsed = (torch.ones(100, 8), labels)
    runs = [
        _fake_run(tmp_path / "densenet121-ce" / "seed-0", "smallcnn", "ce", "head", 0.90),
        _fake_run(tmp_path / "densenet121-ce" / "seed-1", "smallcnn", "ce", "head", 0.94),
        _fake_run(tmp_path / "resnet18-triplet+svm" / "seed-0", "mlp", "triplet", "svm", 0.80, embeddings=spread,
                  retrieval={"precision_at_1": 0.7, "recall_at_1": 0.7, "recall_at_5": 0.9, "map_at_r": 0.5}),
        _fake_run(tmp_path / "resnet18-triplet+svm" / "seed-1", "mlp", "triplet", "svm", 0.10, embeddings=collapsed,
                  history=[{"epoch": e, "train_loss": 0.2} for e in range(1, 6)]),
    ]
    blocks, rows = summarize(tmp_path, study, runs)
    tables = [b for b in blocks if isinstance(b, Table)]
    main = tables[0]
    assert main.columns[:8] == ["Model", "Loss", "arm", "seeds", "accuracy", "precision", "recall", "f_score"]
    cells = {r[2]: r for r in main.cells()}
    assert cells["densenet121-ce"][4] == "0.920 ± 0.028"  # mean ± sample std of 0.90 and 0.94
    assert cells["resnet18-triplet+svm"][1] == "triplet + SVM"
    assert cells["resnet18-triplet+svm"][-1] == "0.326 / 0.318 / 0.326 / 0.318"
    assert any("P@1" in t.columns for t in tables[1:])
    warning = [b for b in blocks if isinstance(b, Paragraph) and "collapse" in b.text]
    assert warning and "seed 1" in warning[0].text and "seed 0" not in warning[0].text
    figures = [b for b in blocks if isinstance(b, Figure)]
    # relative to the study folder, where its report is (a path from the cwd breaks under a relative --out)
    assert len(figures) == 1 and not figures[0].path.is_absolute() and (tmp_path / figures[0].path).is_file()
    row = {r["arm"]: r for r in rows}["densenet121-ce"]
    assert row["accuracy_mean"] == pytest.approx(0.92) and row["reference_accuracy"] == 0.478


def test_loss_labels(tmp_path):
    run = _fake_run(tmp_path / "arm" / "seed-0", "mlp", "triplet", "knn", 0.5)
    assert loss_label(run) == "triplet + k-NN"
