"""dlstudy.stats against its oracles: statsmodels (proportion intervals, McNemar, Holm), SciPy (t-tests,
bootstrap intervals on the same resamples), dlstudy.metrics on every materialised resample, brute-force jackknife,
and coverage by simulation."""

from __future__ import annotations

import subprocess
import sys
import warnings
from fractions import Fraction
from math import comb

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from dlstudy import metrics as m
from dlstudy import stats as st
from dlstudy.metrics import counts as metric_counts
from dlstudy.stats import _counts, _ranks
from dlstudy.stats import bootstrap as bs

LABEL_METRICS = [name for name, spec in st.METRICS.items() if spec.grain is not None]
AUC_METRICS = [name for name, spec in st.METRICS.items() if spec.grain is None]


def _close(a, b, tol):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=0, atol=tol, equal_nan=True)


def _case(seed: int, n: int | None = None, k: int | None = None):
    """(y_true, y_score (N, K), a second arm's y_score, K) with the awkward features, chosen by the seed:
    absent classes, many ties, an arm with 100% accuracy, identical arms."""
    rng = np.random.default_rng(seed)
    k = k or int(rng.choice([2, 3, 7, 30, 200]))
    n = n or int(rng.choice([10, 60, 500, 3000]))
    present = k if seed % 4 else max(2, k // 2)
    y = rng.integers(0, present, n)
    s = rng.normal(size=(n, k)) + rng.uniform(0.5, 3) * np.eye(k)[y]
    if seed % 3 == 0:
        s = np.round(s, 1)  # ties, within and across classes
    s2 = s + rng.normal(scale=0.7, size=s.shape)
    if seed % 5 == 1:
        s2 = s.copy()  # identical arms
    if seed % 5 == 2:
        s2 = s + 10 * np.eye(k)[y]  # a perfect arm
    return y, s, s2, k


def _metric_by_rows(name: str, y, score, k: int) -> float:
    """The oracle: dlstudy.metrics on a materialised data set."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name.startswith("roc_auc"):
            return m.roc_auc_score(y, score, average=name.rsplit("_", 1)[1], num_classes=k)
        pred = score.argmax(axis=1) if score.ndim == 2 else score
        if name == "accuracy":
            return m.accuracy_score(y, pred)
        if name == "balanced_accuracy":
            return m.balanced_accuracy_score(y, pred, k)
        which = ("precision_macro", "recall_macro", "f1_macro").index(name)
        return m.precision_recall_fscore(y, pred, average="macro", num_classes=k)[which]


def _rows_of_counts(table: _counts.CellTable, counts: np.ndarray, rng) -> np.ndarray:
    """A data set with the given cell counts: each draw picks a random member row of its cell."""
    order = np.argsort(table.cell_of_row, kind="stable")  # rows grouped by cell
    size = np.bincount(table.cell_of_row, minlength=counts.size)
    start = np.r_[0, np.cumsum(size)][:-1]
    cell = np.repeat(np.arange(counts.size), counts)
    return order[start[cell] + (rng.random(cell.size) * size[cell]).astype(np.int64)]


# ------------------------------------------------------------------ closed forms against statsmodels and SciPy


@pytest.mark.parametrize("n", [1, 2, 10, 37, 500, 100_000])
def test_proportion_ci_matches_statsmodels(n):
    rng = np.random.default_rng(n)
    for x in sorted({0, 1, n // 2, n - 1, n, int(rng.integers(0, n + 1))} - {-1}):
        for conf in (0.5, 0.9, 0.95, 0.99, 0.999):
            for ours, theirs in (("wilson", "wilson"), ("clopper-pearson", "beta")):
                expected = proportion_confint(x, n, alpha=1 - conf, method=theirs)
                _close(st.proportion_ci(x, n, conf, ours), expected, 1e-10)
    assert st.proportion_ci(0, 50, method="clopper-pearson")[0] == 0.0
    assert st.proportion_ci(50, 50, method="clopper-pearson")[1] == 1.0


def _correctness(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.choice([10, 57, 1000, 100_000]))
    a = rng.random(n) < rng.uniform(0.3, 0.99)
    kind = seed % 4
    b = a.copy() if kind == 0 else np.ones(n, bool) if kind == 1 else rng.random(n) < rng.uniform(0.3, 0.99)
    if kind == 3:  # correlated arms: few discordant samples
        b = np.where(rng.random(n) < 0.97, a, ~a)
    return a, b


@pytest.mark.parametrize("seed", range(16))
def test_mcnemar_matches_statsmodels(seed):
    a, b = _correctness(seed)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    discordant = table[0][1] + table[1][0]
    for exact in (True, False):
        ours = st.mcnemar(a, b, exact=exact)
        if discordant == 0:
            assert ours == (0.0, 1.0)
            continue
        ref = sm_mcnemar(np.array(table), exact=exact, correction=True)
        _close(ours, (ref.statistic, ref.pvalue), 1e-10)


def test_mcnemar_mid_p_by_exact_arithmetic():
    rng = np.random.default_rng(0)
    for b, c in [(0, 0), (3, 3), (0, 5), (7, 2), (12, 30), (1, 0)]:
        n, k = b + c, min(b, c)
        expected = 1.0 if n == 0 else float(min(Fraction(1), (2 * sum(Fraction(comb(n, i)) for i in range(k + 1))
                                                               - comb(n, k)) / 2 ** n))
        left = np.r_[np.ones(b, bool), np.zeros(c, bool), rng.random(20) < 0.5]
        right = np.r_[np.zeros(b, bool), np.ones(c, bool), left[b + c:]]
        stat, p = st.mcnemar(left, right, mid_p=True)
        assert stat == k and p == pytest.approx(expected, abs=1e-12)
        assert p <= st.mcnemar(left, right)[1] + 1e-15  # mid-p is never more conservative than exact


@pytest.mark.parametrize("seed", range(8))
def test_holm_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    m_tests = int(rng.choice([1, 2, 6, 45, 300]))
    p = rng.random(m_tests) ** 3
    if seed % 2:
        p[rng.integers(0, m_tests, m_tests // 2)] = p[0]  # ties
        p[rng.integers(0, m_tests)] = 0.0
        p[rng.integers(0, m_tests)] = 1.0
    ours = st.holm(p)
    _close(ours, multipletests(p, method="holm")[1], 1e-12)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(ours[order]) >= 0) and np.all(ours <= 1) and np.all(ours >= p)
    assert st.holm([]).shape == (0,)


@pytest.mark.parametrize("seed", range(6))
def test_seed_summary_and_paired_t_test_match_scipy(seed):
    rng = np.random.default_rng(seed)
    s = int(rng.choice([2, 3, 5, 10]))
    a, b = rng.normal(0.8, 0.02, s), rng.normal(0.79, 0.02, s)
    for conf in (0.9, 0.95):
        mean, std, low, high = st.seed_summary(a, conf)
        assert mean == pytest.approx(np.mean(a), abs=1e-15) and std == pytest.approx(np.std(a, ddof=1), abs=1e-15)
        _close((low, high), sps.t.interval(conf, s - 1, loc=np.mean(a), scale=sps.sem(a)), 1e-12)
        diff, low, high, p = st.paired_t_test(a, b, conf)
        ref = sps.ttest_rel(a, b)
        assert diff == pytest.approx(np.mean(a - b), abs=1e-15) and p == ref.pvalue
        _close((low, high), tuple(ref.confidence_interval(conf)), 1e-12)


def test_seed_edge_cases():
    mean, std, low, high = st.seed_summary([0.9])
    assert mean == 0.9 and np.isnan(std) and np.isnan(low) and np.isnan(high)
    assert st.seed_summary([0.5, 0.5, 0.5]) == (0.5, 0.0, 0.5, 0.5)
    assert st.paired_t_test([0.8, 0.9], [0.8, 0.9]) == (0.0, 0.0, 0.0, 1.0)  # identical arms
    assert st.paired_t_test([1.5, 2.5], [0.5, 1.5])[3] == 0.0  # the same nonzero difference every seed
    diff, low, high, p = st.paired_t_test([0.8], [0.7])
    assert diff == pytest.approx(0.1) and np.isnan(low) and np.isnan(high) and np.isnan(p)


def test_minimum_detectable_difference():
    n, acc, conf, power = 10_000, 0.8, 0.95, 0.8
    delta = st.minimum_detectable_difference(n, acc, conf, power)
    psi = 2 * acc * (1 - acc)
    z_a = sps.norm.isf((1 - conf) / 2)
    achieved = sps.norm.cdf((np.sqrt(n) * delta - z_a * np.sqrt(psi)) / np.sqrt(psi - delta ** 2))
    assert achieved == pytest.approx(power, abs=1e-9)
    approx = (z_a + sps.norm.isf(1 - power)) * np.sqrt(psi / n)  # the two-proportion formula
    assert delta == pytest.approx(approx, rel=0.01)
    assert st.minimum_detectable_difference(n, acc, discordance=0.05) < delta  # correlated errors: smaller
    assert st.minimum_detectable_difference(40 * n, acc) == pytest.approx(delta / np.sqrt(40), rel=0.01)
    assert np.isnan(st.minimum_detectable_difference(3, 0.5))  # too few samples for any difference
    # simulated McNemar (chi-square) power at that difference, psi and n
    rng = np.random.default_rng(0)
    b = rng.binomial(n, (psi + delta) / 2, 4000)
    c = rng.binomial(n - b, ((psi - delta) / 2) / (1 - (psi + delta) / 2))
    pvals = sps.chi2.sf((np.abs(b - c) - 1.0) ** 2 / (b + c), 1)
    assert np.mean(pvals < 1 - conf) == pytest.approx(power, abs=0.03)


# ------------------------------------------------------------------ each resample equals the oracle on its rows


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("metric", LABEL_METRICS)
def test_count_resamples_equal_metrics_on_materialised_rows(seed, metric):
    y, s, s2, k = _case(seed)
    arms = bs._prepare(metric, y, [s, s2], ["a", "b"], None)
    rng = np.random.default_rng(seed)
    counts = _counts.draw_cell_counts(arms.table, rng, 4)
    assert np.all(counts.sum(axis=1) == y.size)
    values = arms.values(counts)  # (2, 4)
    for r in range(counts.shape[0]):
        rows = _rows_of_counts(arms.table, counts[r], rng)
        for a, score in enumerate((s, s2)):
            _close(values[a, r], _metric_by_rows(metric, y[rows], score[rows], k), 1e-12)
    _close(arms.estimate(), [_metric_by_rows(metric, y, x, k) for x in (s, s2)], 1e-12)


@pytest.mark.parametrize("n,k", [(100_000, 2), (100_000, 200), (2000, 200), (10, 200)])
def test_count_resamples_large_and_sparse(n, k):
    """N up to 10^5 and K up to 200: both samplers (multinomial over cells, row draws)."""
    y, s, _, _ = _case(1, n=n, k=k)
    for metric in ("accuracy", "f1_macro", "balanced_accuracy"):
        arms = bs._prepare(metric, y, [s], ["y_score"], None)
        rng = np.random.default_rng(0)
        counts = _counts.draw_cell_counts(arms.table, rng, 2)
        for r, value in enumerate(arms.values(counts)[0]):
            rows = _rows_of_counts(arms.table, counts[r], rng)
            _close(value, _metric_by_rows(metric, y[rows], s[rows], k), 1e-12)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("metric", AUC_METRICS)
def test_weighted_auc_equals_roc_auc_score_on_materialised_rows(seed, metric):
    y, s, _, k = _case(seed, n=None if seed < 6 else 10)
    build = _ranks.macro_problems if metric.endswith("macro") else _ranks.micro_problems
    pr = build(y, s)
    w = _ranks.draw_row_weights(np.random.default_rng(seed), y.size, 3)
    values = _ranks.weighted_auc(pr, np.ascontiguousarray(w.T, dtype=np.float32))
    for r in range(3):
        rows = np.repeat(np.arange(y.size), w[r])
        _close(values[r], _metric_by_rows(metric, y[rows], s[rows], k), 1e-12)


def test_weighted_auc_large_n():
    y, s, _, k = _case(7, n=100_000, k=10)
    for metric, build in (("roc_auc_macro", _ranks.macro_problems), ("roc_auc_micro", _ranks.micro_problems)):
        w = _ranks.draw_row_weights(np.random.default_rng(0), y.size, 1)
        value = _ranks.weighted_auc(build(y, s), np.ascontiguousarray(w.T, dtype=np.float32))[0]
        rows = np.repeat(np.arange(y.size), w[0])
        _close(value, _metric_by_rows(metric, y[rows], s[rows], k), 1e-12)


def test_samplers_draw_the_same_distribution(monkeypatch):
    """The multinomial over cells and the binned row draws are one distribution (two-sample KS on macro F1)."""
    y, s, _, _ = _case(4, n=3000, k=7)
    arms = bs._prepare("f1_macro", y, [s], ["y_score"], None)
    by_cells = bs._bootstrap_distribution(arms, 3000, 0)[0]
    monkeypatch.setattr(_counts, "_ROW_DRAW_PER_CELL", 10 ** 9)  # force the row sampler
    by_rows = bs._bootstrap_distribution(arms, 3000, 1)[0]
    assert sps.ks_2samp(by_cells, by_rows).pvalue > 0.01
    assert by_cells.std() == pytest.approx(by_rows.std(), rel=0.08)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("metric", list(st.METRICS))
def test_jackknife_equals_leave_one_out(seed, metric):
    y, s, s2, k = _case(seed, n=40)
    arms = bs._prepare(metric, y, [s, s2], ["a", "b"], None)
    values, weights = arms.jackknife()
    if isinstance(arms, bs.CountArms):  # one value per cell: expand to rows
        values = values[:, arms.table.cell_of_row]
    else:
        assert np.all(weights == 1)
    for j in range(y.size):
        keep = np.arange(y.size) != j
        for a, score in enumerate((s, s2)):
            _close(values[a, j], _metric_by_rows(metric, y[keep], score[keep], k), 1e-12)


# ------------------------------------------------------------------ intervals against scipy.stats.bootstrap


def _f1_statistic(k):
    def statistic(y_true, y_pred, axis=-1):  # vectorised macro F1 of (..., N) label arrays
        yt, yp = np.atleast_2d(y_true), np.atleast_2d(y_pred)
        codes = (yt * k + yp).astype(np.int64) + (np.arange(yt.shape[0]) * k * k)[:, None]
        cm = np.bincount(codes.ravel(), minlength=yt.shape[0] * k * k).reshape(-1, k, k)
        tp = np.diagonal(cm, axis1=1, axis2=2)
        out = metric_counts.f1_macro(tp, cm.sum(axis=2), cm.sum(axis=1))
        return out if np.ndim(y_true) > 1 else out[0]
    return statistic


@pytest.mark.parametrize("method", ["percentile", "bca"])
@pytest.mark.parametrize("metric", ["accuracy", "f1_macro"])
def test_interval_equals_scipy_on_the_same_resamples(method, metric):
    """scipy.stats.bootstrap's own resamples, fed to our interval: 1e-10 (BCa with our cell jackknife)."""
    y, s, _, k = _case(2, n=400, k=5)
    pred = s.argmax(axis=1)
    arms = bs._prepare(metric, y, [s], ["y_score"], None)
    if metric == "accuracy":
        data, statistic, paired = ((y == pred).astype(float),), np.mean, False
    else:
        data, statistic, paired = (y, pred), _f1_statistic(k), True
    for conf in (0.9, 0.95):
        res = sps.bootstrap(data, statistic, n_resamples=2000, confidence_level=conf, method=method,
                            paired=paired, vectorized=True, rng=np.random.default_rng(3))
        theta_hat = float(arms.estimate()[0])
        assert theta_hat == statistic(*data)
        jack, weights = arms.jackknife()
        ours = bs._interval(theta_hat, res.bootstrap_distribution, conf, method, jack[0], weights)
        _close(ours, tuple(res.confidence_interval), 1e-10)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_ci_close_to_scipy_bootstrap(method):
    """Different random resamples, the same method: intervals within 0.01 on N = 2000."""
    y, s, _, k = _case(3, n=2000, k=7)
    pred = s.argmax(axis=1)
    est, low, high = st.bootstrap_ci(y, s, "accuracy", n_resamples=4000, method=method)
    ref = sps.bootstrap(((y == pred).astype(float),), np.mean, n_resamples=4000, method=method, rng=1)
    assert est == m.accuracy_score(y, pred)
    _close((low, high), tuple(ref.confidence_interval), 0.01)
    est, low, high = st.bootstrap_ci(y, pred, "f1_macro", n_resamples=2000, method=method, num_classes=k)
    ref = sps.bootstrap((y, pred), _f1_statistic(k), n_resamples=2000, method=method, paired=True, rng=1)
    _close((low, high), tuple(ref.confidence_interval), 0.01)


def test_bootstrap_ci_auc_close_to_a_row_bootstrap():
    """ROC AUC: our interval against a plain row-index bootstrap of roc_auc_score (different resamples)."""
    y, s, _, k = _case(5, n=600, k=4)
    rng = np.random.default_rng(0)
    for metric in AUC_METRICS:
        dist = [_metric_by_rows(metric, y[r], s[r], k) for r in rng.integers(0, y.size, (600, y.size))]
        est, low, high = st.bootstrap_ci(y, s, metric, n_resamples=2000)
        assert est == pytest.approx(_metric_by_rows(metric, y, s, k), abs=1e-12)
        _close((low, high), np.quantile(dist, [0.025, 0.975]), 0.01)


# ------------------------------------------------------------------ coverage and size by simulation


def test_coverage_of_accuracy_intervals():
    """1,000 test sets of N = 500 from a classifier of true accuracy 0.8: 95% intervals cover 0.8 in 93-97%."""
    rng = np.random.default_rng(0)
    n, p, sets = 500, 0.8, 1000
    hits = {"percentile": 0, "bca": 0, "wilson": 0, "clopper-pearson": 0}
    y = np.zeros(n, dtype=np.int64)
    for _ in range(sets):
        pred = (rng.random(n) >= p).astype(np.int64)  # wrong (label 1) with probability 0.2
        correct = int(np.count_nonzero(pred == 0))
        for method in ("percentile", "bca"):
            _, low, high = st.bootstrap_ci(y, pred, "accuracy", n_resamples=1000, method=method,
                                           seed=int(rng.integers(1 << 31)), num_classes=2)
            hits[method] += low <= p <= high
        for method in ("wilson", "clopper-pearson"):
            low, high = st.proportion_ci(correct, n, method=method)
            hits[method] += low <= p <= high
    coverage = {k: v / sets for k, v in hits.items()}
    for method in ("percentile", "bca", "wilson"):
        assert 0.93 <= coverage[method] <= 0.97, coverage
    assert coverage["clopper-pearson"] >= 0.95, coverage  # exact: conservative by construction


def test_size_of_paired_tests_under_no_difference():
    """Two arms of equal true accuracy (independent errors): p < 0.05 in about 5% of 1,000 test sets."""
    rng = np.random.default_rng(1)
    n, sets = 400, 1000
    y = np.zeros(n, dtype=np.int64)
    rejections = {"bootstrap": 0, "mcnemar": 0, "mid_p": 0}
    for _ in range(sets):
        a, b = rng.random(n) < 0.8, rng.random(n) < 0.8
        p_boot = st.paired_bootstrap(y, (~a).astype(np.int64), (~b).astype(np.int64), "accuracy",
                                     n_resamples=1000, seed=int(rng.integers(1 << 31)), num_classes=2)[3]
        rejections["bootstrap"] += p_boot < 0.05
        rejections["mcnemar"] += st.mcnemar(a, b)[1] < 0.05
        rejections["mid_p"] += st.mcnemar(a, b, mid_p=True)[1] < 0.05
    rate = {k: v / sets for k, v in rejections.items()}
    assert 0.03 <= rate["bootstrap"] <= 0.07 and 0.03 <= rate["mid_p"] <= 0.07, rate
    assert rate["mcnemar"] <= 0.06, rate  # exact: at most the nominal size


# ------------------------------------------------------------------ behaviour of the public functions


def test_paired_bootstrap_difference_and_edge_cases():
    y, s, s2, k = _case(3, n=1500, k=5)
    for metric in st.METRICS:
        diff, low, high, p = st.paired_bootstrap(y, s, s2, metric, n_resamples=500)
        assert diff == pytest.approx(_metric_by_rows(metric, y, s, k) - _metric_by_rows(metric, y, s2, k),
                                     abs=1e-12)
        assert low <= diff <= high and 0 < p <= 1
        assert st.paired_bootstrap(y, s, s, metric, n_resamples=200) == (0.0, 0.0, 0.0, 1.0)  # identical arms
    perfect = s + 10 * np.eye(k)[y]
    diff, low, high, p = st.paired_bootstrap(y, perfect, s, "accuracy", n_resamples=2000)
    assert diff > 0 and low > 0 and p == pytest.approx(2 / 2001)  # smallest p with 2,000 resamples
    for method in ("percentile", "bca"):
        assert st.bootstrap_ci(y, perfect, "accuracy", n_resamples=300, method=method) == (1.0, 1.0, 1.0)
        assert st.bootstrap_ci(y, perfect, "f1_macro", n_resamples=300, method=method) == (1.0, 1.0, 1.0)


def test_bootstrap_is_deterministic_for_a_seed_and_accepts_labels_or_scores():
    y, s, _, k = _case(2, n=800, k=10)
    for metric in ("f1_macro", "roc_auc_macro"):
        first = st.bootstrap_ci(y, s, metric, n_resamples=300, seed=5)
        assert first == st.bootstrap_ci(y, s, metric, n_resamples=300, seed=5)
        assert first != st.bootstrap_ci(y, s, metric, n_resamples=300, seed=6)
    assert st.bootstrap_ci(y, s, "recall_macro", n_resamples=300) == \
        st.bootstrap_ci(y, s.argmax(axis=1), "recall_macro", n_resamples=300, num_classes=k)
    est, low, high = st.bootstrap_ci(y, s, "roc_auc_micro", n_resamples=1, confidence=0.5)
    assert low == high


@pytest.mark.parametrize("size", [3, 50, 1000])
def test_cells_counted_by_the_metrics_core_equal_a_sort(size):
    """Cells counted with metrics.counts.bin_counts (dense code space) are np.unique's: same order, counts, rows."""
    code = np.random.default_rng(size).integers(0, size, 400) * 7  # some codes never occur
    for got, want in zip(_counts._occupied_cells(code, 7 * size), np.unique(code, return_inverse=True,
                                                                             return_counts=True)):
        assert np.array_equal(got, want.reshape(-1))
    y, s, _, k = _case(2)
    table = _counts.cell_table(y, [s.argmax(1)], k, "confusion")
    cm = m.confusion_matrix(y, s.argmax(1), k)
    assert np.array_equal(table.counts, cm[cm > 0])  # the cells are the confusion matrix's occupied entries


def test_stats_imports_only_numpy_scipy_and_metrics():
    code = ("import sys, dlstudy.stats; print(sorted({m.split('.')[1] for m in sys.modules "
            "if m.startswith('dlstudy.')}), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['metrics', 'stats'] False"


@pytest.mark.parametrize("call, match", [
    (lambda y, s: st.bootstrap_ci(y, s, "auc"), "metric must be one of accuracy, balanced_accuracy"),
    (lambda y, s: st.bootstrap_ci(y, s, "accuracy", confidence=1.0), "confidence must be"),
    (lambda y, s: st.bootstrap_ci(y, s, "accuracy", confidence=0), "confidence must be"),
    (lambda y, s: st.bootstrap_ci(y, s, "accuracy", confidence=float("nan")), "confidence must be"),
    (lambda y, s: st.bootstrap_ci(y, s, "accuracy", n_resamples=0), "n_resamples must be an integer >= 1"),
    (lambda y, s: st.bootstrap_ci(y, s, "accuracy", n_resamples=2.5), "n_resamples"),
    (lambda y, s: st.bootstrap_ci(y, s, "accuracy", method="basic"), "method must be one of"),
    (lambda y, s: st.bootstrap_ci(y, s, "accuracy", seed=-1), "seed must be"),
    (lambda y, s: st.bootstrap_ci(y[:-1], s, "accuracy"), "y_true has 19 samples but y_score has 20"),
    (lambda y, s: st.bootstrap_ci(y, s.argmax(1)[:-1], "accuracy"), "same length"),
    (lambda y, s: st.bootstrap_ci(y, s.argmax(1), "roc_auc_macro"), r"needs \(N, K\) scores in y_score"),
    (lambda y, s: st.bootstrap_ci(y, s, "accuracy", num_classes=5), "3 columns but num_classes=5"),
    (lambda y, s: st.bootstrap_ci(y, s, "roc_auc_micro", num_classes=4), "3 columns but num_classes=4"),
    (lambda y, s: st.paired_bootstrap(y, s, s[:, :2], "accuracy"), "different numbers of columns"),
    (lambda y, s: st.paired_bootstrap(y, s, s[:-1], "accuracy"), "y_true has 20 samples but y_score has 19"),
    (lambda y, s: st.bootstrap_ci(np.zeros(20, int), s, "roc_auc_macro"), "at least two classes"),
    (lambda y, s: st.mcnemar(y == 0, (y == 0)[:-1]), "correct_a and correct_b must have the same length"),
    (lambda y, s: st.mcnemar(y, y == 0), "correct_a must hold booleans"),
    (lambda y, s: st.mcnemar(y == 0, y == 1, exact=False, mid_p=True), "mid_p applies to the exact test"),
    (lambda y, s: st.proportion_ci(11, 10), "successes must be at most n"),
    (lambda y, s: st.proportion_ci(1, 0), "n must be an integer >= 1"),
    (lambda y, s: st.proportion_ci(1, 10, method="beta"), "method must be one of 'wilson', 'clopper-pearson'"),
    (lambda y, s: st.proportion_ci(1, 10, confidence=95), "confidence must be"),
    (lambda y, s: st.holm([0.1, float("nan")]), "pvalues must lie in"),
    (lambda y, s: st.seed_summary([]), "values must be a non-empty"),
    (lambda y, s: st.paired_t_test([0.1, 0.2], [0.1]), "values_a and values_b must have the same length"),
    (lambda y, s: st.minimum_detectable_difference(100, 1.5), "accuracy must lie in"),
    (lambda y, s: st.minimum_detectable_difference(100, 0.8, power=1.0), "power must be"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 20)
    s = rng.normal(size=(20, 3))
    with pytest.raises(ValueError, match=match):
        call(y, s)


def test_pvalue_definition_and_degenerate_cases():
    assert bs._pvalue(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(2 * (1 + 1) / 5)
    assert bs._pvalue(np.zeros(9)) == 1.0
    with pytest.warns(RuntimeWarning, match="BCa interval cannot be computed"):
        low, high = bs._interval(0.5, np.ones(100), 0.95, "bca", np.array([0.4, 0.6]), np.array([1, 1]))
    assert np.isnan(low) and np.isnan(high)
    y, s = np.array([0, 0, 1, 1, 0]), np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5], [0.2, 0.8]])
    with pytest.warns(RuntimeWarning, match="undefined on .* resamples"):  # a resample without class 1
        est, low, high = st.bootstrap_ci(y, s, "roc_auc_macro", n_resamples=200)
    assert low <= est <= high
