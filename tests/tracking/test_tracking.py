"""--log tensorboard,mlflow and `dlstudy export-logs`: the logs read back with the libraries' own readers
(TensorBoard's EventAccumulator, mlflow.MlflowClient) equal the run's files (history.csv, steps.csv, metrics.json,
config.yaml) and the study's summary.csv, value by value."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import typing
from pathlib import Path

import mlflow  # the `tracking` extra, which `make test` installs
import pytest
import yaml
from tensorboard.backend.event_processing import event_accumulator

from dlstudy.cli import main
from dlstudy.config import TrainConfig


SMALL = ["--data", "digits", "--set", "data.max_train=300", "--set", "data.max_eval=200", "--device", "cpu"]
F32 = dict(rel=1e-6, abs=1e-7)  # TensorBoard keeps scalars as float32


@pytest.fixture(autouse=True)
def _no_mlflow_env(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "DLSTUDY_MLFLOW_URI"):
        monkeypatch.delenv(name, raising=False)


def _numbers(path: Path) -> list[dict]:
    def cell(text):
        return None if text == "" else float(text)

    with open(path, newline="") as fh:
        return [{k: cell(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _events(folder: Path):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _client(out: Path):
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")


def _mlflow_run(client, experiment: str, key: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id], f"tags.`dlstudy.run` = '{key}'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    """A train run (mlp, 2 epochs) and an svm run (raw pixels), both with --log tensorboard,mlflow, in one OUT."""
    out = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "DLSTUDY_MLFLOW_URI"):
            mp.delenv(name, raising=False)
        assert main(["train", *SMALL, "--model", "mlp", "--epochs", "2", "--out", str(out), "--name", "mlp",
                     "--log", "tensorboard,mlflow"]) == 0
        assert main(["svm", *SMALL, "--out", str(out), "--name", "svm", "--C", "0.1", "1",
                     "--log", "tensorboard,mlflow"]) == 0
    return out


def _check_results(acc, run, client, run_dir: Path, step: int) -> dict:
    """test/ and test_before/ scalars of TensorBoard and MLflow equal metrics.json (logged at `step`)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = {f"test/{k}": metrics[k] for k in ("accuracy", "f1_macro", "precision_macro", "roc_auc_macro")}
    if metrics.get("before"):
        expected["test_before/accuracy"] = metrics["before"]["accuracy"]
    for tag, value in expected.items():
        assert _scalars(acc, tag) == [(step, pytest.approx(value, **F32))], tag
        assert run.data.metrics[tag] == value, tag  # MLflow keeps float64: exact
        assert _history(client, run.info.run_id, tag) == [(step, value)]
    return metrics


def test_train_run_logs_equal_its_files(logged):
    run_dir = logged / "mlp"
    history, steps = _numbers(run_dir / "history.csv"), _numbers(run_dir / "steps.csv")
    assert len(history) == 2 and len(steps) > 2

    acc = _events(run_dir / "tensorboard")
    client = _client(logged)
    run = _mlflow_run(client, logged.name, "mlp")  # a plain run: the experiment is named for its output folder
    for column in [c for c in history[0] if c != "epoch"]:
        expected = [(int(r["epoch"]), r[column]) for r in history]
        assert [(s, pytest.approx(v, **F32)) for s, v in expected] == _scalars(acc, f"epoch/{column}"), column
        assert _history(client, run.info.run_id, f"epoch/{column}") == expected, column
    expected = [(int(r["global_step"]), r["loss"]) for r in steps]
    assert _scalars(acc, "step/loss") == [(s, pytest.approx(v, **F32)) for s, v in expected]
    assert _history(client, run.info.run_id, "step/loss") == expected
    _check_results(acc, run, client, run_dir, step=2)
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "name: mlp" in text  # the resolved config, as text

    png = run_dir / "figures" / "confusion_after.png"
    image = acc.Images("figures/confusion_after")[0]
    from PIL import Image

    with Image.open(png) as im:
        assert (image.width, image.height) == im.size

    config = _flatten(yaml.safe_load((run_dir / "config.yaml").read_text()))
    assert run.data.params == {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    env = json.loads((run_dir / "env.json").read_text())
    tags = run.data.tags
    assert (tags["seed"], tags["task"], tags["arm"]) == ("0", "train", "")
    assert tags["commit"] == tags["mlflow.source.git.commit"] == env["git_commit"]
    assert run.info.status == "FINISHED" and run.info.run_name == "mlp"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "predictions.npz", "config.yaml", "metrics.json", "figures"} <= artifacts
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert figures == {f"figures/{p.name}" for p in (run_dir / "figures").glob("*.png")}


