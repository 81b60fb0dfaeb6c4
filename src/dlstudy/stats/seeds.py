"""Across seeds: a Student-t summary of one arm and a paired t-test of two arms."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from dlstudy.stats._checks import check_confidence, check_values, same_length


def _t_interval(mean: float, std: float, n: int, confidence: float):
    """mean -/+ t_{(1+confidence)/2, n-1} std / sqrt(n) (= scipy.stats.t.interval); NaN below 2 values."""
    if n < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def seed_summary(values, confidence: float = 0.95):
    """(mean, std, low, high) of one arm's metric over S seeds.

    std is the sample standard deviation (ddof=1); [low, high] the Student-t interval for the mean,
    mean -/+ t_{S-1} std / sqrt(S). One seed: std, low and high are NaN (no spread to estimate). Equal values:
    std 0 and low = high = mean.
    """
    v = check_values(values, "values")
    confidence = check_confidence(confidence)
    mean = float(np.mean(v))
    std = float(np.std(v, ddof=1)) if v.size > 1 else float("nan")
    return (mean, std, *_t_interval(mean, std, v.size, confidence))


def paired_t_test(values_a, values_b, confidence: float = 0.95):
    """(mean_diff, low, high, pvalue): paired t-test of per-seed differences a - b (seed i of a with seed i of b).

    The interval is the Student-t interval of the mean difference; the two-sided p-value is
    scipy.stats.ttest_rel's. One seed: low, high and p are NaN. All differences equal: the interval is that
    difference and p is 1 if it is 0, else 0 (ttest_rel gives NaN or 0 there).
    """
    a, b = check_values(values_a, "values_a"), check_values(values_b, "values_b")
    same_length(a, b, "values_a", "values_b")
    confidence = check_confidence(confidence)
    d = a - b
    mean = float(np.mean(d))
    if d.size < 2:
        return mean, float("nan"), float("nan"), float("nan")
    std = float(np.std(d, ddof=1))
    low, high = _t_interval(mean, std, d.size, confidence)
    if std == 0:
        return mean, mean, mean, 1.0 if mean == 0 else 0.0
    return mean, low, high, float(stats.ttest_rel(a, b).pvalue)
