"""`dlstudy export`: a run's classifier as one ONNX / TorchScript graph that scores the run's test images as the run
did, checked by the command and here again with onnxruntime / torch.jit on our side; each bad input one error."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from dlstudy.cli import main
from dlstudy.config import build_run_config
from dlstudy.data import load_dataset
from dlstudy.inference import load_run
from dlstudy.jobs import run_job
from dlstudy.predictions import read_predictions
from dlstudy.runs import RunDir

FAST = {"evaluate_before": False, "train_eval_subset": 100}
RUN_CONFIGS = {
    "train": {"task": "train", "model": {"name": "smallcnn"},
              "train": {"epochs": 1, "batch_size": 64, "max_steps_per_epoch": 10, **FAST}},
    "svm": {"task": "svm", "svm": {"C": [0.1]}},
    # a backbone's features: the train run's network (weights = that run folder), gray replicated to RGB
    "svm-features": {"task": "svm", "svm": {"C": [0.1], "features": "smallcnn", "weights": "@train"}},
    # an embedding SVM under bf16 autocast: the check compares with a float32 scoring of the run
    "triplet-svm": {"task": "train", "model": {"name": "smallcnn", "embedding_dim": 16},
                    "loss": {"name": "triplet+ce", "classes_per_batch": 8, "samples_per_class": 4},
                    "eval": {"classifier": "svm", "retrieval_metrics": False, "save_embeddings": False},
                    "train": {"epochs": 1, "batch_size": 32, "amp": "bf16", "max_steps_per_epoch": 5, **FAST}},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One finished run of each kind on digits, shared by this module's tests."""
    out = tmp_path_factory.mktemp("runs")
    cache = tmp_path_factory.mktemp("cache")
    paths: dict[str, Path] = {}
    for name, layer in RUN_CONFIGS.items():
        if layer.get("svm", {}).get("weights") == "@train":
            layer = {**layer, "svm": {**layer["svm"], "weights": str(paths["train"])}}
        cfg = build_run_config({"device": "cpu", "data": {"name": "digits", "cache_dir": str(cache)}}, layer)
        run_job(cfg, RunDir(out / name))
        paths[name] = out / name
    return paths


