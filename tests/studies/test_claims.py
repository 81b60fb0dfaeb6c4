"""The claims ledger (studies/summary/claims.py): each claim of the reference report checked on fake arms with known
differences, the overfitting claim as the reference means it (a larger train - test gap than the other arms'), Holm
over the tier's family, the footing each verdict holds at, and the ledger on the results page."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from dlstudy.config import StatsConfig, StudyConfig
from dlstudy.report import render_markdown
from dlstudy.studies.summary.claims import (CLAIMS, RULES, StudyRuns, build_ledger, check, footing, ledger_blocks,
                                            total_steps)
from dlstudy.studies.summary.records import load_arm_run
from dlstudy.studies.summary.significance import load_predictions
from helpers import fake_arm_runs

STATS = StatsConfig(resamples=200)
BETTER = [c for c in CLAIMS.values() if c.rule == "better"]
OVERFITS = CLAIMS["batch1-overfits"]
OTHERS = OVERFITS.arm_b  # the arms whose gaps batch 1's must exceed


def test_registry_is_well_formed():
    assert len(CLAIMS) == 8 and all(c.id == key for key, c in CLAIMS.items())
    for claim in CLAIMS.values():
        assert claim.rule in RULES and claim.direction == "higher" and claim.arm_a and claim.arm_b
        assert claim.kind in ("losses", "finetune", "optimizers") and claim.text


def _copy_arm(runs, folder: Path, arm: str):
    """The same runs under another arm name: identical predictions (a difference of exactly 0)."""
    copies = []
    for run in runs:
        target = folder / arm / run.path.name
        shutil.copytree(run.path, target)
        copies.append(load_arm_run(target, arm, run.seed))
    return copies


@pytest.mark.parametrize("claim", BETTER, ids=lambda c: c.id)
def test_better_claims_supported_contradicted_and_not_detectable(claim, tmp_path):
    a, b = claim.arm_a[-1], claim.arm_b[-1]  # any of a claim's names stands for its arm
    good, bad = fake_arm_runs(tmp_path / "g", a, 0.9), fake_arm_runs(tmp_path / "g", b, 0.5)
    study = StudyRuns("s", claim.kind, {a: good, b: bad})
    row = check(claim, study, STATS)
    assert (row.verdict(0.05), row.arms) == ("supported", f"{a} vs {b}")
    assert row.comparison.test.startswith("McNemar exact") and row.comparison.difference > 0.3
    swapped = StudyRuns("s", claim.kind, {a: fake_arm_runs(tmp_path / "s", a, 0.5),
                                          b: fake_arm_runs(tmp_path / "s", b, 0.9)})
    assert check(claim, swapped, STATS).verdict(0.05) == "contradicted"
    twins = StudyRuns("s", claim.kind, {a: good, b: _copy_arm(good, tmp_path / "t", b)})
    row = check(claim, twins, STATS)
    assert (row.verdict(0.05), row.comparison.difference, row.comparison.pvalue) == ("not detectable", 0.0, 1.0)
    missing = check(claim, StudyRuns("s", claim.kind, {a: good}), STATS)
    assert missing.verdict(0.05) == "not checked" and missing.note.startswith("no finished run of")


def test_better_claim_over_seeds_is_a_paired_t_test(tmp_path):
    claim = CLAIMS["adam-beats-momentum"]
    groups = {"minibatch-adam": fake_arm_runs(tmp_path, "minibatch-adam", 0.9, seeds=(0, 1, 2)),
              "minibatch-sgd-momentum": fake_arm_runs(tmp_path, "minibatch-sgd-momentum", 0.6, seeds=(0, 1, 2))}
    row = check(claim, StudyRuns("s", "optimizers", groups), STATS)
    assert row.comparison.test == "paired t over 3 seeds" and row.verdict(0.05) == "supported"


def _optimizer_arms(folder: Path, gaps: dict[str, float], accuracy: float = 0.8, seeds=(0,)) -> dict:
    return {arm: fake_arm_runs(folder, arm, accuracy, seeds, gap=gap) for arm, gap in gaps.items()}


def test_overfitting_is_a_larger_gap_than_the_other_arms_not_a_gap_above_zero(tmp_path):
    # the reference: 0.27 for batch 1 against <= 0.07 for the others
    groups = _optimizer_arms(tmp_path / "big", {"vanilla-sgd": 0.27, "minibatch-sgd": 0.07,
                                                "minibatch-sgd-momentum": 0.04, "minibatch-adam": 0.02})
    row = check(OVERFITS, StudyRuns("s", "optimizers", groups), STATS)
    assert row.verdict(0.05) == "supported"
    assert row.arms == "vanilla-sgd vs minibatch-sgd (largest other gap)"
    assert row.comparison.difference == pytest.approx(0.20, abs=1e-9)  # against the largest other gap
    assert "intersection-union over 3 arms" in row.comparison.test
    # every arm has a gap above zero (0.012 each), as on MNIST here: that alone supports nothing
    similar = _optimizer_arms(tmp_path / "same", {arm: 0.012 for arm in ("vanilla-sgd",) + OTHERS})
    row = check(OVERFITS, StudyRuns("s", "optimizers", similar), STATS)
    assert row.verdict(0.05) == "not detectable" and row.comparison.difference == pytest.approx(0, abs=1e-9)
    smaller = _optimizer_arms(tmp_path / "less", {"vanilla-sgd": 0.0, "minibatch-sgd": 0.2,
                                                  "minibatch-sgd-momentum": 0.0, "minibatch-adam": 0.0})
    assert check(OVERFITS, StudyRuns("s", "optimizers", smaller), STATS).verdict(0.05) == "contradicted"


def test_overfitting_needs_every_other_gap_exceeded(tmp_path):
    # far above two arms, level with the third: the intersection-union p is the largest of the three
    groups = _optimizer_arms(tmp_path, {"vanilla-sgd": 0.25, "minibatch-sgd": 0.0, "minibatch-sgd-momentum": 0.0,
                                        "minibatch-adam": 0.25})
    row = check(OVERFITS, StudyRuns("s", "optimizers", groups), STATS)
    assert row.verdict(0.05) == "not detectable" and row.arms.startswith("vanilla-sgd vs minibatch-adam")


def test_gap_z_test_by_hand(tmp_path):
    """One seed: (train A - train B) - (test A - test B), variance of two binomial train subsets plus the paired test
    difference on the same images."""
    groups = _optimizer_arms(tmp_path, {"vanilla-sgd": 0.1, "minibatch-sgd": 0.02, "minibatch-sgd-momentum": 0.0,
                                        "minibatch-adam": 0.0})
    row = check(OVERFITS, StudyRuns("s", "optimizers", groups), STATS)
    a, b = groups["vanilla-sgd"][0], groups["minibatch-sgd"][0]
    ta, tb = a.metrics["accuracy"] + 0.1, b.metrics["accuracy"] + 0.02
    d = load_predictions(a).correct.astype(float) - load_predictions(b).correct.astype(float)
    var = ta * (1 - ta) / 500 + tb * (1 - tb) / 500 + (np.mean(d ** 2) - np.mean(d) ** 2) / d.size
    half = 1.959963984540054 * math.sqrt(var)
    c = row.comparison
    assert c.difference == pytest.approx(0.08, abs=1e-9)
    assert (c.low, c.high) == (pytest.approx(0.08 - half, rel=1e-9), pytest.approx(0.08 + half, rel=1e-9))
    assert "z-test on the gap difference (test paired on the same 400 images" in c.test


def test_overfitting_over_seeds_is_a_paired_t_test(tmp_path):
    gaps = {"vanilla-sgd": 0.3, "minibatch-sgd": 0.02, "minibatch-sgd-momentum": 0.01, "minibatch-adam": 0.02}
    groups = {arm: [run for seed in (0, 1, 2) for run in fake_arm_runs(tmp_path, arm, 0.8, (seed,),
                                                                       gap=gap + 0.01 * seed * (arm == "vanilla-sgd"))]
              for arm, gap in gaps.items()}  # batch 1's gap varies over seeds, so the t-test has a spread
    row = check(OVERFITS, StudyRuns("s", "optimizers", groups), STATS)
    assert row.verdict(0.05) == "supported" and row.comparison.test.startswith("paired t over 3 seeds")


def _holm_by_hand(p: list[float]) -> list[float]:
    """Holm-Bonferroni step-down: sorted p_(i) x (m - i), running maximum, capped at 1, back in input order."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_holm_over_the_tiers_family_of_every_claim_and_study(tmp_path):
    losses = {arm: fake_arm_runs(tmp_path / "l", arm, acc) for arm, acc in (
        ("densenet-ce", 0.62), ("resnet-ce", 0.55), ("resnet-triplet+svm", 0.52), ("resnet-center+ce", 0.54),
        ("densenet-triplet+ce", 0.6))}
    optim = _optimizer_arms(tmp_path / "o", {"vanilla-sgd": 0.1, "minibatch-sgd": 0.0, "minibatch-sgd-momentum": 0.0,
                                             "minibatch-adam": 0.05}, accuracy=0.75)
    studies = [StudyRuns("losses-cpu", "losses", losses), StudyRuns("optimizers-cpu", "optimizers", optim),
               StudyRuns("finetune-cpu", "finetune", {})]
    rows = build_ledger(studies, STATS)
    assert [r.claim.id for r in rows] == list(CLAIMS)  # claim order, one study of each kind
    tested = [r.comparison for r in rows if r.comparison is not None]
    assert len(tested) == 7 and rows[4].verdict(0.05) == "not checked"  # finetune: no arms
    raw = [c.pvalue for c in tested]
    np.testing.assert_allclose([c.p_holm for c in tested], _holm_by_hand(raw), rtol=1e-12)
    try:
        from statsmodels.stats.multitest import multipletests
    except ImportError:  # the hand-computed step-down above is the oracle then
        return
    np.testing.assert_allclose([c.p_holm for c in tested], multipletests(raw, method="holm")[1], rtol=1e-12)


