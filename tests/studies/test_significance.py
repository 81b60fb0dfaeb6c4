"""Study statistics (studies/summary/significance.py): intervals per arm, pairwise tests with Holm, `compare`
(the claims ledger built on them: test_claims.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from dlstudy.cli import main
from dlstudy.config import StatsConfig
from dlstudy.errors import ConfigError
from dlstudy.stats import holm, mcnemar, paired_t_test, proportion_ci, seed_summary
from dlstudy.studies.summary.records import load_arm_run
from dlstudy.studies.summary.significance import (NOT_DETECTABLE, arm_interval, compare_arms, pairwise,
                                                  statistics_blocks)
from helpers import ARM_K, ARM_N, fake_arm_run, fake_arm_runs

N, K = ARM_N, ARM_K
STATS = StatsConfig(resamples=500)
fake_run = fake_arm_run
arm_runs = fake_arm_runs


def test_single_seed_interval_is_wilson_and_bootstrap_over_the_test_images(tmp_path):
    runs = arm_runs(tmp_path, "a", 0.8)
    est, low, high, method = arm_interval(runs, "accuracy", STATS)
    hits = round(est * N)
    assert (low, high) == proportion_ci(hits, N, 0.95, "wilson") and method.startswith("Wilson")
    est, low, high, method = arm_interval(runs, "f1_macro", STATS)
    assert low < est < high and method.startswith("bootstrap")


def test_several_seeds_use_a_t_interval_over_seeds(tmp_path):
    runs = arm_runs(tmp_path, "a", 0.8, seeds=(0, 1, 2))
    est, low, high, method = arm_interval(runs, "accuracy", STATS)
    mean, _, t_low, t_high = seed_summary([r.metrics["accuracy"] for r in runs], 0.95)
    assert (est, low, high) == (mean, t_low, t_high) and "3 seeds" in method


def test_pairwise_single_seed_is_mcnemar_and_holm_over_all_pairs(tmp_path):
    groups = {arm: arm_runs(tmp_path, arm, acc) for arm, acc in (("good", 0.9), ("mid", 0.85), ("bad", 0.5))}
    comps = pairwise(groups, STATS)
    assert [(c.arm_a, c.arm_b) for c in comps] == [("good", "mid"), ("good", "bad"), ("mid", "bad")]
    from dlstudy.studies.summary.significance import load_predictions

    preds = {arm: load_predictions(runs[0]) for arm, runs in groups.items()}
    _, p = mcnemar(preds["good"].correct, preds["bad"].correct)
    assert comps[1].pvalue == p and comps[1].difference == pytest.approx(
        preds["good"].correct.mean() - preds["bad"].correct.mean(), abs=1e-12)
    np.testing.assert_allclose([c.p_holm for c in comps], holm([c.pvalue for c in comps]), rtol=0, atol=0)
    assert comps[1].verdict(0.05) == "good better" and comps[2].verdict(0.05) == "mid better"
    assert comps[1].low <= comps[1].difference <= comps[1].high


def test_identical_arms_are_not_different(tmp_path):
    a = arm_runs(tmp_path / "x", "a", 0.8)
    b = arm_runs(tmp_path / "y", "a", 0.8)  # same rng seed: the same predictions
    c = compare_arms("a", a, "b", b, STATS)
    assert c.difference == 0 and c.pvalue == 1.0 and c.verdict(0.05) == NOT_DETECTABLE


def test_pairwise_over_seeds_is_a_paired_t_test(tmp_path):
    a = arm_runs(tmp_path, "a", 0.8, seeds=(0, 1, 2))
    b = arm_runs(tmp_path, "b", 0.7, seeds=(0, 1, 2))
    c = compare_arms("a", a, "b", b, STATS)
    diff, low, high, p = paired_t_test([r.metrics["accuracy"] for r in a], [r.metrics["accuracy"] for r in b])
    assert (c.difference, c.low, c.high, c.pvalue) == (diff, low, high, p) and "3 seeds" in c.test


def test_runs_on_other_test_images_are_not_compared(tmp_path):
    a = arm_runs(tmp_path, "a", 0.8)
    b = [load_arm_run(fake_run(tmp_path / "b" / "seed-0", 0.8, ids=[f"x{i}" for i in range(N)]), "b", 0)]
    c = compare_arms("a", a, "b", b, STATS)
    assert math.isnan(c.pvalue) and c.note == "different test images"


def test_statistics_blocks_hold_intervals_pairs_and_power(tmp_path):
    runs = arm_runs(tmp_path, "a", 0.9) + arm_runs(tmp_path, "b", 0.6)
    blocks = statistics_blocks(runs, STATS)
    assert len(blocks) == 3 and "80%" in blocks[2].text and str(N) in blocks[2].text


def test_study_file_claims_and_stats_are_validated(tmp_path):
    from dlstudy.studies.running.runner import load_study

    base = {"name": "s", "arms": [{"name": "a"}, {"name": "b"}], "reference": {}}
    path = tmp_path / "s.yaml"
    # the reference's claims are defined once (summary.claims.CLAIMS): a study file's own list is refused, not ignored
    path.write_text(yaml.safe_dump({**base, "reference": {"claims": [{"better": "a", "worse": "b"}]}}))
    with pytest.raises(ConfigError, match="reference.claims is not read any more.*summary.claims.CLAIMS"):
        load_study(path)
    path.write_text(yaml.safe_dump({**base, "stats": {"confidence": 95}}))
    with pytest.raises(ConfigError, match="stats.confidence"):
        load_study(path)
    path.write_text(yaml.safe_dump({**base, "stats": {"confidence": 0.9, "resamples": 2000, "seed": 3}}))
    assert load_study(path).stats == StatsConfig(0.9, 2000, 3)


def test_compare_command_runs_and_mismatch(tmp_path, capsys):
    a = fake_run(tmp_path / "a", 0.9)
    b = fake_run(tmp_path / "b", 0.5, rng_seed=1)
    assert main(["compare", str(a), str(b), "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "| a | b | +0." in out and "a better" in out
    c = fake_run(tmp_path / "c", 0.9, ids=[f"x{i}" for i in range(N)])
    assert main(["compare", str(a), str(c)]) == 2
    assert "not those of" in capsys.readouterr().err
    assert main(["compare", str(a)]) == 2
