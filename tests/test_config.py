"""The typed config machinery: from_dict, overrides, unknown keys, type errors, dotted keys, YAML round trip."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from dlstudy.config import (RETIRED_KEYS, ArmConfig, DataConfig, RunConfig, StudyConfig, build_run_config, deep_merge,
                            drop_retired_keys, dump_yaml, expand_dotted, from_dict, load_yaml_mapping, parse_overrides,
                            set_dotted, to_dict)
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


@pytest.mark.parametrize("key", RETIRED_KEYS)
def test_retired_key_is_dropped_from_a_saved_run_but_unknown_in_a_new_config(key):
    section, name = key.split(".")
    saved = {**to_dict(RunConfig()), "seed": 3}
    saved[section] = {**saved[section], name: 0}  # a config.yaml written when the key still existed
    with pytest.raises(ConfigError, match=rf"config.{section}: unknown key\(s\) \['{name}'\]"):
        build_run_config(saved)
    assert build_run_config(drop_retired_keys(saved)) == RunConfig(seed=3)
    assert name in saved[section]  # the caller's mapping is not changed
    assert name not in {f.name for f in dataclasses.fields(getattr(RunConfig(), section))}


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


# every numeric field of RunConfig (dotted key) with a value of its type that is out of range
OUT_OF_RANGE = {
    "seed": -1, "data.val_fraction": 1.0, "data.test_fraction": -0.1, "data.split_seed": -1, "data.image_size": 0,
    "data.max_train": 0, "data.max_eval": -5, "model.embedding_dim": 0, "model.dropout": 1.0,
    "optim.lr": 0.0, "optim.weight_decay": -0.1, "optim.momentum": 1.5, "optim.betas": [0.9, 1.0],
    "optim.eps": 0.0, "optim.lr_grid": [0.1, -1.0],
    "train.epochs": -2, "train.batch_size": 0, "train.eval_batch_size": -1, "train.warmup_epochs": -1.0,
    "train.step_size": 0, "train.gamma": 0.0, "train.label_smoothing": 1.0, "train.grad_clip": 0.0,
    "train.freeze_backbone_epochs": -1, "train.backbone_lr_mult": -0.5,
    "train.num_threads": 0, "train.max_steps_per_epoch": 0, "train.train_eval_subset": -1,
    "loss.ce_weight": -1.0, "loss.triplet_weight": -1.0, "loss.triplet_margin": -0.2, "loss.center_weight": -0.01,
    "loss.center_lr": 1.5, "loss.classes_per_batch": 1, "loss.samples_per_class": 1,
    "svm.C": [1.0, 0.0], "svm.gamma": -1.0, "svm.n_components": 0, "svm.tol": 0.0, "svm.max_iter": 0,
    "svm.batch_size": 0, "eval.knn_k": 0,
}


def _numeric_fields(cls: type, prefix: str = "") -> set[str]:
    """Dotted keys of every int / float (optional or in a list) field of a config dataclass tree."""
    import typing

    def numeric(tp) -> bool:
        return tp in (int, float) or any(numeric(a) for a in typing.get_args(tp))

    keys = set()
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys |= _numeric_fields(tp, f"{prefix}{f.name}.")
        elif numeric(tp):
            keys.add(prefix + f.name)
    return keys


def test_every_numeric_field_has_a_range_rule_and_a_test_case():
    from dlstudy.config import RANGES

    assert set(RANGES) == _numeric_fields(RunConfig)
    assert set(OUT_OF_RANGE) == _numeric_fields(RunConfig)


@pytest.mark.parametrize("key", sorted(OUT_OF_RANGE))
def test_out_of_range_values_are_rejected_naming_the_field(key):
    from dlstudy.config import RANGES

    value = OUT_OF_RANGE[key]
    with pytest.raises(ConfigError) as info:
        build_run_config(parse_overrides([f"{key}={value}"]))
    assert f"config.{key}: expected " in str(info.value) and RANGES[key].text in str(info.value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("pair", ["optim.lr=.nan", "train.warmup_epochs=.inf", "svm.C=[1, .nan]"])
def test_nan_and_inf_are_out_of_range(pair):
    with pytest.raises(ConfigError, match=pair.split("=")[0]):
        build_run_config(parse_overrides([pair]))


def test_range_boundaries_and_cross_field_rules():
    edge = build_run_config(parse_overrides(["data.val_fraction=0", "train.epochs=1", "train.train_eval_subset=0",
                                             "train.freeze_backbone_epochs=0", "loss.center_lr=1",
                                             "train.gamma=1", "train.schedule=cosine", "train.warmup_epochs=0.5"]))
    assert edge.train.epochs == 1 and edge.data.val_fraction == 0.0
    with pytest.raises(ConfigError, match=r"train.warmup_epochs=1.0 leaves no steps for the cosine decay"):
        build_run_config({"train": {"schedule": "cosine", "epochs": 1, "warmup_epochs": 1.0}})
    with pytest.raises(ConfigError, match=r"config.svm.C: expected at least one value"):
        build_run_config({"svm": {"C": []}})


def test_tta_takes_known_modes_and_only_with_the_head():
    assert build_run_config(parse_overrides(["eval.tta=flip"])).eval.tta == "flip"
    with pytest.raises(ConfigError, match=r"config.eval.tta: expected one of \['none', 'flip'\], got 'crops'"):
        build_run_config(parse_overrides(["eval.tta=crops"]))
    with pytest.raises(ConfigError, match="eval.tta='flip' averages the head's logits; with eval.classifier='svm'"):
        build_run_config(parse_overrides(["eval.tta=flip", "eval.classifier=svm"]))
