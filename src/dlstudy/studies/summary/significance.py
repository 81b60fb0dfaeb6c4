"""Which differences between arms are real: the statistics section of every study report, and the paired
comparisons behind the claims ledger (claims.py).

Per arm, each headline metric gets a `confidence` interval: over seeds (Student t on the per-seed values) when the
arm has two or more, else over the test samples (bootstrap of the saved predictions; Wilson for accuracy).
Per pair of arms, the difference of test accuracy A - B: with two or more common seeds a paired t-test on the
per-seed differences (seed-to-seed and test-set noise together); with one, McNemar's exact test on the same test
images (the p-value) and a paired bootstrap (the interval). Holm-Bonferroni adjusts the p-values over all pairs of
the study. The verdict reads the adjusted p at level 1 - confidence. `compare_gaps` compares two arms' train - test
accuracy gaps the same way (the reference's "batch 1 overfits"); the claims ledger (claims.py) uses both.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dlstudy.config import StatsConfig
from dlstudy.errors import DlstudyError
from dlstudy.metrics.table import study_interval_metrics
from dlstudy.report import Block, Paragraph, Table
from dlstudy.studies.summary.records import ArmRun, group_by_arm, metric, train_accuracy

INTERVAL_METRICS = study_interval_metrics()  # (key, label) columns, a view of dlstudy.metrics.table.METRICS
NOT_DETECTABLE = "no detectable difference at this test-set size"


def load_predictions(run: ArmRun):
    """The run's test predictions, or None when it has none (made by a dlstudy before predictions were saved)."""
    from dlstudy.predictions import read_predictions

    path = run.path / "predictions.npz"
    if not path.is_file():
        return None
    try:
        return read_predictions(path)
    except DlstudyError:
        return None


