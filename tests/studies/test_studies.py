"""The study runner: arms x seeds end to end (in parallel processes), resume, summary.csv and report numbers,
config errors, grids, failed arms and the learning-rate search.

The job is a small fake registered for these tests (helpers.fake_job, through conftest's `fake` fixture: a
nearest-centroid classifier on the real digits data, its metrics computed with scikit-learn) so the runner is tested
on its own; it logs every call to a file so a test can see which runs were (re)done, also from worker processes.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

import yaml

from dlstudy.cli import main
from dlstudy.errors import ConfigError
from dlstudy.studies.summary.records import fmt_mean_std, load_arm_run, mean_std
from dlstudy.studies.running.runner import expand_arms, load_study, plan_study, run_study
from helpers import calls


def write_study(tmp_path: Path, **changes) -> Path:
    study = {"name": "tiny", "kind": "generic", "description": "Two shrink values on digits.", "seeds": [0, 1],
             "base": {"task": "fake", "data": {"name": "digits"}},
             "arms": [{"name": "sharp", "set": {"optim.weight_decay": 0.0}},
                      {"name": "blurred", "set": {"optim": {"weight_decay": 0.9}}}]}
    study.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_study_runs_in_parallel_resumes_and_summarises(tmp_path, fake):
    path = write_study(tmp_path)
    out = tmp_path / "out"
    study_dir, results = run_study(path, out, jobs=2)
    assert [r.ok for r in results] == [True] * 4
    assert calls(fake) == ["blurred/seed-0 resume=False", "blurred/seed-1 resume=False",
                           "sharp/seed-0 resume=False", "sharp/seed-1 resume=False"]
    # summary.csv: recompute every mean and std from the metrics.json files
    with open(study_dir / "summary.csv") as fh:
        rows = {r["arm"]: r for r in csv.DictReader(fh)}
    assert list(rows) == ["sharp", "blurred"]
    for arm in ("sharp", "blurred"):
        for key in ("accuracy", "f1_macro", "roc_auc_macro"):
            values = [json.loads((study_dir / arm / f"seed-{s}" / "metrics.json").read_text())[key] for s in (0, 1)]
            assert float(rows[arm][f"{key}_mean"]) == pytest.approx(statistics.mean(values))
            assert float(rows[arm][f"{key}_std"]) == pytest.approx(statistics.stdev(values))
        accs = [load_arm_run(study_dir / arm / f"seed-{s}").metrics["accuracy"] for s in (0, 1)]
        assert f"| {arm} | 2 | {fmt_mean_std(accs)} |" in (study_dir / "report.md").read_text()
    page = (study_dir / "report.html").read_text()
    assert "data:image/png;base64," in page and 'href="sharp/seed-0/report.html"' in page
    assert (study_dir / "sharp" / "seed-1" / "report.html").is_file()  # each run's own report

    # resume: only the deleted arm reruns, the finished ones are skipped
    import shutil

    fake.unlink()
    shutil.rmtree(study_dir / "blurred")
    _, results = run_study(path, out, jobs=1)
    assert calls(fake) == ["blurred/seed-0 resume=False", "blurred/seed-1 resume=False"]
    assert len(results) == 2
    # an interrupted run (no DONE) with the same config resumes
    fake.unlink()
    (study_dir / "sharp" / "seed-0" / "DONE").unlink()
    run_study(path, out)
    assert calls(fake) == ["sharp/seed-0 resume=True"]


def test_failed_arm_is_reported_and_others_still_run(tmp_path, fake, capsys):
    arms = [{"name": "bad", "set": {"optim.weight_decay": 2.0}}, {"name": "good", "set": {"optim.weight_decay": 0.0}}]
    path = write_study(tmp_path, arms=arms, seeds=[0])
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    assert code == 1
    study_dir = tmp_path / "out" / "tiny"
    assert (study_dir / "good" / "seed-0" / "DONE").is_file()
    assert "shrink above 1" in (study_dir / "bad" / "seed-0" / "error.txt").read_text()
    report = (study_dir / "report.md").read_text()
    assert "Failed runs (the whole error is in each run's error.txt)" in report
    assert "| bad/seed-0 | ValueError: fake job: shrink above 1 |" in report  # with its reason, not by name only
    assert capsys.readouterr().out.split() == [str(study_dir / "report.md"), str(study_dir / "report.html")]


def test_cli_set_and_seeds_apply_to_every_arm(tmp_path, fake):
    path = write_study(tmp_path)
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--seeds", "5", "--set", "train.epochs=7"]) == 0
    for arm in ("sharp", "blurred"):
        cfg = yaml.safe_load((tmp_path / "o" / "tiny" / arm / "seed-5" / "config.yaml").read_text())
        assert cfg["train"]["epochs"] == 7 and cfg["seed"] == 5
    assert not (tmp_path / "o" / "tiny" / "sharp" / "seed-0").exists()
    # the report is rebuilt from the folder alone
    (tmp_path / "o" / "tiny" / "report.md").unlink()
    assert main(["report", str(tmp_path / "o" / "tiny")]) == 0
    assert "Study tiny" in (tmp_path / "o" / "tiny" / "report.md").read_text()


# ------------------------------------------------------------------------------------------------ config errors


@pytest.mark.parametrize("changes, message", [
    ({"arms_": []}, "unknown key(s) ['arms_']; valid keys are ['arms', 'base', 'budget_min_epochs', "
                    "'budget_schedule', 'budget_share', 'budget_weights', 'confirm_runs', 'description', 'executor', 'grid', 'kind', 'minutes', 'name', "
                    "'reference', 'seeds', 'stats']"),
    ({"seeds": "0"}, "study.seeds: expected a list, got '0' (str)"),
    ({"seeds": [0, "one"]}, "study.seeds[1]: expected int, got 'one' (str)"),
    ({"arms": [{"name": "a", "sett": {}}]}, "study.arms[0]: unknown key(s) ['sett']; valid keys are ['name', 'set']"),
    ({"arms": [{"set": {}}]}, "study.arms[0]: missing required key(s) ['name']"),
    ({"name": "has space"}, "is used as a folder name"),
    ({"seeds": []}, "study.seeds is empty"),
    ({"kind": "svms"}, "study.kind: unknown kind 'svms'; valid kinds are ['finetune', 'generic', 'losses', "
                       "'optimizers', 'svm']"),
])
def test_study_file_errors_name_the_key(tmp_path, fake, changes, message):
    path = write_study(tmp_path, **changes)
    with pytest.raises(ConfigError) as info:
        plan_study(load_study(path), tmp_path / "out")
    assert message in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("arm_set, message", [
    ({"train.epoch": 3}, "arm 'x': config.train: unknown key(s) ['epoch']; valid keys are ["),
    ({"train": {"epochs": "three"}}, "arm 'x': config.train.epochs: expected int, got 'three' (str)"),
    ({"optim.lr": True}, "config.optim.lr: expected float, got True (bool)"),
    ({"task": "nope"}, "arm 'x': task: unknown task 'nope'; valid tasks are ["),
])
def test_every_arm_is_validated_before_anything_runs(tmp_path, fake, arm_set, message):
    arms = [{"name": "ok", "set": {}}, {"name": "x", "set": arm_set}]
    path = write_study(tmp_path, arms=arms)
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    with pytest.raises(ConfigError, match=None) as info:
        run_study(path, tmp_path / "out")
    assert message in str(info.value)
    assert not (tmp_path / "out").exists() and calls(fake) == []  # nothing ran, not even the valid arm


def test_bad_override_and_jobs_are_errors(tmp_path, fake, capsys):
    path = write_study(tmp_path)
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--set", "train.epochs"]) == 2
    assert "expected key=value" in capsys.readouterr().err
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--jobs", "0"]) == 2
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_grid_expands_arms(tmp_path, fake):
    path = write_study(tmp_path, arms=[{"name": "a", "set": {"train.epochs": 1}}],
                       grid={"svm.C": [[0.1], [0.5]], "train.batch_size": [8, 16]})
    arms = expand_arms(load_study(path))
    assert [a.name for a in arms] == ["a-C_0.1-batch_size_8", "a-C_0.1-batch_size_16", "a-C_0.5-batch_size_8",
                                      "a-C_0.5-batch_size_16"]
    tasks = plan_study(load_study(path), tmp_path / "o")[::2]  # seed 0 of each arm
    assert tasks[1].cfg.train.batch_size == 16 and tasks[2].cfg.svm.C == [0.5] and tasks[0].cfg.train.epochs == 1
    with pytest.raises(ConfigError, match="arm names must be unique"):
        expand_arms(load_study(write_study(tmp_path, arms=[{"name": "a"}, {"name": "a"}])))


def test_lr_grid_runs_one_search_per_arm_and_uses_the_best(tmp_path, fake):
    arms = [{"name": "adam", "set": {"optim": {"lr_grid": [0.001, 0.1, 10.0]}}}]
    path = write_study(tmp_path, arms=arms)
    study_dir, results = run_study(path, tmp_path / "out")
    assert all(r.ok for r in results)
    chosen = json.loads((study_dir / "adam" / "lr-search" / "chosen_lr.json").read_text())
    assert chosen["lr"] == pytest.approx(0.1)  # the fake's val accuracy peaks there
    for seed in (0, 1):
        cfg = yaml.safe_load((study_dir / "adam" / f"seed-{seed}" / "config.yaml").read_text())
        assert cfg["optim"]["lr"] == pytest.approx(0.1) and cfg["optim"]["lr_grid"] is None
    searched = [c for c in calls(fake) if c.startswith("lr-search")]
    assert len(searched) == 3  # once per grid point, not once per seed


def test_mean_std_matches_numpy():
    values = [0.91, 0.93, 0.90]
    assert mean_std(values) == pytest.approx((np.mean(values), np.std(values, ddof=1)))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert all(math.isnan(x) for x in mean_std([None]))
    assert fmt_mean_std([0.912, 0.916]) == "0.914 ± 0.003" and fmt_mean_std([]) == "—"


def test_missing_or_failing_kind_falls_back_to_generic(tmp_path, fake, monkeypatch):
    import sys
    import types

    from dlstudy.studies import KINDS, StudyKind

    monkeypatch.setitem(KINDS, "svm", StudyKind("dlstudy.studies.no_such_module", "missing"))
    path = write_study(tmp_path, kind="svm", seeds=[0])
    study_dir, _ = run_study(path, tmp_path / "out")
    assert "| sharp | 1 |" in (study_dir / "report.md").read_text()  # the generic table

    broken = types.ModuleType("broken_kind")
    broken.summarize = lambda *a: 1 / 0
    monkeypatch.setitem(sys.modules, "broken_kind", broken)
    monkeypatch.setitem(KINDS, "svm", StudyKind("broken_kind", "raises"))
    assert main(["report", str(study_dir)]) == 0
    report = (study_dir / "report.md").read_text()
    assert "The 'svm' summary failed (ZeroDivisionError: division by zero); generic summary shown." in report
    assert "| sharp | 1 |" in report


def _studies_imports() -> dict[str, set[str]]:
    """studies/<part>/<file>.py -> every module it imports (top level and inside functions), read with ast."""
    import ast

    import dlstudy.studies

    root = Path(dlstudy.studies.__file__).parent
    found = {}
    for path in root.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        found[path.relative_to(root).as_posix()] = names
    return found


def test_studies_data_flows_one_way_running_to_kinds_and_summary():
    """running -> (kinds, summary); kinds read runs through summary.records only; summary never imports running
    nor a kind (kinds come through the KINDS registry); no study module draws with matplotlib itself."""
    imports = _studies_imports()
    assert any(f.startswith("running/") for f in imports) and any(f.startswith("kinds/") for f in imports)
    for file, names in imports.items():
        studies = {n for n in names if n.startswith("dlstudy.studies.")}
        assert not any(n.split(".")[0] == "matplotlib" for n in names), f"{file} imports matplotlib"
        if file.startswith("summary/"):
            assert not {n for n in studies if n.startswith(("dlstudy.studies.running", "dlstudy.studies.kinds"))}, \
                f"{file} imports {sorted(studies)}"
        if file.startswith("kinds/"):
            assert all(n.startswith("dlstudy.studies.summary.records") for n in studies), \
                f"{file} imports {sorted(studies)}"
