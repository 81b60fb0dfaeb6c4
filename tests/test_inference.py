"""Using a finished run: predictions.npz in every run, LinearSVM save/load, load_run, `evaluate`, `predict`."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import dlstudy
from dlstudy.cli import main
from dlstudy.config import build_run_config
from dlstudy.data import load_dataset
from dlstudy.jobs import run_job
from dlstudy.predictions import make_predictions, read_predictions, write_predictions
from dlstudy.runs import METRIC_KEYS, RunDir
from dlstudy.svm import LinearSVM

RUN_CONFIGS = {
    "train": {"task": "train", "train": {"epochs": 2, "batch_size": 64}},
    "svm": {"task": "svm", "svm": {"C": [0.01, 0.1]}},
    "svm-rbf": {"task": "svm", "svm": {"C": [0.1], "kernel": "rbf", "n_components": 300}},
    "triplet-svm": {"task": "train", "loss": {"name": "triplet+ce", "classes_per_batch": 8, "samples_per_class": 4}, "eval": {"classifier": "svm"},
                    "model": {"name": "smallcnn", "embedding_dim": 16},
                    "train": {"epochs": 1, "batch_size": 64, "amp": "bf16", "channels_last": True}},
    # bf16 autocast (where the CPU has it natively) and channels_last, as the CPU tier's airbench runs
    "train-bf16": {"task": "train", "model": {"name": "smallcnn"},
                   "train": {"epochs": 1, "batch_size": 64, "amp": "bf16", "channels_last": True}},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One finished run of each kind on digits (shared by the tests of this module: ~20 s on 2 cores)."""
    out = tmp_path_factory.mktemp("runs")
    cache = tmp_path_factory.mktemp("cache")
    paths = {}
    for name, layer in RUN_CONFIGS.items():
        cfg = build_run_config({"device": "cpu", "data": {"name": "digits", "cache_dir": str(cache)}}, layer)
        run_job(cfg, RunDir(out / name))
        paths[name] = out / name
    return paths


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ predictions.npz


@pytest.mark.parametrize("name", list(RUN_CONFIGS))
def test_metrics_json_equals_metrics_recomputed_from_predictions(runs, name):
    metrics = json.loads((runs[name] / "metrics.json").read_text())
    preds = read_predictions(runs[name] / "predictions.npz")
    again = json.loads(json.dumps(preds.metrics(), allow_nan=True).replace("NaN", "null"))
    shared = set(again) & set(metrics)
    assert set(METRIC_KEYS) | {"score_kind"} <= shared
    for key in shared:
        assert again[key] == metrics[key], key  # exact: the same float32 scores through the same functions
    if "after" in metrics:
        assert all(again[key] == value for key, value in metrics["after"].items() if key != "loss")
    assert preds.scores.dtype == np.float32 and preds.y_true.dtype == np.int64
    assert metrics["score_kind"] == ("margins" if "svm" in name else "probabilities")
    val = read_predictions(runs[name] / "predictions_val.npz")
    assert len(val.y_true) == metrics["data"]["n_val"] and val.class_names == preds.class_names


def test_sample_ids_name_the_rows_of_the_test_split(runs):
    preds = read_predictions(runs["train"] / "predictions.npz")
    splits = load_dataset(build_run_config({"data": {"name": "digits"}}).data)
    np.testing.assert_array_equal(preds.sample_ids, splits.test.sample_ids())
    assert preds.sample_ids[0].startswith("train:") and len(set(preds.sample_ids)) == len(preds.sample_ids)
    index = np.array([int(s.split(":")[1]) for s in preds.sample_ids])  # index into the official pool
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(load_digits().target[index], preds.y_true)