def _fmt_interval(value: float, low: float, high: float) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if low is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def arm_interval(runs: list[ArmRun], key: str, stats: StatsConfig) -> tuple[float, float, float, str]:
    """(estimate, low, high, method) of metric `key` for one arm's runs."""
    from dlstudy.stats import metric_interval, seed_summary

    values = [v for v in (metric(r, key) for r in runs) if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(values) >= 2:
        mean, _, low, high = seed_summary(values, stats.confidence)
        return mean, low, high, f"t over {len(values)} seeds"
    preds = load_predictions(runs[0]) if runs else None
    if preds is None:
        return (values[0] if values else math.nan), math.nan, math.nan, "—"
    ci = metric_interval(preds.y_true, preds.scores, key, stats.confidence, resamples=stats.resamples,
                         seed=stats.seed, num_classes=len(preds.class_names))
    return ci.estimate, ci.low, ci.high, f"{ci.method}, n={len(preds.y_true)}"


def interval_table(groups: dict[str, list[ArmRun]], stats: StatsConfig) -> Table:
    rows = []
    for arm, runs in groups.items():
        cells, methods = [], set()
        for key, _ in INTERVAL_METRICS:
            estimate, low, high, method = arm_interval(runs, key, stats)
            cells.append(_fmt_interval(estimate, low, high))
            methods.add(method.split(",")[0] if method.startswith(("Wilson", "bootstrap")) else method)
        rows.append([arm, len(runs)] + cells + [" / ".join(sorted(methods))])
    level = f"{stats.confidence:.0%}"
    return Table(["arm", "n seeds"] + [t for _, t in INTERVAL_METRICS] + ["interval"], rows,
                 f"Test metrics with {level} intervals: over seeds (Student t) for arms with several seeds, else over "
                 f"the test images (Wilson for accuracy, bootstrap of the saved predictions otherwise, "
                 f"{stats.resamples} resamples)")


@dataclass
class Comparison:
    """A - B of one metric on the same test images."""

    arm_a: str
    arm_b: str
    difference: float
    low: float
    high: float
    pvalue: float
    test: str
    n_test: int | None = None
    p_holm: float = math.nan
    note: str = ""

    def verdict(self, alpha: float) -> str:
        p = self.p_holm if math.isfinite(self.p_holm) else self.pvalue
        if not math.isfinite(p):
            return self.note or "not compared"
        if p < alpha:
            return f"{self.arm_a} better" if self.difference > 0 else f"{self.arm_b} better"
        return NOT_DETECTABLE


def _common_seeds(runs_a: list[ArmRun], runs_b: list[ArmRun]) -> list[tuple[ArmRun, ArmRun]]:
    by_seed = {r.seed: r for r in runs_b}
    return [(a, by_seed[a.seed]) for a in runs_a if a.seed in by_seed]


def compare_arms(arm_a: str, runs_a: list[ArmRun], arm_b: str, runs_b: list[ArmRun], stats: StatsConfig,
                 key: str = "accuracy") -> Comparison:
    """Paired comparison of two arms' test `key` (see the module docstring for which test)."""
    from dlstudy.stats import mcnemar, paired_bootstrap, paired_t_test

    pairs = _common_seeds(runs_a, runs_b)
    nan = math.nan
    if len(pairs) >= 2:
        a = [metric(x, key) for x, _ in pairs]
        b = [metric(y, key) for _, y in pairs]
        if all(isinstance(v, (int, float)) for v in a + b):
            diff, low, high, p = paired_t_test(a, b, stats.confidence)
            return Comparison(arm_a, arm_b, diff, low, high, p, f"paired t over {len(pairs)} seeds")
    if not pairs:
        return Comparison(arm_a, arm_b, nan, nan, nan, nan, "—", note="no common seed")
    pa, pb = load_predictions(pairs[0][0]), load_predictions(pairs[0][1])
    if pa is None or pb is None:
        return Comparison(arm_a, arm_b, nan, nan, nan, nan, "—", note="no saved predictions")
    if not np.array_equal(pa.sample_ids, pb.sample_ids) or not np.array_equal(pa.y_true, pb.y_true):
        return Comparison(arm_a, arm_b, nan, nan, nan, nan, "—", note="different test images")
    diff, low, high, p_boot = paired_bootstrap(pa.y_true, pa.scores, pb.scores, key, stats.resamples,
                                               stats.confidence, stats.seed, num_classes=len(pa.class_names))
    if key == "accuracy":
        _, p = mcnemar(pa.correct, pb.correct, exact=True)
        return Comparison(arm_a, arm_b, diff, low, high, p, "McNemar exact (CI: paired bootstrap)", len(pa.y_true))
    return Comparison(arm_a, arm_b, diff, low, high, p_boot, "paired bootstrap", len(pa.y_true))


def pairwise(groups: dict[str, list[ArmRun]], stats: StatsConfig, key: str = "accuracy") -> list[Comparison]:
    """Every pair of arms (in study order), with Holm-adjusted p-values over the pairs that could be tested."""
    from dlstudy.stats import holm

    comparisons = [compare_arms(a, groups[a], b, groups[b], stats, key) for a, b in itertools.combinations(groups, 2)]
    tested = [c for c in comparisons if math.isfinite(c.pvalue)]
    if tested:
        for c, adjusted in zip(tested, holm([c.pvalue for c in tested])):
            c.p_holm = float(adjusted)
    return comparisons


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return "< 1e-4" if p < 1e-4 else f"{p:.4f}"


def pairwise_table(comparisons: Sequence[Comparison], stats: StatsConfig, key: str = "accuracy") -> Table:
    alpha = 1 - stats.confidence
    rows = [[c.arm_a, c.arm_b, f"{c.difference:+.3f}" if math.isfinite(c.difference) else "—",
             f"[{c.low:+.3f}, {c.high:+.3f}]" if math.isfinite(c.low) else "—", fmt_p(c.pvalue), fmt_p(c.p_holm),
             c.verdict(alpha), c.test] for c in comparisons]
    return Table(["arm A", "arm B", f"{key} A - B", f"{stats.confidence:.0%} CI", "p", "Holm p", "verdict", "test"],
                 rows, f"Pairwise differences of test {key}; verdicts at level {alpha:g} after Holm-Bonferroni over "
                       f"all {len(comparisons)} pairs")


def power_sentence(groups: dict[str, list[ArmRun]], comparisons: Sequence[Comparison], stats: StatsConfig) -> str:
    """The smallest accuracy difference the test set could have shown (80% power), from its size and accuracy."""
    from dlstudy.stats import minimum_detectable_difference

    sizes = [c.n_test for c in comparisons if c.n_test]
    first = next((load_predictions(runs[0]) for runs in groups.values() if runs), None)
    n = sizes[0] if sizes else (len(first.y_true) if first is not None else None)
    accs = [metric(r, "accuracy") for runs in groups.values() for r in runs]
    accs = [a for a in accs if isinstance(a, (int, float)) and math.isfinite(a)]
    if not n or not accs:
        return ""
    acc = sum(accs) / len(accs)
    mdd = minimum_detectable_difference(n, acc, stats.confidence, 0.8)
    return (f"With {n} test images at accuracy ~{acc:.3f}, a difference in accuracy between two arms smaller than "
            f"~{mdd:.3f} would be detected less than 80% of the time (McNemar, level {1 - stats.confidence:g}, "
            f"independent errors assumed; correlated arms can show smaller ones): \"{NOT_DETECTABLE}\" does not "
            f"mean the arms are equal.")


def statistics_blocks(runs: list[ArmRun], stats: StatsConfig) -> list[Block]:
    """The "Statistics" section of a study report: intervals per arm, pairwise table, power sentence."""
    groups = group_by_arm(runs)
    if not groups:
        return []
    blocks: list[Block] = [interval_table(groups, stats)]
    if len(groups) >= 2:
        comparisons = pairwise(groups, stats)
        blocks.append(pairwise_table(comparisons, stats))
        sentence = power_sentence(groups, comparisons, stats)
        if sentence:
            blocks.append(Paragraph(sentence))
    return blocks


# ------------------------------------------------------------------------------------------------ train - test gaps


def _gap(run: ArmRun) -> tuple[float, float] | None:
    """(train-subset accuracy, test accuracy) of a run, or None when either is missing."""
    train, test = train_accuracy(run), metric(run, "accuracy")
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (train, test))
    return (float(train), float(test)) if ok else None