def test_svm_run_logs_equal_its_files(logged):
    run_dir = logged / "svm"
    acc = _events(run_dir / "tensorboard")
    client = _client(logged)
    run = _mlflow_run(client, logged.name, "svm")
    metrics = _check_results(acc, run, client, run_dir, step=0)
    assert run.data.metrics["svm/C"] == metrics["svm"]["C"] == pytest.approx(_scalars(acc, "svm/C")[0][1], **F32)
    assert run.data.params["svm.C"] == "[0.1, 1.0]" and run.data.tags["task"] == "svm"
    assert "figures/confusion_matrix" in acc.Tags()["images"]
    assert not acc.Tags()["scalars"] or "step/loss" not in acc.Tags()["scalars"]  # no training steps


def test_export_logs_of_a_finished_folder_equals_the_live_log(logged, capsys):
    """A folder logged nowhere (a copy without tensorboard/ beside the original, so in the same store and
    experiment), exported: the same scalars, params and metric histories as the live log of the original."""
    copy = logged / "mlp-copy"
    shutil.copytree(logged / "mlp", copy, ignore=shutil.ignore_patterns("tensorboard"))
    assert main(["export-logs", str(copy), "--to", "tensorboard,mlflow"]) == 0
    assert "tensorboard --logdir" in capsys.readouterr().out

    live, exported = _events(logged / "mlp" / "tensorboard"), _events(copy / "tensorboard")
    assert sorted(live.Tags()["scalars"]) == sorted(exported.Tags()["scalars"])
    for tag in live.Tags()["scalars"]:
        assert _scalars(live, tag) == _scalars(exported, tag), tag
    assert sorted(live.Tags()["images"]) == sorted(exported.Tags()["images"])

    client = _client(logged)
    live_run, run = _mlflow_run(client, logged.name, "mlp"), _mlflow_run(client, logged.name, "mlp-copy")
    assert run.data.params == live_run.data.params
    assert run.data.metrics.keys() == live_run.data.metrics.keys()
    for key in live_run.data.metrics:
        assert _history(client, run.info.run_id, key) == _history(client, live_run.info.run_id, key), key
    assert run.data.tags["dlstudy.path"] == str(copy.resolve())

    # exported again: replaced, not doubled (_mlflow_run asserts one run of the key)
    assert main(["export-logs", str(copy), "--to", "mlflow"]) == 0
    assert _mlflow_run(client, logged.name, "mlp-copy").info.run_id != run.info.run_id


STUDY = """
name: tiny
description: two loss arms on digits, one epoch
kind: losses
seeds: [0]
base:
  task: train
  device: cpu
  data: {name: digits, max_train: 200, max_eval: 100}
  model: {name: mlp}
  train: {epochs: 1, batch_size: 40, train_eval_subset: 100, evaluate_before: false}
  loss: {classes_per_batch: 10, samples_per_class: 4}
arms:
  - name: ce
    set: {loss: {name: ce}}
  - name: triplet-ce
    set: {model: {embedding_dim: 16}, loss: {name: triplet+ce}}
"""