def test_predictions_file_round_trip_and_refuses_pickles(tmp_path):
    p = make_predictions([0, 1, 1], np.eye(3, 2), "probabilities", ["a", "b"], ["x.png", "y.png", "z.png"])
    back = read_predictions(write_predictions(tmp_path / "p.npz", p))
    np.testing.assert_array_equal(back.scores, p.scores)
    assert back.sample_ids.tolist() == ["x.png", "y.png", "z.png"] and back.score_kind == "probabilities"
    np.save(tmp_path / "evil.npy", np.array([object()], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "evil.npz", y_true=np.array([object()], dtype=object))
    with pytest.raises(dlstudy.errors.DataError, match="evil.npz"):
        read_predictions(tmp_path / "evil.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(dlstudy.errors.DataError, match="junk.npz"):
        read_predictions(tmp_path / "junk.npz")


# ------------------------------------------------------------------------------------------------ LinearSVM files


@pytest.mark.parametrize("settings", [
    {"standardize": True},
    {"kernel": "rbf", "n_components": 50, "standardize": True, "random_state": 3},
    {"multi_class": "crammer_singer", "class_weight": {"b": 2.0}, "fit_intercept": False},
])
def test_linear_svm_save_load_gives_the_same_model(tmp_path, settings):
    rng = np.random.default_rng(0)
    X = rng.normal(3, 2, (120, 6))
    y = np.array(["a", "b", "c"])[(X[:, 0] + X[:, 1] > 6).astype(int) + (X[:, 2] > 4)]
    svm = LinearSVM(C=0.5, **settings).fit(X, y)
    svm.calibrate(X[:30], y[:30])
    path = svm.save(tmp_path / "svm.npz")
    with np.load(path, allow_pickle=False) as npz:  # plain arrays only
        assert "coef_" in npz.files
    back = LinearSVM.load(path)
    assert back.get_params() == svm.get_params()
    np.testing.assert_array_equal(back.decision_function(X), svm.decision_function(X))
    np.testing.assert_array_equal(back.predict(X), svm.predict(X))
    np.testing.assert_array_equal(back.predict_proba(X), svm.predict_proba(X))
    assert back.n_iter_ == svm.n_iter_ and back.calibration_ == "heldout"


def test_linear_svm_load_names_a_bad_file(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="x.npz: not a saved LinearSVM"):
        LinearSVM.load(tmp_path / "x.npz")
    with pytest.raises(ValueError, match="not fitted"):
        LinearSVM().save(tmp_path / "y.npz")


# ------------------------------------------------------------------------------------------------ load_run


@pytest.mark.parametrize("name", list(RUN_CONFIGS))
def test_load_run_scores_equal_the_runs_own_predictions(runs, name):
    run = dlstudy.load_run(runs[name])
    splits = load_dataset(run.config.data)
    preds = read_predictions(runs[name] / "predictions.npz")
    np.testing.assert_array_equal(run.scores(splits.test.images), preds.scores)  # the same path, to the bit
    labels, probs = run.predict(splits.test.images)
    np.testing.assert_array_equal(labels, preds.y_pred)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert run.class_names == [str(d) for d in range(10)] and not getattr(run.model, "training", False)


def test_load_run_takes_pil_and_hwc_arrays_and_resizes(runs):
    from PIL import Image

    run = dlstudy.load_run(runs["train"])
    splits = load_dataset(run.config.data)
    chw = splits.test.images[:4]  # (4, 1, 8, 8)
    expected = run.scores(chw)
    pil = [Image.fromarray(im[0].numpy()) for im in chw]
    np.testing.assert_allclose(run.scores(pil), expected, atol=1e-6)
    rgb_hwc = chw[0].permute(1, 2, 0).repeat(1, 1, 3).numpy()  # (8, 8, 3): converted to the run's 1 channel
    assert run.scores(rgb_hwc).shape == (1, 10)
    big = torch.nn.functional.interpolate(chw.float(), size=(16, 16)).to(torch.uint8)
    assert run.preprocess(big).shape == (4, 1, 8, 8)
    with pytest.raises(ValueError, match="uint8"):
        run.scores(chw.float())


def test_checkpoint_loads_into_a_plain_torchvision_model(tmp_path):
    """The README's recipe: best.pt's 'model' state dict into torchvision's resnet18, without dlstudy."""
    import torchvision

    cfg = build_run_config({"task": "train", "device": "cpu", "data": {"name": "digits", "image_size": 32},
                            "model": {"name": "resnet18", "small_input_stem": False},
                            "train": {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 2,
                                      "evaluate_before": False}})
    run_job(cfg, RunDir(tmp_path / "run"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)["model"]
    tv = torchvision.models.resnet18(num_classes=10)
    tv.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # a gray run: 1 input channel
    tv.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
                       | {"fc." + k[5:]: v for k, v in state.items() if k.startswith("head.")})  # strict: every key
    run = dlstudy.load_run(tmp_path / "run")
    images = load_dataset(run.config.data).test.images[:6]
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    x = (images.float() / 255 - torch.tensor(card["inputs"]["mean"]).view(1, -1, 1, 1)) / \
        torch.tensor(card["inputs"]["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        np.testing.assert_allclose(torch.softmax(tv.eval()(x), 1).numpy(), run.scores(images), atol=1e-5)


# ------------------------------------------------------------------------------------------------ evaluate


def _write_tree(root: Path, images: torch.Tensor, labels: np.ndarray, names: list[str], split: str = "test",
                rgb: bool = False) -> None:
    from PIL import Image

    for i, (im, y) in enumerate(zip(images, labels)):
        folder = root / split / names[y]
        folder.mkdir(parents=True, exist_ok=True)
        arr = im[0].numpy()
        Image.fromarray(np.stack([arr] * 3, -1) if rgb else arr).save(folder / f"{i:04d}.png")


def test_evaluate_on_a_test_only_imagefolder_equals_scoring_by_hand(runs, tmp_path):
    run = dlstudy.load_run(runs["train"])
    test = load_dataset(run.config.data).test
    names = [f"digit-{d}" for d in range(10)]  # other names: must not match the run's '0'..'9'
    tree = tmp_path / "tree"
    _write_tree(tree, test.images[:120], test.labels[:120].numpy(), run.class_names)
    out = tmp_path / "eval"
    assert main(["evaluate", str(runs["train"]), "--data", "imagefolder", "--data-root", str(tree),
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    preds = read_predictions(out / "predictions.npz")
    files = [tree / p for p in preds.sample_ids]
    from dlstudy.inference import load_images
    from dlstudy.report.blocks import format_cell

    images, ok, failed = load_images(files, run)
    by_hand = make_predictions([run.class_names.index(Path(p).parent.name) for p in ok], run.scores(images),
                               "probabilities", run.class_names).metrics()
    for key in ("accuracy", "f1_macro", "roc_auc_macro", "roc_auc_micro", "balanced_accuracy"):
        assert metrics[key] == pytest.approx(by_hand[key], abs=1e-12), key
    assert metrics["n_samples"] == 120 and not failed
    assert {"confusion_matrix.png", "roc.png", "per_class_accuracy.png"} <= {p.name for p in (out / "figures").iterdir()}
    report = (out / "report.md").read_text()
    assert "imagefolder" in report and f"| accuracy | {format_cell(metrics['accuracy'])} |" in report
    assert "95% intervals over the 120 test images" in report and "figures/confusion_matrix.png" in report
    html = (out / "report.html").read_text()
    assert "<table" in html and "<figcaption>ROC curves</figcaption>" in html
    del names


def test_evaluate_maps_reordered_and_subset_classes_by_name(runs, tmp_path):
    run = dlstudy.load_run(runs["svm"])
    test = load_dataset(run.config.data).test
    keep = np.isin(test.labels.numpy(), [2, 5, 7])
    tree = tmp_path / "subset"
    _write_tree(tree, test.images[keep], test.labels[keep].numpy(), run.class_names, rgb=True)
    out = tmp_path / "eval"
    assert main(["evaluate", str(runs["svm"]), "--data", "imagefolder", "--data-root", str(tree),
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_names"] == ["2", "5", "7"] and metrics["n_samples"] == int(keep.sum())
    notes = " ".join(metrics["evaluation"]["notes"])
    assert "3 of the run's 10 classes" in notes and "converted" in notes
    report = (out / "report.md").read_text()
    assert "3 of the run's 10 classes" in report


def test_evaluate_rejects_unknown_class_names_listing_both(runs, tmp_path, capsys):
    run = dlstudy.load_run(runs["train"])
    test = load_dataset(run.config.data).test
    tree = tmp_path / "other"
    _write_tree(tree, test.images[:20], (test.labels[:20].numpy() % 2), ["cat", "dog"])
    before = snapshot(runs["train"])
    assert main(["evaluate", str(runs["train"]), "--data", "imagefolder", "--data-root", str(tree)]) == 2
    err = capsys.readouterr().err
    assert "'cat'" in err and "the run knows" in err and "'0'" in err
    assert snapshot(runs["train"]) == before


@pytest.mark.parametrize("name", ["svm", "train-bf16", "triplet-svm"])
def test_evaluate_own_data_reproduces_the_runs_test_metrics(runs, tmp_path, name):
    """Scoring goes through the engine's evaluation at the run's precision and memory format: the same scores to the
    bit (a float32 re-evaluation of a bf16 run moved 5 of 10,000 CIFAR-10 predictions)."""
    out = tmp_path / "own"
    assert main(["evaluate", str(runs[name]), "--out", str(out)]) == 0
    own = json.loads((runs[name] / "metrics.json").read_text())
    again = json.loads((out / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert again[key] == own[key], key
    np.testing.assert_array_equal(read_predictions(out / "predictions.npz").scores,
                                  read_predictions(runs[name] / "predictions.npz").scores)


# ------------------------------------------------------------------------------------------------ predict


def test_predict_writes_csv_with_top_k_and_reports_unreadable_files(runs, tmp_path, capsys):
    run = dlstudy.load_run(runs["train"])
    test = load_dataset(run.config.data).test
    folder = tmp_path / "imgs"
    _write_tree(folder, test.images[:12], test.labels[:12].numpy(), run.class_names)
    (folder / "test" / "broken.png").write_bytes(b"\x89PNG not really")
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    from PIL import Image

    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    out = tmp_path / "labels.csv"
    code = main(["predict", str(runs["train"]), str(folder), str(tmp_path / "rgba.png"), "--out", str(out)])
    assert code == 1  # one unreadable file
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 13 and {"path", "predicted", "probability", "top1", "p1", "top5", "p5"} <= set(rows[0])
    assert all(r["predicted"] == r["top1"] and float(r["p1"]) >= float(r["p2"]) for r in rows)
    err = capsys.readouterr().err
    assert "broken.png" in err
    labels, _ = run.predict(test.images[:12])
    by_path = {Path(r["path"]).name: r["predicted"] for r in rows}
    assert [by_path[f"{i:04d}.png"] for i in range(12)] == [run.class_names[y] for y in labels]


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_run_folders_are_clear_errors_and_write_nothing(runs, tmp_path, capsys):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    assert main(["evaluate", str(not_a_run)]) == 2
    assert "not a dlstudy run folder" in capsys.readouterr().err
    failed = tmp_path / "failed"
    shutil.copytree(runs["train"], failed)
    shutil.rmtree(failed / "checkpoints")
    shutil.rmtree(failed / "evaluations", ignore_errors=True)
    before = snapshot(failed)
    assert main(["evaluate", str(failed)]) == 2
    assert "no checkpoint" in capsys.readouterr().err and snapshot(failed) == before
    (failed / "checkpoints").mkdir()
    good = (runs["train"] / "checkpoints" / "best.pt").read_bytes()
    (failed / "checkpoints" / "best.pt").write_bytes(good[: len(good) // 2])
    before = snapshot(failed)
    assert main(["predict", str(failed), str(tmp_path)]) == 2
    assert "best.pt" in capsys.readouterr().err and snapshot(failed) == before
    other = runs["triplet-svm"] / "checkpoints" / "best.pt"  # an embedding head: another architecture
    shutil.copy(other, failed / "checkpoints" / "best.pt")
    assert main(["evaluate", str(failed)]) == 2
    assert "do not fit" in capsys.readouterr().err and snapshot(failed)["checkpoints/best.pt"] == other.read_bytes()


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.shared_data
def test_cifar10_run_scored_on_a_separate_imagefolder_tree_equals_load_run_by_hand(shared_data, tmp_path):
    """The issue's must-show: smallcnn trained on the CIFAR-10 tar, then `evaluate --data imagefolder` on a tree of
    JPEGs taken out of the run's held-out test split gives the metrics of scoring those files with load_run."""
    from dlstudy.data.registry import find_dataset
    from dlstudy.data.sources import find_prefix, open_tree
    from dlstudy.inference import load_images

    cfg = build_run_config({"task": "train", "device": "cpu", "data": {"name": "cifar10", "root": str(shared_data),
                                                                       "max_train": 1500, "max_eval": 300},
                            "model": {"name": "smallcnn"}, "train": {"epochs": 1, "batch_size": 64}})
    run_job(cfg, RunDir(tmp_path / "run"))
    preds = read_predictions(tmp_path / "run" / "predictions.npz")
    tree = open_tree(find_dataset(cfg.data))
    tree = tree.sub(find_prefix(tree, "train/") or "")
    d = tmp_path / "D"
    chosen = np.concatenate([np.flatnonzero(preds.y_true == c)[:20] for c in range(10)])  # 20 of every class
    for sample_id in preds.sample_ids[chosen]:  # train/<class>/<file>.jpg inside the tar
        _, cls, name = sample_id.split("/")
        (d / "test" / cls).mkdir(parents=True, exist_ok=True)
        (d / "test" / cls / name).write_bytes(tree.read(sample_id))
    out = tmp_path / "eval"
    assert main(["evaluate", str(tmp_path / "run"), "--data", "imagefolder", "--data-root", str(d),
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    run = dlstudy.load_run(tmp_path / "run")
    files = sorted(d.rglob("*.jpg"))
    images, ok, failed = load_images(files, run)
    y = [run.class_names.index(Path(p).parent.name) for p in ok]
    by_hand = make_predictions(y, run.scores(images), "probabilities", run.class_names).metrics()
    assert not failed and metrics["n_samples"] == len(ok) == 200
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "precision_macro", "roc_auc_macro", "roc_auc_micro"):
        assert metrics[key] == pytest.approx(by_hand[key], abs=1e-12), key
    # the same images inside the run's own test split got the same scores there
    np.testing.assert_allclose(np.sort(read_predictions(out / "predictions.npz").scores.ravel()),
                               np.sort(preds.scores[chosen].ravel()), atol=1e-6)


def test_run_report_gives_intervals_from_the_saved_predictions(runs):
    from dlstudy.stats import proportion_ci

    report = (runs["svm"] / "report.md").read_text()
    preds = read_predictions(runs["svm"] / "predictions.npz")
    low, high = proportion_ci(int(preds.correct.sum()), len(preds.y_true), 0.95, "wilson")
    assert "95% intervals over the" in report and "Clopper-Pearson" in report
    assert f"{low:.4g}" in report and f"{high:.4g}" in report


def test_evaluate_names_an_unreadable_image_and_writes_nothing(runs, tmp_path, capsys):
    run = dlstudy.load_run(runs["train"])
    test = load_dataset(run.config.data).test
    tree = tmp_path / "tree"
    _write_tree(tree, test.images[:20], test.labels[:20].numpy(), run.class_names)
    bad = next((tree / "test").iterdir()) / "zz-truncated.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    before = snapshot(runs["train"])
    assert main(["evaluate", str(runs["train"]), "--data", "imagefolder", "--data-root", str(tree),
                 "--out", str(tmp_path / "eval")]) == 2
    assert "zz-truncated.png" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists() and snapshot(runs["train"]) == before
