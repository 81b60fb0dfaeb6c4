"""`dlstudy results`: the results page from reproduce folders, one per tier.

Two reproduce folders (tiers quick and cpu) are made once by `dlstudy reproduce` itself with tiny study files and a
fake job (helpers.fake_job, plus before/after blocks and a train accuracy so every table has numbers); their
arms differ (quick: a, b; cpu: b, c) and the cpu study files map their own arm c to a reference-report row.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import yaml

from dlstudy import jobs, runs
from dlstudy.cli import main
from dlstudy.studies.running import reproduce
from dlstudy.studies.summary import sections
from helpers import fake_job

LOSS_ROWS = {"b": ("Densenet121, triplet_loss + Crossentropy", 0.470, 0.495, 0.469, 0.462),
             "c": ("Densenet121, cross_entropy_loss", 0.478, 0.501, 0.478, 0.476)}


def rich_fake_job(cfg, run_dir, resume=False):
    """fake_job, then the fine-tuning blocks (before/after) and a history with a train accuracy."""
    metrics = fake_job(cfg, run_dir, resume)
    metrics["before"] = {"accuracy": 0.1 + 0.01 * cfg.seed, "per_class_accuracy": [0.1 * k for k in range(10)]}
    metrics["after"] = {"accuracy": metrics["accuracy"], "per_class_accuracy": metrics["per_class_accuracy"]}
    runs.atomic_write_json(run_dir.file("metrics.json"), metrics)
    runs.atomic_write_csv(run_dir.file("history.csv"), [{"epoch": 1, "train_eval_acc": 0.5},
                                                        {"epoch": 2, "train_eval_acc": 0.8 + 0.05 * cfg.seed}])
    return metrics


def _reference(study: str, tier: str) -> dict:
    if study == "svm":
        return {"accuracy": 0.697}
    if study == "finetune":
        return {"source": f"{tier} finetune source", "before": {"accuracy": 0.09, "per_class_accuracy": [0.12, 0.3]},
                "after": {"accuracy": 0.90}}
    if study == "losses":
        arm = "b" if tier == "quick" else "c"  # a tier's own arm name mapped to a reference-report row
        label, *numbers = LOSS_ROWS[arm]
        model, loss = label.split(", ")
        return {"arms": {arm: dict(zip(("model", "loss", "accuracy", "precision", "recall", "f_score"),
                                       [model, loss, *numbers]))}}
    return {"arms": {"b": {"label": "minibatch + adam", "test_accuracy": 0.885, "train_accuracy": 0.951}}}


def _study(study: str, tier: str) -> dict:
    arms = ["a", "b"] if tier == "quick" else ["b", "c"]
    extra = study.startswith("optimizers-")  # Q3's other study files: one seed keeps the fixture fast
    return {"name": f"{study}-{tier}", "kind": "generic", "seeds": [0] if extra else [0, 1],
            "base": {"task": "fake", "data": {"name": "digits"}, "train": {"epochs": 3 if tier == "quick" else 7}},
            "arms": [{"name": arm, "set": {"optim.weight_decay": {"a": 0.0, "b": 0.5, "c": 0.9}[arm]}} for arm in arms],
            "reference": _reference(study, tier)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """base/quick and base/cpu: two reproduce folders of the fake studies."""
    base = tmp_path_factory.mktemp("results")
    files = base / "studies"
    files.mkdir()
    for tier in ("quick", "cpu"):
        for section in reproduce.SECTIONS:
            for stem in section.files:  # Q3 runs four study files (two protocols x two datasets)
                (files / f"{stem}-{tier}.yaml").write_text(yaml.safe_dump(_study(stem, tier), sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(jobs.JOBS, "fake", jobs.Job("test_results_page:rich_fake_job", "test job"))
        mp.setattr(sections, "PACKAGE_STUDIES", files)
        for tier in ("quick", "cpu"):
            assert main(["reproduce", "--tier", tier, "--out", str(base / tier)]) == 0
    return base


def _ours(folder: Path, arm: str, read) -> str:
    """The expected cell, computed here from the run folders: mean ± sample std (n seeds)."""
    values = [read(folder / arm / f"seed-{seed}") for seed in (0, 1)]
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} (2 seeds)"


def _metric(key, block=None):
    def read(run: Path) -> float:
        metrics = json.loads((run / "metrics.json").read_text())
        return (metrics[block] if block else metrics)[key]
    return read


def _page(folders, monkeypatch, *dirs: str, out: str = "results.md") -> str:
    monkeypatch.chdir(folders)  # the folders as given: relative paths
    assert main(["results", *dirs, "--out", out]) == 0
    return (folders / out).read_text()


def test_page_puts_the_reference_beside_every_tier(folders, monkeypatch):
    page = _page(folders, monkeypatch, "cpu", "quick")
    q, c = folders / "quick", folders / "cpu"
    assert "dlstudy results cpu quick --out results.md" in page  # the command, folders as given
    assert "| quick | " in page and "| cpu | " in page and "| full | " in page and "not run yet" in page
    acc = _metric("accuracy")
    svm_q, svm_c = q / "svm-quick", c / "svm-cpu"
    assert "| arm | reference | quick | cpu |" in page  # tier columns in tier order, not the order given
    assert f"| a | 0.697 | {_ours(svm_q, 'a', acc)} | — |" in page  # arms of one tier only: — in the other
    assert f"| b | 0.697 | {_ours(svm_q, 'b', acc)} | {_ours(svm_c, 'b', acc)} |" in page
    assert f"| c | 0.697 | — | {_ours(svm_c, 'c', acc)} |" in page
    before = _ours(q / "finetune-quick", "a", _metric("accuracy", "before"))
    assert f"| a | accuracy before | 0.09 | {before} | — |" in page
    assert "| a | class-wise accuracy before | [0.12, 0.30] | [0.00, 0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, " \
           "0.80, 0.90] (2 seeds) | — |" in page
    after = _ours(c / "finetune-cpu", "c", _metric("accuracy", "after"))
    assert f"| c | accuracy after | 0.9 | — | {after} |" in page
    assert "Reference notes of the cpu study file — source: cpu finetune source" in page
    for arm, (label, *numbers) in LOSS_ROWS.items():  # Q2: each tier's study file maps its arms to the reference
        for name, key, ref in zip(("accuracy", "precision", "recall", "F-score"),
                                  ("accuracy", "precision_macro", "recall_macro", "f1_macro"), numbers):
            quick = _ours(q / "losses-quick", arm, _metric(key)) if arm == "b" else "—"
            assert f"| {arm} | {name} | {label} | {ref:g} | {quick} | {_ours(c / 'losses-cpu', arm, _metric(key))} |" \
                in page
    # Q3: per tier, one column per study file (dataset · protocol, seeds), the reference beside them
    train = "0.825 ± 0.035 (2 seeds)"  # the last train_eval_acc of the history, seeds 0 and 1
    one = "0.800 (1 seed)"  # the other three study files run seed 0 only
    two, single = "digits · smallcnn · fixed lrs, 2 seeds", "digits · smallcnn · fixed lrs, 1 seed"
    assert f"| arm | measure | reference | {two} | {single} | {single} | {single} |" in page
    assert f"| minibatch + adam | train accuracy | 0.951 | {train} | {one} | {one} | {one} |" in page
    for tier, path in (("quick", q), ("cpu", c)):
        first, *others = reproduce.SECTIONS[-1].files
        tests = [_ours(path / f"{first}-{tier}", "b", acc)] + [
            f"{acc(path / f'{stem}-{tier}' / 'b' / 'seed-0'):.3f} (1 seed)" for stem in others]
        assert f"| minibatch + adam | test accuracy | 0.885 | {' | '.join(tests)} |" in page
    assert "Q3. Optimizers, tier quick: one column per study" in page
    # the claims ledger, one per tier (the fake studies are of the generic kind: no claim is about them)
    assert page.index("## Claims ledger") < page.index("## Q1. Multiclass SVM")
    assert "| DenseNet121 beats ResNet18 (both with cross-entropy) | — | — |" in page
    assert "not checked (no losses study in this tier)" in page  # the fake studies are of the generic kind
    assert "| arm chosen on val | 0.697 |" in page  # the study-wide SVM number against each tier's chosen arm


def test_page_gives_each_tier_provenance(folders, monkeypatch):
    page = _page(folders, monkeypatch, "quick", "cpu")
    for tier in ("quick", "cpu"):
        record = json.loads((folders / tier / "reproduce.json").read_text())
        env = record["env"]
        assert f"### Tier {tier}: {tier}" in page
        assert f"| started | {record['start_time']} |" in page and f"| finished | {record['end_time']} |" in page
        assert f"| git commit | {env['git_commit']} |" in page
        assert f"| command | {env['command'].replace('|', chr(92) + '|')} |" in page
        assert f"| machine | {env['cpu']}, {env['cpu_count']} cores, device {env['device']}" in page
        assert f"| svm-{tier} | svm-{tier}.yaml |" in page  # folder and file names, no absolute paths
        epochs = 3 if tier == "quick" else 7
        assert f"Budget: {epochs} epoch(s)" in page
    assert "(sum of the sections below)" in page
    assert str(folders) not in page


def test_same_folders_give_the_same_bytes(folders, monkeypatch):
    first = _page(folders, monkeypatch, "quick", "cpu").encode()
    (folders / "results.md").unlink()
    assert _page(folders, monkeypatch, "quick", "cpu").encode() == first


def test_not_a_reproduce_folder_or_two_of_one_tier_exit_2(folders, monkeypatch, capsys):
    monkeypatch.chdir(folders)
    assert main(["results", "quick", "studies", "--out", "x.md"]) == 2
    assert "studies: not a `dlstudy reproduce` folder (no reproduce.json)" in capsys.readouterr().err
    assert main(["results", "missing", "--out", "x.md"]) == 2
    assert "missing: not a `dlstudy reproduce` folder" in capsys.readouterr().err
    old = folders / "old"  # a folder from before tiers: "mode" instead of "tier"
    shutil.copytree(folders / "quick", old)
    record = json.loads((old / "reproduce.json").read_text())
    record["mode"] = record.pop("tier")
    (old / "reproduce.json").write_text(json.dumps(record))
    assert main(["results", "quick", "old", "--out", "x.md"]) == 2
    assert "old: tier 'quick' is also the tier of quick" in capsys.readouterr().err
    assert not (folders / "x.md").exists()
    assert main(["results", "old", "--out", "x.md"]) == 0
    assert "| arm | reference | quick |" in (folders / "x.md").read_text()


def test_page_is_written_atomically_by_the_project_writer(folders, monkeypatch, tmp_path):
    import dlstudy.io

    written = []
    original = dlstudy.io.atomic_write

    def spy(path, write):
        written.append(Path(path))
        return original(path, write)

    monkeypatch.setattr(dlstudy.io, "atomic_write", spy)
    out = tmp_path / "docs" / "results.md"
    assert main(["results", str(folders / "quick"), "--out", str(out)]) == 0
    assert written == [out]
    before = out.read_bytes()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(runs.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        main(["results", str(folders / "quick"), str(folders / "cpu"), "--out", str(out)])
    assert out.read_bytes() == before  # the old page is kept whole, and no temporary file is left behind
    assert [p.name for p in out.parent.iterdir()] == ["results.md"]


def test_long_per_class_lists_point_to_the_run_report():
    from dlstudy.studies.summary.results_page import fmt_ours

    assert fmt_ours([[0.5] * 200]) == "200 classes: see the run's report (1 seed)"
    assert fmt_ours([[0.25, 0.5], [0.75, 0.5]]) == "[0.50, 0.50] (2 seeds)"
    assert fmt_ours([None, float("nan")]) == "—"


def test_arms_standing_for_the_same_reference_row_share_a_row_across_tiers():
    from dlstudy.config import StudyConfig
    from dlstudy.studies.summary.results_page import Tier, TierStudy, aligned_rows

    def tier(name, arms):
        study = StudyConfig(name="losses", arms=[])
        return Tier(name, name, {}, {"losses": TierStudy({}, study, arms, {}, 0)})

    labels = {"densenet121-ce": "Densenet121, CE", "densenet-ce": "Densenet121, CE", "extra": "",
              "resnet18-ce": "Resnet18, CE"}
    rows = aligned_rows([tier("quick", ["densenet121-ce", "resnet18-ce"]), tier("cpu", ["densenet-ce", "extra"])],
                        "losses", labels)
    assert rows == [["densenet121-ce", "densenet-ce"], [None, "extra"], ["resnet18-ce", None]]  # each tier's order


def test_a_study_run_as_part_of_a_larger_budget_is_shown_against_the_tiers_own_run(folders, monkeypatch):
    """`reproduce --only STUDY --as-part-of M` runs one study file on its share of an M-minute plan of the whole
    tier; `dlstudy results` shows it beside the tier's own run ("Accuracy against budget"), not as a second tier."""
    monkeypatch.setitem(jobs.JOBS, "fake", jobs.Job("test_results_page:rich_fake_job", "test job"))
    monkeypatch.setattr(sections, "PACKAGE_STUDIES", folders / "studies")
    point = folders / "cpu-240"
    assert main(["reproduce", "--tier", "cpu", "--only", "optimizers-cifar10-defaults", "--as-part-of", "240",
                 "--out", str(point)]) == 0
    record = json.loads((point / "reproduce.json").read_text())
    assert record["as_part_of"] == 240 and 0 < record["minutes"] < 240
    assert [s["study"] for s in record["sections"]] == ["optimizers-cifar10-defaults"]  # only that study file ran
    page = _page(folders, monkeypatch, "quick", "cpu", "cpu-240")
    assert "## Accuracy against budget" in page
    seconds = {f: json.loads((folders / f / "reproduce.json").read_text())["sections"] for f in ("cpu", "cpu-240")}
    own = next(s for s in seconds["cpu"] if s["study"] == "optimizers-cifar10-defaults")["seconds"]
    header = (f"| arm | 60-min tier ({own / 60:.1f} min, cpu) | 240-min tier "
              f"({seconds['cpu-240'][0]['seconds'] / 60:.1f} min, cpu-240) |")
    assert header in page
    for arm in ("b", "c"):
        cells = [_metric("accuracy")(folders / f / "optimizers-cifar10-defaults-cpu" / arm / "seed-0")
                 for f in ("cpu", "cpu-240")]
        assert f"| {arm} | {cells[0]:.3f} (1 seed) | {cells[1]:.3f} (1 seed) |" in page
    assert "--as-part-of 240:" in page  # its provenance table says what budget it ran on
    assert page.count("| arm | reference | quick | cpu |") >= 1  # still two tier columns, not three


def test_as_part_of_needs_only_and_no_minutes(folders, monkeypatch, capsys):
    monkeypatch.setattr(sections, "PACKAGE_STUDIES", folders / "studies")
    for extra in ([], ["--only", "svm", "--minutes", "30"]):
        assert main(["reproduce", "--tier", "cpu", "--as-part-of", "240", "--out", str(folders / "x"), *extra]) == 2
        assert "--as-part-of M plans the whole tier for M minutes" in capsys.readouterr().err
    assert not (folders / "x").exists()