def test_study_hparams_and_mlflow_runs_equal_summary_csv(logged, tmp_path):
    (tmp_path / "tiny.yaml").write_text(STUDY)
    out = logged  # the same store as the plain runs (a new store costs seconds): a study is its own experiment
    assert main(["run", str(tmp_path / "tiny.yaml"), "--out", str(out), "--log", "tensorboard,mlflow"]) == 0
    study_dir = out / "tiny"
    with open(study_dir / "summary.csv", newline="") as fh:
        summary = {row["arm"]: row for row in csv.DictReader(fh)}
    assert sorted(summary) == ["ce", "triplet-ce"]
    metric_columns = [c[:-5] for c in summary["ce"] if c.endswith("_mean") and summary["ce"][c] not in ("", "nan")]
    assert "accuracy" in metric_columns

    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    client = _client(out)
    exp = client.get_experiment_by_name("tiny")
    assert exp.tags["mlflow.note.content"] == "two loss arms on digits, one epoch"
    assert len(client.search_runs([exp.experiment_id])) == 2
    for arm, row in summary.items():
        assert (study_dir / arm / "seed-0" / "tensorboard").is_dir()  # the run's curves, logged live
        acc = _events(study_dir / "hparams" / arm / "seed-0")
        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = HParamsPluginData.FromString(content).session_start_info.hparams
        assert hparams["arm"].string_value == arm
        assert hparams["loss.name"].string_value == {"ce": "ce", "triplet-ce": "triplet+ce"}[arm]
        assert hparams["model.embedding_dim"].string_value == {"ce": "null", "triplet-ce": "16"}[arm]
        assert "optim.lr" not in hparams  # the same in every arm: not an hparam
        run = _mlflow_run(client, "tiny", f"{arm}/seed-0")
        assert (run.data.tags["arm"], run.data.tags["seed"], run.info.status) == (arm, "0", "FINISHED")
        for key in metric_columns:
            expected = float(row[f"{key}_mean"])
            assert _scalars(acc, f"test/{key}") == [(0, pytest.approx(expected, **F32))], key
            assert run.data.metrics[f"test/{key}"] == pytest.approx(expected, rel=1e-12), key


@pytest.mark.parametrize("package", ["mlflow", "tensorboard"])
def test_missing_package_is_one_clear_error_naming_the_extra(package, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` raises ImportError
    out = tmp_path / "out"
    assert main(["train", *SMALL, "--model", "mlp", "--epochs", "1", "--out", str(out), "--log", package]) == 2
    err = capsys.readouterr().err
    assert f"needs the {package} package" in err and "pip install 'dlstudy[tracking]'" in err
    assert not out.exists()  # nothing written
    (tmp_path / "tiny.yaml").write_text(STUDY)
    assert main(["run", str(tmp_path / "tiny.yaml"), "--out", str(out), "--log", package]) == 2
    assert "dlstudy[tracking]" in capsys.readouterr().err and not out.exists()


def test_unknown_tracker_names_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--log", "tensorbord", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "unknown tracker 'tensorbord'; valid trackers are ['mlflow', 'tensorboard']" in capsys.readouterr().err
    (tmp_path / "cfg.yaml").write_text("train: {log: [wandb]}\n")
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "train.log[0]: expected one of ['tensorboard', 'mlflow'], got 'wandb'" in capsys.readouterr().err


def test_config_names_are_the_tracker_registry():
    from dlstudy.tracking import TRACKERS

    (item,) = typing.get_args(typing.get_type_hints(TrainConfig)["log"])
    assert set(typing.get_args(item)) == set(TRACKERS)


def test_mlflow_store_precedence(tmp_path, monkeypatch):
    """--mlflow-uri (DLSTUDY_MLFLOW_URI, which study workers inherit) > $MLFLOW_TRACKING_URI > OUT/mlflow.db."""
    import argparse

    from dlstudy.commands.flags import use_log_flags
    from dlstudy.tracking.mlflow_log import tracking_uri

    out = tmp_path / "runs"
    assert tracking_uri(out) == (f"sqlite:///{out.resolve()}/mlflow.db", (out.resolve() / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking_uri(out) == ("http://env:5000", None)  # the server keeps its own artifact store
    use_log_flags(argparse.Namespace(mlflow_uri="http://flag:5000"), ["mlflow"])
    assert tracking_uri(out) == ("http://flag:5000", None)
    assert tracking_uri(out, "sqlite:////x.db") == ("sqlite:////x.db", None)


def test_export_logs_bad_input(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["export-logs", str(tmp_path / "run"), "--to", "tensorboard"]) == 2
    assert "not a finished run folder" in capsys.readouterr().err
    assert main(["export-logs", str(tmp_path / "nope"), "--to", "mlflow"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()
