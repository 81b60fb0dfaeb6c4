"""The CPU tier of `dlstudy reproduce`: chained runs (`@arm` weights), section order, the plan printed before
anything runs, bf16 autocast on CPUs that compute it natively, and the tier end to end on ../shared/data."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import yaml

from dlstudy.cli import main
from dlstudy.config import StudyConfig, from_dict
from dlstudy.engine import loop
from dlstudy.errors import ConfigError
from dlstudy.studies.running import plan as plan_mod
from dlstudy.studies.running import reproduce
from dlstudy.studies.running.runner import plan_study, referenced_studies
from helpers import fake_study


def _study(**changes) -> StudyConfig:
    data = {"name": "s", "seeds": [0, 1], "base": {"task": "train", "data": {"name": "digits"}},
            "arms": [{"name": "pretrain"}, {"name": "finetune", "set": {"model.weights": "@pretrain"}}]}
    data.update(changes)
    return from_dict(StudyConfig, data, "study")


def test_arm_weights_resolve_to_the_same_seed_of_that_arm(tmp_path):
    tasks = plan_study(_study(), tmp_path)
    chained = [t for t in tasks if t.arm == "finetune"]
    assert [t.cfg.model.weights for t in chained] == [str(tmp_path / "s" / "pretrain" / f"seed-{s}") for s in (0, 1)]
    assert all(t.cfg.model.weights == "none" for t in tasks if t.arm == "pretrain")


def test_arm_weights_naming_no_arm_is_a_config_error(tmp_path):
    study = _study(arms=[{"name": "a", "set": {"model": {"weights": "@pretrian"}}}])
    with pytest.raises(ConfigError, match=r"model.weights: '@pretrian' names no arm of study 's'; its arms are \['a'\]"):
        plan_study(study, tmp_path)


def test_cross_study_weights_are_found_in_nested_and_dotted_keys(tmp_path):
    study = _study(arms=[{"name": "a", "set": {"svm.weights": "@other/x"}},
                         {"name": "b", "set": {"model": {"weights": "@third/y"}}}])
    assert referenced_studies(study) == {"other", "third"}
    task = plan_study(study, tmp_path)[0]
    assert task.cfg.svm.weights == str(tmp_path / "other" / "x" / "seed-0")


@pytest.fixture
def chained_studies(fake_studies):
    """conftest's fake quick studies, where Q1 (svm) takes weights from an arm of the Q1 bonus study."""
    study = fake_study("svm")
    study["arms"][1]["set"]["model.weights"] = "@finetune-quick/a"
    (fake_studies / "svm-quick.yaml").write_text(yaml.safe_dump(study))
    (fake_studies / "losses-quick.yaml").write_text(yaml.safe_dump(fake_study("losses")))  # no failing arm here
    return fake_studies


