"""Which differences between arms are real: the statistics section of every study report, and the check of the
reference report's claims in the combined reproduce report.

Per arm, each headline metric gets a `confidence` interval: over seeds (Student t on the per-seed values) when the
arm has two or more, else over the test samples (bootstrap of the saved predictions; Wilson for accuracy).
Per pair of arms, the difference of test accuracy A - B: with two or more common seeds a paired t-test on the
per-seed differences (seed-to-seed and test-set noise together); with one, McNemar's exact test on the same test
images (the p-value) and a paired bootstrap (the interval). Holm-Bonferroni adjusts the p-values over all pairs of
the study. The verdict reads the adjusted p at level 1 - confidence.
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


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return "< 1e-4" if p < 1e-4 else f"{p:.4f}"


def pairwise_table(comparisons: Sequence[Comparison], stats: StatsConfig, key: str = "accuracy") -> Table:
    alpha = 1 - stats.confidence
    rows = [[c.arm_a, c.arm_b, f"{c.difference:+.3f}" if math.isfinite(c.difference) else "—",
             f"[{c.low:+.3f}, {c.high:+.3f}]" if math.isfinite(c.low) else "—", _fmt_p(c.pvalue), _fmt_p(c.p_holm),
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


# ------------------------------------------------------------------------------------------------ claims


def check_claim(claim: dict, groups: dict[str, list[ArmRun]], stats: StatsConfig) -> tuple[str, str, str]:
    """(claim text, our evidence, verdict: supported / contradicted / not detectable / not checked).

    A claim is {text, better: ARM, worse: ARM} (better's test accuracy is higher) or {text, overfits: ARM} (its
    train accuracy is above its test accuracy by more than both measurements' noise: Newcombe's interval for a
    difference of two independent proportions, or a t-interval over seeds)."""
    text = str(claim.get("text", ""))
    if "overfits" in claim:
        return (text,) + _check_overfits(str(claim["overfits"]), groups, stats)
    better, worse = str(claim.get("better")), str(claim.get("worse"))
    if better not in groups or worse not in groups:
        return text, f"arm {better if better not in groups else worse!r} has no finished run", "not checked"
    c = compare_arms(better, groups[better], worse, groups[worse], stats)
    if not math.isfinite(c.pvalue):
        return text, c.note, "not checked"
    p_text = _fmt_p(c.pvalue)
    evidence = (f"{better} - {worse}: {c.difference:+.3f} [{c.low:+.3f}, {c.high:+.3f}], "
                f"p {p_text if p_text.startswith('<') else '= ' + p_text} ({c.test})")
    if c.pvalue >= 1 - stats.confidence:
        return text, evidence, "not detectable"
    return text, evidence, "supported" if c.difference > 0 else "contradicted"


def _check_overfits(arm: str, groups: dict[str, list[ArmRun]], stats: StatsConfig) -> tuple[str, str]:
    from dlstudy.stats import proportion_ci, seed_summary

    runs = groups.get(arm)
    if not runs:
        return f"arm {arm!r} has no finished run", "not checked"
    gaps = [(train_accuracy(r), metric(r, "accuracy")) for r in runs]
    gaps = [(t, a) for t, a in gaps if isinstance(t, (int, float)) and isinstance(a, (int, float))]
    if not gaps:
        return "no train accuracy recorded", "not checked"
    if len(gaps) >= 2:
        mean, _, low, high = seed_summary([t - a for t, a in gaps], stats.confidence)
    else:
        train, test = gaps[0]
        n_train = int((runs[0].config.get("train") or {}).get("train_eval_subset") or 0)
        n_test = int(runs[0].metrics.get("n_samples") or 0)
        if n_train < 1 or n_test < 1:
            return "train or test size unknown", "not checked"
        (l1, u1), (l2, u2) = (proportion_ci(round(train * n_train), n_train, stats.confidence),
                              proportion_ci(round(test * n_test), n_test, stats.confidence))
        mean = train - test  # Newcombe's hybrid score interval of a difference of independent proportions
        low = mean - math.sqrt((train - l1) ** 2 + (u2 - test) ** 2)
        high = mean + math.sqrt((u1 - train) ** 2 + (test - l2) ** 2)
    evidence = f"{arm}: train - test accuracy {mean:+.3f} [{low:+.3f}, {high:+.3f}]"
    if low > 0:
        return evidence, "supported"
    return evidence, "contradicted" if high < 0 else "not detectable"


def claims_table(claims: Sequence[dict], groups: dict[str, list[ArmRun]], stats: StatsConfig) -> Table:
    rows = [list(check_claim(c, groups, stats)) for c in claims]
    return Table(["reference report's claim", f"our evidence ({stats.confidence:.0%} CI)", "verdict"], rows,
                 "The reference report's comparative claims checked against our runs")
