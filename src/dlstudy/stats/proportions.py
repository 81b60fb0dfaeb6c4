"""Accuracy as a binomial proportion: its interval, McNemar's paired test, and the smallest detectable difference."""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

from dlstudy.stats._checks import (check_choice, check_confidence, check_correctness, check_count, same_length)

PROPORTION_METHODS = ("wilson", "clopper-pearson")


def proportion_ci(successes: int, n: int, confidence: float = 0.95, method: str = "wilson"):
    """(low, high) interval for a proportion successes / n (e.g. accuracy = correct / test samples).

    'wilson': the score interval, center (p + z^2/2n) / (1 + z^2/n), half-width z sqrt(p(1-p)/n + z^2/4n^2) /
    (1 + z^2/n), clipped to [0, 1]. 'clopper-pearson': the exact interval from Beta quantiles, low =
    Beta(alpha/2; x, n-x+1) (0 when x = 0), high = Beta(1-alpha/2; x+1, n-x) (1 when x = n). Both equal
    statsmodels' proportion_confint (methods 'wilson', 'beta').
    """
    n = check_count(n, "n", 1)
    successes = check_count(successes, "successes", 0)
    if successes > n:
        raise ValueError(f"successes must be at most n, got successes={successes}, n={n}")
    confidence = check_confidence(confidence)
    check_choice(method, PROPORTION_METHODS, "method")
    alpha = (1 - confidence) / 2
    if method == "clopper-pearson":
        low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha, successes, n - successes + 1))
        high = 1.0 if successes == n else float(stats.beta.isf(alpha, successes + 1, n - successes))
        return low, high
    z = float(stats.norm.isf(alpha))
    p, z2 = successes / n, z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return min(max(center - half, 0.0), 1.0), min(max(center + half, 0.0), 1.0)


def mcnemar(correct_a, correct_b, exact: bool = True, mid_p: bool = False):
    """(statistic, pvalue) of McNemar's test that two classifiers have the same accuracy on the same samples.

    correct_a, correct_b: (N,) bool, True where the arm classified the sample correctly. Only the discordant
    samples count: b = a right and b wrong, c = the reverse.
      exact (default): statistic min(b, c); p = the two-sided binomial test of b successes in b + c trials at
        1/2 (scipy.stats.binomtest), = min(1, 2 P(X <= min(b, c))).
      mid_p: the exact p minus P(X = min(b, c)) (Fagerland et al. 2013), closer to nominal size, less
        conservative; computed as 2 P(X <= m) - P(X = m), which is 1 when b = c.
      exact=False: chi-square with continuity correction, statistic (|b - c| - 1)^2 / (b + c) on 1 df.
    Statistic and p equal statsmodels' mcnemar(table, exact, correction=True). With no discordant pair
    (identical arms) the statistic is 0 and p is 1 (statsmodels gives p = 0 for the chi-square version there).
    """
    a = check_correctness(correct_a, "correct_a")
    b_arr = check_correctness(correct_b, "correct_b")
    same_length(a, b_arr, "correct_a", "correct_b")
    if mid_p and not exact:
        raise ValueError("mid_p applies to the exact test: pass exact=True (or mid_p=False)")
    b = int(np.count_nonzero(a & ~b_arr))
    c = int(np.count_nonzero(~a & b_arr))
    m, n = min(b, c), b + c
    if n == 0:
        return 0.0, 1.0
    if not exact:
        statistic = (abs(b - c) - 1) ** 2 / n
        return float(statistic), float(stats.chi2.sf(statistic, 1))
    if mid_p:
        return float(m), float(min(1.0, 2 * stats.binom.cdf(m, n, 0.5) - stats.binom.pmf(m, n, 0.5)))
    return float(m), float(stats.binomtest(m, n, 0.5).pvalue)


def minimum_detectable_difference(n: int, accuracy: float, confidence: float = 0.95, power: float = 0.8,
                                  discordance: float | None = None) -> float:
    """Smallest accuracy difference that a paired comparison on n test samples detects with the given power.

    Connor's (1987) normal approximation for McNemar's test: with discordant fraction psi (samples exactly one
    arm gets right) and difference delta, a two-sided test at level 1 - confidence has power
        Phi((sqrt(n) delta - z_{alpha/2} sqrt(psi)) / sqrt(psi - delta^2)),
    solved here for delta. psi defaults to 2 acc (1 - acc), the discordance of two arms at this accuracy whose
    errors are independent (then delta ~ (z_{alpha/2} + z_power) sqrt(2 acc (1 - acc) / n), the familiar
    two-proportion formula); pass the observed fraction of discordant samples when you have it (correlated
    errors make psi, and the detectable difference, smaller). NaN when even delta = psi (every discordant sample
    favouring one arm) falls short of the power.
    """
    n = check_count(n, "n", 1)
    if not 0 <= accuracy <= 1:
        raise ValueError(f"accuracy must lie in [0, 1], got {accuracy!r}")
    alpha = 1 - check_confidence(confidence)
    if not 0 < power < 1:
        raise ValueError(f"power must be strictly between 0 and 1, got {power!r}")
    psi = 2 * accuracy * (1 - accuracy) if discordance is None else discordance
    if not 0 <= psi <= 1:
        raise ValueError(f"discordance must lie in [0, 1], got {discordance!r}")
    if psi == 0:
        return float("nan")
    z_a, z_b = stats.norm.isf(alpha / 2), stats.norm.isf(1 - power)

    def shortfall(delta: float) -> float:  # increasing in delta; 0 at the detectable difference
        return math.sqrt(n) * delta - z_a * math.sqrt(psi) - z_b * math.sqrt(max(psi - delta * delta, 0.0))

    if shortfall(0.0) >= 0:  # only for power <= alpha / 2: any difference will do
        return 0.0
    if shortfall(psi) < 0:
        return float("nan")
    return float(optimize.brentq(shortfall, 0.0, psi, xtol=1e-14, rtol=1e-14))
