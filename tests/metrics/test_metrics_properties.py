"""Invariances of dlstudy.metrics (hypothesis): sample order, label renaming, monotone maps of scores."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dlstudy import metrics as m

SETTINGS = settings(max_examples=20, deadline=None)


@st.composite
def problems(draw):
    """(y_true, y_pred, integer-valued scores (many ties), K, a permutation of samples, a permutation of classes)."""
    k = draw(st.integers(2, 8))
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    y_pred = rng.integers(0, k, n)
    scores = rng.integers(-5, 6, size=(n, k)).astype(np.float64)
    return y_true, y_pred, scores, k, rng.permutation(n), rng.permutation(k)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _same(a, b):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=0, atol=1e-12, equal_nan=True)


@SETTINGS
@given(problems())
def test_sample_order_does_not_matter(problem):
    y, p, s, k, order, _ = problem
    yo, po, so = y[order], p[order], s[order]
    assert np.array_equal(m.confusion_matrix(y, p, k), m.confusion_matrix(yo, po, k))
    for average in (None, "macro", "micro", "weighted"):
        for a, b in zip(m.precision_recall_fscore(y, p, average=average, num_classes=k),
                        m.precision_recall_fscore(yo, po, average=average, num_classes=k)):
            if a is not None:
                _same(a, b)
    for average in (None, "macro", "micro"):
        _same(_quiet(m.roc_auc_score, y, s, average=average), _quiet(m.roc_auc_score, yo, so, average=average))
    _same(m.top_k_accuracy_score(y, s, k=2), m.top_k_accuracy_score(yo, so, k=2))


@SETTINGS
@given(problems())
def test_renaming_classes_permutes_per_class_results(problem):
    y, p, s, k, _, perm = problem
    # class c becomes perm[c]; score column c moves to column perm[c]
    yr, pr = perm[y], perm[p]
    sr = np.empty_like(s)
    sr[:, perm] = s
    cm, cmr = m.confusion_matrix(y, p, k), m.confusion_matrix(yr, pr, k)
    assert np.array_equal(cmr[np.ix_(perm, perm)], cm)
    prf, prfr = (m.precision_recall_fscore(a, b, num_classes=k) for a, b in ((y, p), (yr, pr)))
    for a, b in zip(prf, prfr):
        _same(b[perm], a)
    _same(m.precision_recall_fscore(yr, pr, average="macro", num_classes=k)[2],
          m.precision_recall_fscore(y, p, average="macro", num_classes=k)[2])
    auc, aucr = (_quiet(m.roc_auc_score, a, b, average=None) for a, b in ((y, s), (yr, sr)))
    _same(aucr[perm], auc)
    _same(_quiet(m.roc_auc_score, yr, sr, average="micro"), _quiet(m.roc_auc_score, y, s, average="micro"))


@SETTINGS
@given(problems(), st.sampled_from(["exp", "cube", "affine"]))
def test_positive_monotone_map_keeps_roc_auc(problem, kind):
    y, _, s, k, _, _ = problem
    # strictly increasing maps, exact on these small integer scores (no new ties, none removed)
    f = {"exp": np.exp, "cube": lambda x: x**3 + 7.0, "affine": lambda x: 2.5 * x + 100.0}[kind]
    for average in (None, "macro", "micro"):
        _same(_quiet(m.roc_auc_score, y, f(s), average=average), _quiet(m.roc_auc_score, y, s, average=average))
    binary = (y == 0).astype(int)
    _same(_quiet(m.roc_auc_score, binary, f(s[:, 0])), _quiet(m.roc_auc_score, binary, s[:, 0]))
    fpr, tpr, _ = _quiet(m.roc_curve, binary, s[:, 0])
    fpr2, tpr2, _ = _quiet(m.roc_curve, binary, f(s[:, 0]))
    assert np.array_equal(fpr, fpr2, equal_nan=True) and np.array_equal(tpr, tpr2, equal_nan=True)


@SETTINGS
@given(problems())
def test_auc_of_roc_curve_equals_roc_auc_score(problem):
    y, _, s, _, _, _ = problem
    binary = (y == 0).astype(int)
    if 0 < binary.sum() < binary.size:
        fpr, tpr, _ = m.roc_curve(binary, s[:, 0])
        _same(m.auc(fpr, tpr), m.roc_auc_score(binary, s[:, 0]))