def test_footing_says_which_budget_a_verdict_holds_at(tmp_path):
    runs = {name: fake_arm_runs(tmp_path, name, 0.8, **kw) for name, kw in (
        ("densenet-ce", {"steps": 432, "train_time_s": 59.0, "epochs": 6, "n_train": 18000}),
        ("resnet-ce", {"steps": 432, "train_time_s": 100.0, "epochs": 6, "n_train": 18000}),
        ("vanilla-sgd", {"steps": 108000, "train_time_s": 150.0, "epochs": 2, "n_train": 54000}),
        ("minibatch-sgd", {"steps": 3376, "train_time_s": 12.0, "epochs": 2, "n_train": 54000}),
        ("budgeted", {"steps": 900, "train_time_s": 600.0, "epochs": 3, "n_train": 1000}),
        ("bare", {}))}
    assert footing("densenet-ce", runs["densenet-ce"], "resnet-ce", runs["resnet-ce"]) == (
        "equal steps (432); densenet-ce trained in 0.59x the time of resnet-ce (59.0 s vs 100.0 s)")
    assert footing("vanilla-sgd", runs["vanilla-sgd"], "minibatch-sgd", runs["minibatch-sgd"]) == (
        "equal epochs (2 of 54,000 images); vanilla-sgd 108,000 steps, minibatch-sgd 3,376; vanilla-sgd trained in "
        "12.50x the time of minibatch-sgd (2.5 min vs 12.0 s)")
    other = fake_arm_runs(tmp_path / "m", "other", 0.8, steps=100, train_time_s=630.0, epochs=1, n_train=5)
    assert footing("budgeted", runs["budgeted"], "other", other) == "equal CPU-minutes (10.0 min vs 10.5 min)"
    assert footing("bare", runs["bare"], "bare", runs["bare"]) == "budget not recorded"
    # budgeted runs: "6 epochs" capped at 105 and 70 steps of 256 (of a 281-step pass) are not equal epochs; their
    # training times within 10% are equal CPU-minutes
    capped = {}
    for name, cap, secs in (("densenet-ce", 105, 197.0), ("resnet-ce", 70, 215.0)):
        capped[name] = fake_arm_runs(tmp_path / "capped", name, 0.8, steps=6 * cap, train_time_s=secs, epochs=6,
                                     n_train=72000)
        for run in capped[name]:
            run.config["train"] = {"max_steps_per_epoch": cap, "batch_size": 256}
    assert footing("densenet-ce", capped["densenet-ce"], "resnet-ce", capped["resnet-ce"]) == (
        "equal CPU-minutes (3.3 min vs 3.6 min)")
    for run in capped["resnet-ce"]:
        run.metrics["train_time_s"] = 400.0
    assert footing("densenet-ce", capped["densenet-ce"], "resnet-ce", capped["resnet-ce"]) == (
        "unequal budgets; densenet-ce trained in 0.49x the time of resnet-ce (3.3 min vs 6.7 min)")