def test_a_study_taking_weights_from_another_runs_after_it(tmp_path, chained_studies, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert main(["reproduce", "--quick", "--budget", "tiny", "--out", str(out)]) == 0
    calls = [line.split()[0] for line in (tmp_path / "calls.log").read_text().splitlines()]
    assert calls.index("a/seed-0") < calls.index("b/seed-0")
    studies_run = [s["study"] for s in json.loads((out / "reproduce.json").read_text())["sections"]]
    assert studies_run == ["finetune", "svm", "losses"] + list(reproduce.SECTIONS[-1].files)
    cfg = yaml.safe_load((out / "svm-quick" / "b" / "seed-0" / "config.yaml").read_text())
    assert cfg["model"]["weights"] == str(out / "finetune-quick" / "a" / "seed-0")
    md = (out / "report.md").read_text()
    titles = [s.title for s in reproduce.SECTIONS]
    assert [md.index(t) for t in titles] == sorted(md.index(t) for t in titles)  # the report keeps Q1 first
    # the plan is printed before anything runs, with the data sizes of every section
    text = caplog.text
    assert text.index("plan (sections in the order they run):") < text.index("== Q1 bonus")
    assert "1. Q1 bonus. Fine-tuning before vs after [finetune-quick]: 2 arm(s) x 1 seed(s), 2 run(s) to do" in text
    assert "data: digits 8 px (native): 240 train / " in text
    assert "ETA" in text


def test_only_a_study_whose_weights_source_was_never_run_fails_before_running(tmp_path, chained_studies, capsys):
    code = main(["reproduce", "--quick", "--only", "svm", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "takes weights from study 'finetune-quick', which is neither in this reproduce run nor in" \
        in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_missing_dataset_fails_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DLSTUDY_DATA", raising=False)
    code = main(["reproduce", "--tier", "cpu", "--budget", "tiny", "--data-root", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "not found. Searched:" in err and str(tmp_path / "empty") in err
    assert not (tmp_path / "o").exists()


def test_plan_estimates_from_last_run_or_calibration(tmp_path):
    (tmp_path / "reproduce.json").write_text(json.dumps({"tier": "cpu", "budget": None, "sections": [
        {"study": "svm", "seconds": 300.0, "failed": []}, {"study": "losses", "seconds": 10.0, "failed": []},
        {"study": "optimizers", "seconds": 900.0, "failed": ["x"]}]}))
    assert plan_mod.last_section_seconds(tmp_path, "cpu") == {"svm": 300.0}  # failed / only-skipped sections: no
    assert plan_mod.last_section_seconds(tmp_path, "quick") == {}
    study = _study(minutes=10.0)
    tasks = plan_study(study, tmp_path / "x")
    p = plan_mod.plan_section("T", study, tasks, None, factor=1.5)
    assert (p.estimate_s, p.estimate_from, p.runs_left, p.arms, p.seeds) == (900.0, "calibrated", 4, 2, 2)
    assert plan_mod.plan_section("T", study, tasks, 120.0, 1.5).estimate_s == 120.0
    assert plan_mod.plan_section("T", _study(), tasks, None, None).estimate_s is None
    text = plan_mod.format_plan([p], 1.5)
    assert "estimated ~15.0 min (calibrated)" in text and "total: ~15 min" in text
    assert plan_mod.calibration_seconds(steps=1) > 0


def test_cpu_tier_study_files_declare_their_measured_minutes():
    from dlstudy.studies.running.runner import load_study

    minutes = {s.study: [load_study(reproduce.study_file(stem, "cpu")).minutes for stem in s.files]
               for s in reproduce.SECTIONS}  # every study file of a section (Q3 runs four)
    for section, values in minutes.items():
        assert all(values) and sum(values) <= 25, section  # the limit per section
    assert sum(sum(values) for values in minutes.values()) <= 60


@pytest.mark.parametrize("native", [True, False])
def test_bf16_autocast_on_cpu_only_where_the_cpu_computes_it(monkeypatch, native):
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: native)
    dtype, why = loop.amp_dtype_for("bf16", "cpu")
    assert (dtype, why == "") == ((torch.bfloat16, True) if native else (None, False))
    assert loop.amp_dtype_for("fp16", "cpu") == (None, "train.amp=fp16 needs CUDA")
    assert loop.amp_dtype_for("none", "cpu") == (None, "")
    assert loop.amp_dtype_for("fp16", "cuda") == (torch.float16, "")


def test_cpu_bf16_training_step_matches_float32_closely():
    """The autocast path the engine takes on CPU: same loss as float32 within bf16 precision, float32 weights."""
    from dlstudy.config import ModelConfig
    from dlstudy.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="airbench"), 10, 3, 32)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    with loop.autocast("cpu", torch.bfloat16):
        low = torch.nn.functional.cross_entropy(model(x)["logits"], y)
    full = torch.nn.functional.cross_entropy(model(x)["logits"], y)
    assert abs(low.item() - full.item()) < 0.05 * full.item()
    low.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())


def test_train_num_threads_applies_to_the_run_and_is_restored(tmp_path):
    from dlstudy.config import build_run_config
    from dlstudy.jobs import run_job
    from dlstudy.runs import RunDir

    seen = []
    before = torch.get_num_threads()
    cfg = build_run_config({"data": {"name": "digits", "max_train": 100, "max_eval": 50}, "model": {"name": "mlp"},
                            "train": {"epochs": 1, "num_threads": 1, "evaluate_before": False}})
    original = loop.train_one_epoch

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    import dlstudy.engine.session as job_mod
    job_mod.train_one_epoch, saved = spy, job_mod.train_one_epoch
    try:
        run_job(cfg, RunDir(tmp_path / "r"))
    finally:
        job_mod.train_one_epoch = saved
    assert seen == [1] and torch.get_num_threads() == before


@pytest.mark.shared_data
@pytest.mark.timeout(600)
def test_cpu_tier_end_to_end_at_tiny_budget(tmp_path, shared_data):
    """`dlstudy reproduce --tier cpu` on the real data at the tiny budget: every section's real code path once."""
    out = tmp_path / "cpu"
    code = main(["reproduce", "--tier", "cpu", "--budget", "tiny", "--data-root", str(shared_data),
                 "--out", str(out)])
    record = json.loads((out / "reproduce.json").read_text())
    failures = [f for s in record["sections"] for f in s["failed"]]
    assert code == 0, failures
    assert record["tier"] == "cpu"
    assert [s["study"] for s in record["sections"]] == ["finetune", "svm", "losses"] + list(reproduce.SECTIONS[-1].files)
    svm_cfg = yaml.safe_load((out / "svm-cpu" / "features-finetuned" / "seed-0" / "config.yaml").read_text())
    assert svm_cfg["svm"]["weights"] == str(out / "finetune-cpu" / "airbench-pretrained" / "seed-0")
    md = (out / "report.md").read_text()
    for section in reproduce.SECTIONS:
        assert section.title in md
    assert "Data: tiny-imagenet, cifar10" in md
