"""Study statistics (studies/summary/significance.py): intervals per arm, pairwise tests with Holm, claims, `compare`."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from dlstudy.cli import main
from dlstudy.config import StatsConfig
from dlstudy.errors import ConfigError
from dlstudy.predictions import make_predictions, write_predictions
from dlstudy.stats import holm, mcnemar, paired_t_test, proportion_ci, seed_summary
from dlstudy.studies.summary.records import group_by_arm, load_arm_run
from dlstudy.studies.summary.significance import (NOT_DETECTABLE, arm_interval, check_claim, compare_arms, pairwise,
                                          statistics_blocks)

N, K = 400, 4
STATS = StatsConfig(resamples=500)


def fake_run(folder: Path, accuracy: float, seed: int = 0, rng_seed: int = 0, ids=None, train_acc=None) -> Path:
    """A finished run folder with predictions.npz of N test images at about `accuracy`."""
    rng = np.random.default_rng(rng_seed)
    y = np.arange(N) % K
    right = rng.random(N) < accuracy
    pred = np.where(right, y, (y + 1 + rng.integers(0, K - 1, N)) % K)
    scores = rng.random((N, K)).astype(np.float32) * 0.5
    scores[np.arange(N), pred] += 1.0
    preds = make_predictions(y, scores, "margins", list("abcd"), ids)
    folder.mkdir(parents=True)
    write_predictions(folder / "predictions.npz", preds)
    metrics = preds.metrics()
    (folder / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, float)
                                                     or math.isfinite(v)}))
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "train": {"train_eval_subset": 500}}))
    if train_acc is not None:  # what summary.records.train_accuracy reads
        (folder / "history.csv").write_text(f"epoch,train_eval_acc\n1,{train_acc}\n")
    (folder / "DONE").write_text("")
    return folder


def arm_runs(tmp_path: Path, arm: str, accuracy: float, seeds=(0,), **kw):
    # crc32, not hash(): str hashes change with PYTHONHASHSEED, so each CI run drew other predictions
    return [load_arm_run(fake_run(tmp_path / arm / f"seed-{s}", accuracy, s, rng_seed=zlib.crc32(f"{arm}/{s}".encode()),
                                  **kw), arm, s) for s in seeds]


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


def test_claims_supported_contradicted_not_detectable_and_overfits(tmp_path):
    groups = group_by_arm(arm_runs(tmp_path, "good", 0.9) + arm_runs(tmp_path, "bad", 0.5)
                          + arm_runs(tmp_path, "twin", 0.9, train_acc=0.999))
    assert check_claim({"text": "t", "better": "good", "worse": "bad"}, groups, STATS)[2] == "supported"
    assert check_claim({"text": "t", "better": "bad", "worse": "good"}, groups, STATS)[2] == "contradicted"
    assert check_claim({"text": "t", "better": "good", "worse": "twin"}, groups, STATS)[2] == "not detectable"
    assert check_claim({"text": "t", "better": "good", "worse": "nope"}, groups, STATS)[2] == "not checked"
    assert check_claim({"text": "t", "overfits": "twin"}, groups, STATS)[2] == "supported"


def test_study_file_claims_and_stats_are_validated(tmp_path):
    from dlstudy.studies.running.runner import load_study

    base = {"name": "s", "arms": [{"name": "a"}, {"name": "b"}], "reference": {}}
    for claims, fragment in (([{"better": "a", "worse": "zz"}], "'zz' is not an arm"),
                             ([{"text": "x"}], "expected {text, better")):
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump({**base, "reference": {"claims": claims}}))
        with pytest.raises(ConfigError, match=fragment):
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
