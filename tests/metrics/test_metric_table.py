"""The one metric table drives every list of metric keys, and its counts metrics agree with dlstudy.metrics."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from dlstudy import stats
from dlstudy.metrics import compute_metrics, table
from dlstudy.metrics.counts import class_counts, confusion_counts
from dlstudy.metrics.table import METRICS

SRC = Path(__file__).resolve().parents[2] / "src" / "dlstudy"

# The lists as they were hand-written before the table (order and membership pinned: reports print in this order)
EXPECTED = {
    "metric_keys": ("accuracy", "per_class_accuracy", "precision_macro", "recall_macro", "f1_macro",
                    "confusion_matrix", "roc_auc_macro", "roc_auc_micro", "roc_auc_per_class", "num_classes",
                    "class_names", "n_samples"),
    "headline_keys": ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc_macro", "roc_auc_micro",
                      "num_classes", "n_samples"),
    "interval_keys": ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
                      "roc_auc_macro", "roc_auc_micro"),
    "score_keys": ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc_macro",
                   "roc_auc_micro", "top5_accuracy"),
    "study_interval_metrics": (("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc."),
                               ("precision_macro", "macro precision"), ("recall_macro", "macro recall"),
                               ("f1_macro", "macro F1"), ("roc_auc_macro", "macro AUC")),
    "study_metrics": (("accuracy", "accuracy"), ("precision_macro", "macro P"), ("recall_macro", "macro R"),
                      ("f1_macro", "macro F1"), ("roc_auc_macro", "AUC")),
}


@pytest.mark.parametrize("view", sorted(EXPECTED))
def test_views_keep_the_old_lists_order_and_membership(view):
    assert getattr(table, view)() == EXPECTED[view]


def test_every_list_in_the_code_is_a_view_of_the_table():
    from dlstudy import runs
    from dlstudy.report import run_report
    from dlstudy.stats import bootstrap
    from dlstudy.studies.kinds import svm as svm_kind
    from dlstudy.studies.summary import significance

    assert runs.METRIC_KEYS == table.metric_keys()
    assert run_report.SCALAR_KEYS == table.headline_keys()
    assert run_report.INTERVAL_KEYS == table.interval_keys()
    assert significance.INTERVAL_METRICS == table.study_interval_metrics()
    assert svm_kind.METRICS == table.study_metrics()
    assert bootstrap.METRICS == stats.METRICS == table.bootstrap_metrics()
    assert list(stats.METRICS) == list(table.interval_keys())
    assert all(stats.METRICS[k] is METRICS[k] for k in stats.METRICS)


# the old hand-written lists, by name and by shape (a run of metric keys in a literal)
OLD_NAMES = re.compile(r"^\s*(METRIC_KEYS|SCALAR_KEYS|INTERVAL_KEYS|INTERVAL_METRICS|METRICS)\s*=\s*[\(\[{]", re.M)
# a literal run of metric keys: bare ("precision_macro", "recall_macro") or (key, title) pairs
KEY_RUN = re.compile(r'"precision_macro",\s*"recall_macro"|\("precision_macro",\s*"[^"]*"\),\s*\("recall_macro"')
# per-kind study tables whose titles are the reference report's column names (owned by the study kinds)
OWN_TITLES = {"studies/kinds/generic.py", "studies/kinds/losses.py"}


def test_no_second_hand_written_metric_list_remains():
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "metrics/table.py":
            continue
        text = path.read_text()
        if OLD_NAMES.search(text):
            offenders.append(f"{rel}: {OLD_NAMES.search(text).group(0).strip()}")
        found = KEY_RUN.search(text)
        if found and rel not in OWN_TITLES:
            offenders.append(f"{rel}: {found.group(0)!r}")
    assert not offenders, "metric lists outside dlstudy.metrics.table: " + "; ".join(offenders)


def test_compute_metrics_keys_are_all_in_the_table():
    rng = np.random.default_rng(0)
    for k in (3, 7):  # top5_accuracy only for K > 5
        y = rng.integers(0, k, 300)
        out = compute_metrics(y, rng.random((300, k)))
        assert set(out) <= set(METRICS), set(out) - set(METRICS)
        assert set(table.metric_keys()) <= set(out)
    assert set(out) == set(METRICS)


def test_rows_are_consistent():
    for key, m in METRICS.items():
        assert m.key == key and m.label and m.title
        if m.source == "meta":
            assert m.higher_is_better is None and m.interval is None and not m.bootstrappable
        elif m.shape == "scalar":
            assert m.higher_is_better is True
        if m.interval:
            assert m.bootstrappable and m.shape == "scalar" and m.higher_is_better
    assert table.label("f1_macro") == "macro F1" and table.label("loss") == "loss"
    assert table.is_metadata("n_samples") and not table.is_metadata("accuracy")


@pytest.mark.parametrize("k", [2, 5, 12])
def test_counts_metrics_equal_dlstudy_metrics(k):
    """The table's from_counts functions (the bootstrap's statistic) give compute_metrics' values."""
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 500)
    scores = rng.random((500, k)) + 0.8 * np.eye(k)[y]
    expected = compute_metrics(y, scores)
    cm = confusion_counts(y, scores.argmax(axis=1), k)
    for key, m in METRICS.items():
        if m.from_counts is not None:
            value = m.from_counts(*(c[None, :] for c in class_counts(cm)))[0]
            assert value == pytest.approx(expected[key], abs=1e-12), key


def test_intervals_follow_the_table():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200)
    scores = rng.random((200, 4)) + 0.3 * np.eye(4)[y]
    acc = stats.metric_interval(y, scores, "accuracy")
    assert acc.method == "Wilson" and acc.low < acc.estimate < acc.high
    assert acc.estimate == np.mean(scores.argmax(axis=1) == y)
    assert stats.metric_interval(y, scores, "accuracy", method="clopper-pearson").method == "Clopper-Pearson"
    f1 = stats.metric_interval(y, scores, "f1_macro", resamples=300, seed=4)
    assert f1.method == "bootstrap"
    assert (f1.estimate, f1.low, f1.high) == stats.bootstrap_ci(y, scores, "f1_macro", 300, seed=4, num_classes=4)
    with pytest.raises(ValueError, match="no interval for metric 'n_samples'"):
        stats.metric_interval(y, scores, "n_samples")
    with pytest.raises(ValueError, match="method for accuracy"):
        stats.metric_interval(y, scores, "accuracy", method="bca")
