"""The typed config machinery: from_dict, overrides, unknown keys, type errors, dotted keys, YAML round trip."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from dlstudy.config import (ArmConfig, DataConfig, RunConfig, StudyConfig, build_run_config, deep_merge, dump_yaml,
                            expand_dotted, from_dict, load_yaml_mapping, parse_overrides, set_dotted, to_dict)
from dlstudy.errors import ConfigError


def test_defaults_and_nested_sections():
    cfg = from_dict(RunConfig, {"task": "svm", "data": {"name": "mnist", "max_train": 100}, "svm": {"C": [0.1, 1]}})
    assert cfg.task == "svm" and cfg.data.name == "mnist" and cfg.data.max_train == 100
    assert cfg.svm.C == [0.1, 1.0] and all(isinstance(c, float) for c in cfg.svm.C)  # int -> float
    assert cfg.model == from_dict(RunConfig, {}).model  # untouched sections keep their defaults
    assert from_dict(RunConfig, None) == RunConfig()


@pytest.mark.parametrize("data, message", [
    ({"trian": {}}, "config: unknown key(s) ['trian']; valid keys are ['data', 'device', 'eval', 'loss', 'model', "
                    "'name', 'optim', 'seed', 'svm', 'task', 'train']"),
    ({"train": {"epoch": 1}}, "config.train: unknown key(s) ['epoch']; valid keys are ["),
    ({"train": {"epochs": 1.5}}, "config.train.epochs: expected int, got 1.5 (float)"),
    ({"train": {"epochs": True}}, "config.train.epochs: expected int, got True (bool)"),
    ({"optim": {"lr": "fast"}}, "config.optim.lr: expected float, got 'fast' (str)"),
    ({"train": {"compile": "yes"}}, "config.train.compile: expected bool (true/false), got 'yes' (str)"),
    ({"data": {"max_train": "10"}}, "config.data.max_train: expected int | None, got '10' (str)"),
    ({"svm": {"C": 1.0}}, "config.svm.C: expected a list, got 1.0 (float)"),
    ({"svm": {"C": [1, "x"]}}, "config.svm.C[1]: expected float, got 'x' (str)"),
    ({"data": "digits"}, "config.data: expected a mapping of DataConfig fields, got 'digits'"),
])
def test_errors_name_the_key_and_the_expected_type(data, message):
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, data, "config")
    assert message in str(info.value)


def test_unknown_key_lists_every_valid_key():
    with pytest.raises(ConfigError) as info:
        from_dict(DataConfig, {"nmae": "x"}, "data")
    for name in (f.name for f in dataclasses.fields(DataConfig)):
        assert repr(name) in str(info.value)


def test_optional_fields_accept_null():
    cfg = from_dict(RunConfig, {"data": {"max_train": None, "image_size": 32}, "optim": {"momentum": None}})
    assert cfg.data.max_train is None and cfg.data.image_size == 32 and cfg.optim.momentum is None


def test_study_config_nested_arms_and_typed_grid():
    study = from_dict(StudyConfig, {"name": "s", "arms": [{"name": "a", "set": {"train.epochs": 2}}],
                                    "grid": {"optim.lr": [0.1, 1]}})
    assert study.arms == [ArmConfig("a", {"train.epochs": 2})] and study.grid == {"optim.lr": [0.1, 1]}
    with pytest.raises(ConfigError, match=r"study.grid.optim.lr: expected a list, got 0.1 \(float\)"):
        from_dict(StudyConfig, {"name": "s", "grid": {"optim.lr": 0.1}}, "study")
    with pytest.raises(ConfigError, match=r"study: missing required key\(s\) \['name'\]"):
        from_dict(StudyConfig, {}, "study")


def test_dotted_keys_expand_and_merge():
    assert expand_dotted({"a.b": 1, "a": {"c": 2}, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    tree: dict = {}
    set_dotted(tree, "x.y.z", 5)
    assert tree == {"x": {"y": {"z": 5}}}
    merged = deep_merge({"train": {"epochs": 1, "batch_size": 8}}, {"train.epochs": 3})
    assert merged == {"train": {"epochs": 3, "batch_size": 8}}


def test_parse_overrides_types_values_as_yaml():
    tree = parse_overrides(["train.epochs=5", "svm.C=[0.1, 1]", "data.root=/tmp/x", "train.compile=true",
                            "data.max_train=null", "name="])
    assert tree == {"train": {"epochs": 5, "compile": True}, "svm": {"C": [0.1, 1]},
                    "data": {"root": "/tmp/x", "max_train": None}, "name": ""}
    assert parse_overrides(None) == {}


@pytest.mark.parametrize("pair, message", [("train.epochs", "expected key=value"), ("=3", "empty key"),
                                           ("svm.C=[1,", "cannot parse value")])
def test_parse_overrides_errors(pair, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides([pair])


def test_build_run_config_later_layers_win_and_are_validated():
    cfg = build_run_config({"train": {"epochs": 1, "batch_size": 8}}, {"train.epochs": 2},
                           parse_overrides(["train.epochs=3"]))
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 8
    with pytest.raises(ConfigError, match=r"cfg.train.epochs: expected int, got 'x' \(str\)"):
        build_run_config({}, parse_overrides(["train.epochs=x"]), where="cfg")


def test_yaml_round_trip(tmp_path):
    cfg = build_run_config({"task": "svm", "svm": {"C": [0.5, 2]}, "optim": {"betas": [0.9, 0.99]}})
    assert from_dict(RunConfig, yaml.safe_load(dump_yaml(cfg))) == cfg
    assert to_dict(cfg)["svm"]["C"] == [0.5, 2.0]


def test_load_yaml_mapping_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml_mapping(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_yaml_mapping(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level, got list"):
        load_yaml_mapping(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml_mapping(tmp_path / "empty.yaml") == {}
