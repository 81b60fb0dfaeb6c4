"""`dlstudy reproduce`: the four studies in the reference report's order into one combined report.

The first tests swap in tiny study files run by a fake job (conftest's fake_studies: the reproduce machinery on
its own); the last runs the real quick studies with `--budget tiny` end to end (the CI check of `make demo`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dlstudy.cli import main
from dlstudy.studies.running import reproduce
from dlstudy.studies.summary.claims import CLAIMS
from dlstudy.studies.summary import sections
from dlstudy.studies.summary.records import fmt_mean_std
from helpers import REFERENCE, fake_study


def test_reproduce_runs_every_study_in_order_and_combines_the_report(tmp_path, fake_studies, capsys):
    out = tmp_path / "out"
    code = main(["reproduce", "--quick", "--budget", "tiny", "--out", str(out)])
    assert code == 1  # the losses study has a failing arm; the other studies still ran
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    titles = [s.title for s in reproduce.SECTIONS]
    assert [md.index(t) for t in titles] == sorted(md.index(t) for t in titles)  # the reference report's order
    stems = [stem for section in reproduce.SECTIONS for stem in section.files]  # Q3 runs four study files
    for stem in stems:
        study_dir = out / f"{stem}-quick"
        assert (study_dir / "b" / "seed-0" / "DONE").is_file()
        assert not (study_dir / "b" / "seed-1").exists()  # --budget tiny runs one seed
        cfg = yaml.safe_load((study_dir / "b" / "seed-0" / "config.yaml").read_text())
        assert cfg["train"]["epochs"] == 1 and cfg["data"]["max_train"] == 240  # tiny overrides win over the file
        ours = fmt_mean_std([json.loads((study_dir / "b" / "seed-0" / "metrics.json").read_text())["accuracy"]])
        assert f"| arms.b.accuracy | {REFERENCE[stem.split('-')[0]]:.4g} | {ours} |" in md
        assert f"Reference — source: reference {stem}" in md
    assert "Failed: a/seed-0: ValueError: fake job: shrink above 1" in md
    assert "Data: digits (max_train 240, max_eval 120)" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(stems)  # each study's bar chart, embedded
    assert 'href="svm-quick/report.html"' in page
    record = json.loads((out / "reproduce.json").read_text())
    assert [s["study"] for s in record["sections"]] == stems

    # the combined report is rebuilt from the folder alone
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == md


def test_reproduce_validates_every_study_before_running(tmp_path, fake_studies, capsys):
    bad = fake_study("optimizers")
    bad["base"]["train"]["epochs"] = "nine"
    (fake_studies / "optimizers-quick.yaml").write_text(yaml.safe_dump(bad))
    assert main(["reproduce", "--quick", "--out", str(tmp_path / "out")]) == 2
    assert "optimizers-quick.yaml: arm 'a': config.train.epochs: expected int" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # not even Q1 ran


def test_reproduce_only_and_missing_study_file(tmp_path, fake_studies, monkeypatch, capsys):
    assert main(["reproduce", "--quick", "--only", "svm", "--budget", "tiny", "--out", str(tmp_path / "o")]) == 0
    assert [p.name for p in (tmp_path / "o").iterdir() if p.is_dir()] == ["svm-quick"]
    (fake_studies / "svm-quick.yaml").unlink()
    monkeypatch.setattr(sections, "CHECKOUT_STUDIES", tmp_path / "nowhere")
    assert main(["reproduce", "--quick", "--only", "svm", "--out", str(tmp_path / "o2")]) == 2
    assert "study file svm-quick.yaml not found; searched:" in capsys.readouterr().err


def test_every_shipped_study_file_is_valid():
    """The repository's studies/*.yaml load and plan (every arm validated) without running anything."""
    from dlstudy.studies.running.runner import load_study, plan_study

    files = sorted(sections.CHECKOUT_STUDIES.glob("*.yaml"))
    assert files, f"no study files in {sections.CHECKOUT_STUDIES}"
    for path in files:
        tasks = plan_study(load_study(path), Path("/nonexistent"), source=str(path))
        assert tasks


@pytest.mark.parametrize("budget", sorted(reproduce.BUDGETS))
def test_every_budget_preset_gives_valid_configs_for_every_shipped_study(budget):
    """A budget's overrides over every shipped study file (every tier) validate, cross-field rules included: the
    tiny budget's 1 epoch once left a study's 1 warm-up epoch no cosine decay, failing every run of it."""
    from dlstudy.studies.running.runner import load_study, plan_study

    preset = reproduce.BUDGETS[budget]
    files = sorted(sections.CHECKOUT_STUDIES.glob("*.yaml"))
    # no stray file: each tier's files plus the standalone studies, and nothing else
    assert len(files) == (sum(len(s.files) for s in reproduce.SECTIONS) * len(sections.TIERS)
                          + len(sections.STANDALONE_STUDIES))
    assert {f"{stem}.yaml" for stem in sections.STANDALONE_STUDIES} <= {p.name for p in files}
    for path in files:
        study = load_study(path)
        study.seeds = list(preset["seeds"])
        assert plan_study(study, Path("/nonexistent"), preset["overrides"], source=str(path))


@pytest.mark.timeout(400)
def test_reproduce_quick_tiny_end_to_end(tmp_path, capsys):
    """`make demo` in miniature: the real quick studies and jobs, with --budget tiny (CI)."""
    for section in reproduce.SECTIONS:
        for stem in section.files:
            reproduce.study_file(stem, "quick")  # a missing file fails here with the paths searched
    out = tmp_path / "demo"
    code = main(["reproduce", "--quick", "--budget", "tiny", "--out", str(out)])
    record = json.loads((out / "reproduce.json").read_text())
    failures = [f for s in record["sections"] for f in s["failed"]]
    assert code == 0, failures
    md = (out / "report.md").read_text()
    for section in reproduce.SECTIONS:
        assert section.title in md
    assert (out / "report.html").stat().st_size > 10_000
    # intervals and verdicts for every study, the reference's claims in one ledger, Q3 in one table per protocol
    n = sum(len(s.files) for s in reproduce.SECTIONS)
    assert md.count("### Statistics") == n and md.count("| arm A | arm B |") == n
    ledger = md[md.index("## Claims ledger"):md.index("## Q1. Multiclass SVM\n")]
    for claim in CLAIMS.values():
        assert claim.text in ledger
    # Q3: each claim once per protocol and dataset (four studies), Holm over the tier's family
    assert ledger.count("Mini-batch SGD beats vanilla SGD (batch 1)") == 4 and "Family for Holm-Bonferroni" in ledger
    table = md[md.index("## Q3. Optimizers: every protocol and dataset"):]
    for label in ("digits · mlp · tuned (3 lrs/arm)", "digits · mlp · fixed lrs", "digits · smallcnn · tuned (3 "
                  "lrs/arm)", "digits · smallcnn · fixed lrs"):  # MNIST and CIFAR-10 stand-ins, both protocols
        assert label in table
