"""The Python entry points (dlstudy.api): the README's notebook example runs as written, and each entry point
writes what its command writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import dlstudy
from dlstudy.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def notebook_example() -> str:
    """The README's "In a notebook" code block."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("**In a notebook.**", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_notebook_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").symlink_to(REPO / "studies")
    namespace: dict = {}
    exec(compile(notebook_example(), "README.md", "exec"), namespace)
    run, study = namespace["run"], namespace["study"]
    assert (run.path / "DONE").is_file() and run.path.parent == Path("runs")
    assert run.metrics["accuracy"] > 0.5  # 10 digit classes, one epoch of smallcnn: far above chance (0.1)
    assert [row["arm"] for row in study.summary] == ["vanilla-sgd", "minibatch-sgd", "minibatch-sgd-momentum",
                                                     "minibatch-adam"]
    assert not study.failed and study.report.is_file()
    printed = capsys.readouterr().out
    assert str(run.path) in printed and "report.md" in printed


def test_train_takes_a_dict_a_yaml_path_or_overrides_and_matches_the_metrics_file(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("data: {name: digits}\nmodel: {name: mlp}\ntrain: {epochs: 1, evaluate_before: false}\n")
    from_yaml = dlstudy.train(config, out=tmp_path / "a", overrides=["seed=3"])
    assert from_yaml.metrics == dlstudy.read_run(from_yaml.path).metrics
    assert "seed: 3" in (from_yaml.path / "config.yaml").read_text()
    from_dict = dlstudy.train({"data": {"name": "digits"}, "model": {"name": "mlp"}},
                              out=tmp_path / "b", overrides={"train": {"epochs": 1, "evaluate_before": False},
                                                             "seed": 3})
    assert from_dict.metrics["accuracy"] == from_yaml.metrics["accuracy"]  # same config, same seed: same run
    labels, _ = from_dict.load().predict(__import__("numpy").zeros((2, 1, 8, 8), dtype="uint8"))
    assert len(labels) == 2


def test_fit_svm_writes_an_svm_run(tmp_path):
    run = dlstudy.fit_svm({"data": {"name": "digits"}, "svm": {"C": [0.1]}}, out=tmp_path)
    assert run.metrics["svm"]["C"] == 0.1 and (run.path / "svm_model.npz").is_file()


def test_bad_config_is_the_clis_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        dlstudy.train({"train": {"epoks": 1}}, out=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        dlstudy.trian  # noqa: B018
