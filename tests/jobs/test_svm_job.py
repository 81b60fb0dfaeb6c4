"""The svm job end to end on digits, feature extraction and its cache, the `dlstudy svm` command, the study summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from dlstudy.config import StudyConfig, build_run_config
from dlstudy.runs import METRIC_KEYS, RunDir
from dlstudy.io import read_csv
from dlstudy.models.forward import forward_batches
from dlstudy.svm import features as F
from dlstudy.jobs.svm import run_svm_job


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DLSTUDY_CACHE", str(tmp_path / "cache"))


class TinyBackbone(nn.Module):
    """forward_features like dlstudy.models.Classifier: (B, 3, H, W) -> (B, 4) pooled features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward_features(self, x):
        assert x.shape[1] == 3, "gray images must arrive replicated to 3 channels"
        return self.conv(x).mean((2, 3))


def test_svm_standardizes_with_train_statistics_like_standard_scaler():
    from sklearn.preprocessing import StandardScaler

    from dlstudy.svm import LinearSVM

    rng = np.random.default_rng(0)
    train, test = rng.normal(5, 3, (200, 4)), rng.normal(5, 3, (50, 4))
    train[:, 3] = 1.0  # a constant column keeps std 1 instead of dividing by zero
    y = (train[:, 0] > 5).astype(int)
    svm = LinearSVM(C=1.0, standardize=True).fit(train, y)
    scaler = StandardScaler().fit(train)
    np.testing.assert_allclose(svm.mean_, scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(svm.scale_, scaler.scale_, rtol=1e-12)
    plain = LinearSVM(C=1.0).fit(scaler.transform(train), y)  # same problem, standardised outside
    np.testing.assert_allclose(svm.decision_function(test), plain.decision_function(scaler.transform(test)),
                               rtol=1e-7, atol=1e-9)
    assert train[0, 0] != 0 and np.allclose(train[:, 3], 1.0)  # the caller's array is untouched


def test_extract_features_batches_gray_images_and_matches_one_pass():
    torch.manual_seed(0)
    model = TinyBackbone()
    images = torch.randint(0, 256, (37, 1, 8, 8), dtype=torch.uint8)
    feats = forward_batches(model, images, output="features", mean=(0.5,), std=(0.25,), batch_size=10,
                            channels=3).numpy()  # what F.backbone_features runs per split
    x = ((images.float() / 255 - 0.5) / 0.25).repeat(1, 3, 1, 1)
    with torch.no_grad():
        np.testing.assert_allclose(feats, model.forward_features(x).numpy(), rtol=1e-5, atol=1e-6)
    assert feats.shape == (37, 4) and feats.dtype == np.float32


def test_feature_cache_is_keyed_and_atomic(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"train": np.ones((3, 2), np.float32), "val": np.zeros((1, 2), np.float32)}

    key = F.feature_cache_key({"name": "digits"}, "resnet18", "imagenet", 32)
    assert key != F.feature_cache_key({"name": "digits"}, "resnet18", "none", 32)
    assert key != F.feature_cache_key({"name": "digits"}, "resnet18", "imagenet", 64)
    path = tmp_path / "features" / f"{key}.pt"
    first = F.cached(path, compute)
    second = F.cached(path, compute)
    assert len(calls) == 1 and np.array_equal(first["train"], second["train"])
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    path.write_bytes(b"truncated")  # a corrupt cache file is recomputed, not fatal
    F.cached(path, compute)
    assert len(calls) == 2


def test_job_end_to_end_on_digits(tmp_path):
    cfg = build_run_config({"task": "svm", "device": "cpu", "svm": {"C": [0.01, 0.1]}})
    run_dir = RunDir(tmp_path / "run")
    metrics = run_svm_job(cfg, run_dir)
    assert set(METRIC_KEYS) <= set(metrics) and metrics["accuracy"] > 0.9
    saved = json.loads((run_dir.path / "metrics.json").read_text())
    assert saved["svm"]["C"] in (0.01, 0.1) and saved["svm"]["n_iter"] > 0 and saved["svm"]["converged"]
    rows = read_csv(run_dir.path / "tables" / "c_selection.csv")
    assert [float(r["C"]) for r in rows] == [0.01, 0.1]
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    assert float(best["C"]) == saved["svm"]["C"]
    for name in ("confusion_matrix", "confusion_matrix_normalized", "roc"):
        assert (run_dir.path / "figures" / f"{name}.png").stat().st_size > 0
    assert run_dir.is_done and (run_dir.path / "config.yaml").is_file()
    assert run_svm_job(cfg, run_dir, resume=True)["accuracy"] == metrics["accuracy"]  # finished: not redone


def test_job_on_backbone_features_uses_the_cache(tmp_path, monkeypatch):
    import dlstudy.models

    built = []

    def fake_build_model(cfg, num_classes, in_channels, image_size):
        built.append((cfg.name, cfg.weights, in_channels, image_size))
        torch.manual_seed(0)
        return TinyBackbone()

    monkeypatch.setattr(dlstudy.models, "build_model", fake_build_model)
    cfg = build_run_config({"task": "svm", "device": "cpu", "data": {"max_train": 300},
                            "svm": {"features": "smallcnn", "weights": "none", "C": [1.0]}})
    m1 = run_svm_job(cfg, RunDir(tmp_path / "a"))
    m2 = run_svm_job(cfg, RunDir(tmp_path / "b"))
    assert built == [("smallcnn", "none", 3, 8)]  # second run read the cached features
    assert m1["svm"]["n_features"] == 4 and m1["accuracy"] == m2["accuracy"]
    bad = build_run_config({"task": "svm", "device": "cpu", "svm": {"features": "nonesuch"}})
    with pytest.raises(ValueError, match="svm.features: expected 'raw' or a model"):
        run_svm_job(bad, RunDir(tmp_path / "c"))


def test_cli_svm_prints_folder_and_accuracy(tmp_path, capsys):
    from dlstudy.cli import main

    code = main(["svm", "--data", "digits", "--out", str(tmp_path), "--C", "0.1", "--multi-class", "weston_watkins",
                 "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "run folder:" in out and "test accuracy:" in out
    run = next(tmp_path.iterdir())
    cfg = json.loads((run / "metrics.json").read_text())["svm"]
    assert cfg["multi_class"] == "weston_watkins" and cfg["C"] == 0.1


def test_study_summary_table(tmp_path):
    from dlstudy.studies.summary.records import ArmRun
    from dlstudy.studies.kinds.svm import COLUMNS, summarize

    def run(arm, seed, acc, mc, val_acc):
        return ArmRun(arm, seed, tmp_path / arm / f"seed-{seed}", {"svm": {"features": "raw"}},
                      {"accuracy": acc, "precision_macro": acc, "recall_macro": acc, "f1_macro": acc,
                       "roc_auc_macro": 0.99, "svm": {"C": 0.1, "features": "raw", "multi_class": mc,
                                                      "kernel": "linear", "val_accuracy": val_acc}})

    # cs has the higher test accuracy but ovr the higher validation accuracy: the named arm is chosen on val
    runs = [run("ovr", 0, 0.90, "ovr", 0.97), run("ovr", 1, 0.92, "ovr", 0.96),
            run("cs", 0, 0.95, "crammer_singer", 0.93)]
    study = StudyConfig(name="svm-test", kind="svm", reference={"accuracy": 0.697})
    blocks, rows = summarize(tmp_path, study, runs)
    table = blocks[0]
    assert table.columns == COLUMNS
    assert table.rows[0][:4] == ["ovr", "raw", "ovr", "0.1"] and table.rows[0][4] == "0.910 ± 0.014"
    assert [r["arm"] for r in rows] == ["ovr", "cs"] and rows[0]["accuracy_mean"] == pytest.approx(0.91)
    assert "0.697" in blocks[1].text and "validation accuracy: ovr, test accuracy 0.910" in blocks[1].text


def test_classes_missing_from_train_are_never_predicted_and_val_zero_works(tmp_path):
    import numpy as np

    from dlstudy.config import build_run_config
    from dlstudy.jobs import run_job
    from dlstudy.runs import RunDir

    cfg = build_run_config({"task": "svm", "data": {"name": "digits", "max_train": 5, "cache": False}})
    metrics = run_job(cfg, RunDir(tmp_path / "few"))
    cm = np.asarray(metrics["confusion_matrix"])
    trained = cm.sum(0) > 0  # predicted columns
    assert trained.sum() <= 5 and metrics["n_samples"] == cm.sum()
    no_val = build_run_config({"task": "svm", "data": {"name": "digits", "val_fraction": 0.0, "cache": False}})
    assert run_job(no_val, RunDir(tmp_path / "noval"))["accuracy"] > 0.9
    with pytest.raises(ValueError, match="need a validation split"):
        run_job(build_run_config({"task": "svm", "svm": {"C": [0.1, 1.0]},
                                  "data": {"name": "digits", "val_fraction": 0.0, "cache": False}}),
                RunDir(tmp_path / "noval-grid"))