def run_test_split(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(the run's test images uint8 (N, C, H, W), their sample ids), from its data config, independently of
    dlstudy.export."""
    split = load_dataset(load_run(run_dir).config.data).test
    return split.images.numpy(), split.sample_ids()


def float32_scores(run_dir: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, probabilities) of the run itself at float32 (train.amp off), through LoadedRun."""
    run = load_run(run_dir)
    run = dataclasses.replace(run, config=dataclasses.replace(
        run.config, train=dataclasses.replace(run.config.train, amp="none")))
    scores = run.scores(torch.from_numpy(images))
    return scores, run.probabilities(scores)


def exported_nothing(*paths: Path) -> bool:
    return not any(p.exists() for p in paths)


@pytest.mark.parametrize("name", list(RUN_CONFIGS))
def test_onnx_export_scores_the_test_images_as_the_run(runs, name, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", str(runs[name]), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    check = sidecar["check"]
    assert "check: 359 test images through onnxruntime" in printed and printed.rstrip().endswith("passed")
    assert check["passed"] and check["max_abs_probability_diff"] <= 1e-4 and check["identical_labels"] >= 0.999
    assert 1 in check["batch_sizes"] and max(check["batch_sizes"]) > 1  # the dynamic batch axis, both ways
    bf16 = name == "triplet-svm"
    assert ("float32 scoring" in check["reference"]) == bf16 and ("run_predictions_vs_float32" in check) == bf16

    # our own oracle: onnxruntime on the test split, against predictions.npz (float32 runs) / LoadedRun at float32
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    images, ids = run_test_split(runs[name])
    assert inp.name == "images" and inp.type == "tensor(uint8)" and isinstance(inp.shape[0], str)
    assert list(inp.shape[1:]) == sidecar["input"]["shape"][1:] == list(images.shape[1:])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": images})))
    preds = read_predictions(runs[name] / "predictions.npz")
    np.testing.assert_array_equal(preds.sample_ids, ids)
    ref_scores, ref_probs = float32_scores(runs[name], images) if bf16 else (preds.scores, None)
    if sidecar["score_kind"] == "margins":
        assert list(outputs) == ["margins", "probabilities"]
        np.testing.assert_allclose(outputs["margins"], ref_scores, atol=1e-4 * max(1.0, np.abs(ref_scores).max()))
        ref_probs = load_run(runs[name]).probabilities(ref_scores)
    else:
        assert list(outputs) == ["probabilities"]
        ref_probs = ref_scores
    assert np.abs(outputs["probabilities"] - ref_probs).max() <= 1e-4
    assert (outputs["probabilities"].argmax(1) == ref_scores.argmax(1)).mean() >= 0.999
    np.testing.assert_allclose(session.run(None, {"images": images[3:4]})[-1], outputs["probabilities"][3:4],
                               atol=1e-6)
    assert sidecar["class_names"] == preds.class_names and sidecar["format"] == "onnx"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", ["train", "svm", "triplet-svm"])
def test_torchscript_export_scores_the_test_images_as_the_run(runs, name, tmp_path):
    from dlstudy.export import export_run

    result = export_run(runs[name], "torchscript", tmp_path / "model.pt")
    assert result.check["passed"] and result.check["runtime"].startswith("TorchScript")
    assert result.check["max_abs_probability_diff"] <= 1e-4 and result.check["identical_labels"] >= 0.999
    images, _ = run_test_split(runs[name])
    module = torch.jit.load(str(result.path))
    with torch.no_grad():
        probs = module(torch.from_numpy(images[:50]))[-1].numpy()
    _, ref_probs = float32_scores(runs[name], images[:50])
    assert np.abs(probs - ref_probs).max() <= 1e-4
    assert json.loads(result.sidecar.read_text())["check"] == json.loads(json.dumps(result.check))


def test_default_out_is_the_run_exports_folder(runs, tmp_path):
    run = shutil.copytree(runs["svm"], tmp_path / "svm")
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    assert sorted(p.name for p in (run / "exports").iterdir()) == ["model.pt", "model.pt.json"]


# ------------------------------------------------------------------------------------------------ bad input


def test_a_run_without_weights_is_one_error(runs, tmp_path, capsys):
    run = shutil.copytree(runs["train"], tmp_path / "run")
    (run / "checkpoints" / "best.pt").unlink()
    out = tmp_path / "x" / "model.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "best.pt" in err and "no checkpoint" in err and err.count("\n") == 1
    assert exported_nothing(out.parent, run / "exports")


@pytest.mark.parametrize("package", ["onnxruntime", "onnx", "onnxscript"])
def test_a_missing_onnx_package_is_one_error(runs, tmp_path, monkeypatch, capsys, package):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` raises ImportError
    out = tmp_path / "model.onnx"
    assert main(["export", str(runs["svm"]), "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"needs the package(s) {package}" in err and "dlstudy[export]" in err
    assert exported_nothing(out, runs["svm"] / "exports")


def _unexportable(model):
    """The same network (same weights) whose features pass through an eigen-decomposition (no ONNX function) and
    a NumPy round trip (a trace keeps it as a constant of the example batch): the numbers are unchanged."""
    parent = type(model.backbone)

    def forward(self, x):
        f = parent.forward(self, x)  # (B, F)
        f = f + 0.0 * torch.linalg.eigvalsh(f.T @ f).sum()
        return torch.from_numpy(f.detach().numpy().copy())

    model.backbone.__class__ = type("Unexportable", (parent,), {"forward": forward})
    return model


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_architecture_that_cannot_export_is_one_error(runs, tmp_path, monkeypatch, capsys, fmt):
    import dlstudy.models

    build = dlstudy.models.build_model
    monkeypatch.setattr(dlstudy.models, "build_model", lambda *a, **k: _unexportable(build(*a, **k)))
    run = shutil.copytree(runs["train"], tmp_path / "run")
    assert load_run(run).scores(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)).shape == (2, 10)  # it runs in torch
    out = tmp_path / "out" / "model.bin"
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    expected = "cannot be exported to onnx" if fmt == "onnx" else "the torchscript file returns shapes"
    assert expected in err and "nothing was written" in err and err.count("\n") == 1
    if fmt == "onnx":
        assert "eigh" in err
    assert exported_nothing(out.parent, run / "exports")


def test_out_naming_a_folder_is_one_error(runs, tmp_path, capsys):
    assert main(["export", str(runs["svm"]), "--format", "torchscript", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