def _train_n(run: ArmRun) -> int:
    return int((run.config.get("train") or {}).get("train_eval_subset") or 0)


def compare_gaps(arm_a: str, runs_a: list[ArmRun], arm_b: str, runs_b: list[ArmRun],
                 stats: StatsConfig) -> Comparison:
    """(train - test accuracy of A) - (train - test accuracy of B): does A overfit more than B?

    Two or more common seeds: a paired t-test on the per-seed gap differences. One: a z-test (Wald) whose variance
    adds the two train-subset accuracies' binomial variances (independent subsets assumed: conservative when the
    arms share the subset) and the variance of the paired test-accuracy difference on the same test images (from the
    saved predictions: ((n01 + n10) / n - d^2) / n; independent binomials without them)."""
    from scipy.stats import norm

    from dlstudy.stats import paired_t_test

    nan = math.nan
    pairs = [(a, b) for a, b in _common_seeds(runs_a, runs_b) if _gap(a) and _gap(b)]
    if not pairs:
        return Comparison(arm_a, arm_b, nan, nan, nan, nan, "—", note="no common seed with train and test accuracy")
    if len(pairs) >= 2:
        diff, low, high, p = paired_t_test([_gap(a)[0] - _gap(a)[1] for a, _ in pairs],
                                           [_gap(b)[0] - _gap(b)[1] for _, b in pairs], stats.confidence)
        return Comparison(arm_a, arm_b, diff, low, high, p, f"paired t over {len(pairs)} seeds")
    run_a, run_b = pairs[0]
    (train_a, test_a), (train_b, test_b) = _gap(run_a), _gap(run_b)
    n_a, n_b = _train_n(run_a), _train_n(run_b)
    if n_a < 1 or n_b < 1:
        return Comparison(arm_a, arm_b, nan, nan, nan, nan, "—", note="train subset size unknown")
    var = train_a * (1 - train_a) / n_a + train_b * (1 - train_b) / n_b
    pa, pb = load_predictions(run_a), load_predictions(run_b)
    if pa is not None and pb is not None and np.array_equal(pa.sample_ids, pb.sample_ids):
        d = pa.correct.astype(float) - pb.correct.astype(float)  # (N,) in {-1, 0, 1}, paired on the same images
        n_test, test_diff = d.size, float(d.mean())
        var += max(float((d ** 2).mean()) - test_diff ** 2, 0.0) / n_test
        test = f"z-test on the gap difference (test paired on the same {n_test} images, train subsets {n_a} / {n_b})"
    else:
        n_test = int(run_a.metrics.get("n_samples") or 0) or int(run_b.metrics.get("n_samples") or 0)
        if n_test < 1:
            return Comparison(arm_a, arm_b, nan, nan, nan, nan, "—", note="test size unknown")
        test_diff = test_a - test_b
        var += (test_a * (1 - test_a) + test_b * (1 - test_b)) / n_test
        test = f"z-test on the gap difference (independent binomials, n={n_test} test)"
    diff = (train_a - train_b) - test_diff
    se = math.sqrt(var)
    z = norm.ppf(0.5 + stats.confidence / 2)
    p = float(2 * norm.sf(abs(diff) / se)) if se > 0 else (1.0 if diff == 0 else 0.0)
    return Comparison(arm_a, arm_b, diff, diff - z * se, diff + z * se, p, test, n_test)