def test_total_steps_reads_the_end_of_a_long_steps_file(tmp_path):
    path = tmp_path / "steps.csv"
    path.write_text("epoch,step,global_step,loss,time_s\n" + "".join(f"1,{i},{i},0.5,0.1\n" for i in range(1, 5001)))
    run = load_arm_run(fake_arm_runs(tmp_path, "a", 0.8)[0].path, "a", 0)
    shutil.copy(path, run.path / "steps.csv")
    assert total_steps(run) == 5000
    (run.path / "steps.csv").write_text("epoch,step,global_step,loss,time_s\n")
    assert total_steps(run) is None


def test_ledger_table_names_the_family_test_and_verdicts(tmp_path):
    optim = _optimizer_arms(tmp_path, {"vanilla-sgd": 0.27, "minibatch-sgd": 0.02, "minibatch-sgd-momentum": 0.02,
                                       "minibatch-adam": 0.02})
    blocks = ledger_blocks([StudyRuns("optimizers-cpu (mnist · tuned)", "optimizers", optim)], STATS, "cpu")
    md = render_markdown(blocks, tmp_path)
    assert "Family for Holm-Bonferroni: the 3 checks of this table that have a p-value" in md
    header = "| claim | study | arms (A vs B) | reference | effect [95% CI] | test | p | Holm p | verdict | footing |"
    assert header in md
    assert "| Vanilla SGD (batch 1) overfits" in md and "gap A - gap B: +0.250 [" in md
    assert "| gap 0.27 against <= 0.07 |" in md and "McNemar exact" in md
    assert md == render_markdown(ledger_blocks([StudyRuns("optimizers-cpu (mnist · tuned)", "optimizers", optim)],
                                               STATS, "cpu"), tmp_path)  # the same runs, the same bytes


def test_results_page_ledger_per_tier(tmp_path):
    """The results page's ledger section: one ledger per tier, read through the page's own Tier records."""
    from dlstudy.studies.summary.results_page import Tier, TierStudy, ledger_section

    def tier(name: str, gap: float) -> Tier:
        folder = tmp_path / name / f"optimizers-{name}"
        groups = _optimizer_arms(folder, {"vanilla-sgd": gap, "minibatch-sgd": 0.0, "minibatch-sgd-momentum": 0.0,
                                          "minibatch-adam": 0.0})
        study = StudyConfig(name=f"optimizers-{name}", kind="optimizers")
        entry = {"study": "optimizers", "dir": f"optimizers-{name}"}
        return Tier(name, str(tmp_path / name), {}, {"optimizers": TierStudy(entry, study, list(groups), groups, 4)})

    md = render_markdown(ledger_section([tier("quick", 0.0), tier("cpu", 0.3)]), tmp_path)
    quick, cpu = md.split("### Tier cpu")
    assert "### Tier quick" in quick and "Claims ledger of the quick tier" in quick
    overfit = [line for line in quick.splitlines() if line.startswith("| Vanilla SGD (batch 1) overfits")]
    assert len(overfit) == 1 and "| not detectable |" in overfit[0]
    overfit = [line for line in cpu.splitlines() if line.startswith("| Vanilla SGD (batch 1) overfits")]
    assert "| supported |" in overfit[0] and "| optimizers-cpu (— · — · fixed lrs, 1 seed) |" in overfit[0]
