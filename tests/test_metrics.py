"""dlstudy.metrics against scikit-learn as the oracle: many random inputs, to 1e-12 (ROC curves bit-exact)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dlstudy import metrics as m
from dlstudy.metrics import ranking
from dlstudy.metrics.classification import _cuda_confusion_matrix

TOL = 1e-12


def _case(seed: int):
    """Random (y_true, y_pred, y_score, K) with the awkward features the issue lists, chosen by the seed."""
    rng = np.random.default_rng(seed)
    k = int(rng.choice([2, 3, 5, 10, 37, 200]))
    n = int(rng.choice([1, 2, 7, 60, 500, 3000]))
    present = k if seed % 4 else max(1, k // 2)  # every 4th case: classes absent from y_true
    y_true = rng.integers(0, present, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, k, n))
    if seed % 5 == 0:
        y_pred = np.zeros(n, dtype=int)  # a single predicted class: most classes never predicted
    scores = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[y_true]
    if seed % 3 == 0:
        scores = np.round(scores, 1)  # many ties
    dtype = np.float32 if seed % 2 else np.float64
    return y_true, y_pred, scores.astype(dtype), k


SEEDS = range(24)


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=0, atol=TOL,
                               equal_nan=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matrix_and_accuracies(seed):
    y, p, _, k = _case(seed)
    labels = np.arange(k)
    assert np.array_equal(m.confusion_matrix(y, p, k), skm.confusion_matrix(y, p, labels=labels))
    for norm in ("true", "pred", "all"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = skm.confusion_matrix(y, p, labels=labels, normalize=norm)
        _close(m.confusion_matrix(y, p, k, normalize=norm), expected)
    assert m.accuracy_score(y, p) == pytest.approx(skm.accuracy_score(y, p), abs=TOL)
    _close(m.per_class_accuracy(y, p, k), skm.recall_score(y, p, labels=labels, average=None, zero_division=np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _close(m.balanced_accuracy_score(y, p, k), skm.balanced_accuracy_score(y, p))


@pytest.mark.parametrize("seed", SEEDS)
def test_precision_recall_fscore(seed):
    y, p, _, k = _case(seed)
    # every zero_division and average at beta=1; the other betas with two zero_division values
    combos = [(1.0, a, z) for a in (None, "micro", "macro", "weighted") for z in (0.0, 1.0, np.nan, "warn")]
    combos += [(b, a, z) for b in (0.5, 2.0, 0.0, np.inf) for a in (None, "macro") for z in (0.0, np.nan)]
    for beta, average, zd in combos:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = m.precision_recall_fscore(y, p, beta=beta, average=average, zero_division=zd, num_classes=k)
            ref = skm.precision_recall_fscore_support(y, p, beta=beta, average=average, zero_division=zd,
                                                      labels=np.arange(k))
        for a, b in zip(ours, ref):
            if b is None:
                assert a is None
            else:
                _close(a, b)


def test_zero_division_warn_warns_like_sklearn():
    y, p = [0, 0, 1], [0, 0, 0]  # class 1 never predicted: its precision is 0/0
    with pytest.warns(m.UndefinedMetricWarning, match="Precision"):
        prec, *_ = m.precision_recall_fscore(y, p, zero_division="warn")
    assert prec.tolist() == [2 / 3, 0.0]
    assert m.precision_recall_fscore(y, p, zero_division=1.0)[0].tolist() == [2 / 3, 1.0]
    assert np.isnan(m.precision_recall_fscore(y, p, zero_division=np.nan)[0][1])
    # NaN classes are left out of the macro average, as in sklearn
    assert m.precision_recall_fscore(y, p, average="macro", zero_division=np.nan)[0] == pytest.approx(2 / 3)


def _top_k_naive(y, s, top):
    """sklearn's definition spelled out: stable ascending argsort reversed, true label among the first k."""
    order = np.argsort(s, axis=1, kind="mergesort")[:, ::-1][:, :top]
    return float(np.mean([y[i] in order[i] for i in range(len(y))]))


@pytest.mark.parametrize("seed", SEEDS)
def test_top_k_accuracy(seed):
    y, _, s, k = _case(seed)
    for top in (1, 2, 5):
        if k >= 3 and len(np.unique(y)) >= 3:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = skm.top_k_accuracy_score(y, s, k=top, labels=np.arange(k))
        else:  # sklearn treats these as binary problems; use its definition directly
            ref = _top_k_naive(y, s, top)
        assert m.top_k_accuracy_score(y, s, k=top) == pytest.approx(ref, abs=TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_curve_bit_exact(seed):
    y, _, s, k = _case(seed)
    for c in range(min(k, 4)):
        target = (y == c).astype(int)
        for drop in (True, False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ours, ref = m.roc_curve(target, s[:, c], drop_intermediate=drop), \
                    skm.roc_curve(target, s[:, c], drop_intermediate=drop)
            for a, b in zip(ours, ref):
                assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_auc_per_class_macro_micro(seed):
    y, _, s, k = _case(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_class = m.roc_auc_score(y, s, average=None)
    classes_checked = range(k) if k <= 20 else sorted({*range(10), *range(k - 5, k), *np.unique(y)[:5].tolist()})
    expected = np.full(k, np.nan)
    for c in classes_checked:  # sklearn's binary AUC per class (a sample of them when K is large)
        target = y == c
        if target.all() or not target.any():
            assert np.isnan(per_class[c])
        else:
            expected[c] = skm.roc_auc_score(target, s[:, c])
            if c < 3:
                assert m.roc_auc_score(target.astype(int), s[:, c]) == pytest.approx(expected[c], abs=TOL)
    _close(per_class[list(classes_checked)], expected[list(classes_checked)])
    # macro = mean over the defined classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macro = m.roc_auc_score(y, s)
    _close(macro, np.nanmean(per_class) if not np.all(np.isnan(per_class)) else np.nan)
    # micro = sklearn's binary AUC of the one-hot (N*K) problem
    onehot = np.eye(k)[y].ravel()
    if 0 < onehot.sum() < onehot.size:
        _close(m.roc_auc_score(y, s, average="micro"), skm.roc_auc_score(onehot, s.ravel()))


@pytest.mark.parametrize("seed", [1, 2, 3, 6, 7])
def test_roc_auc_matches_sklearn_multiclass_call(seed):
    """With every class present and probabilities, sklearn's own multiclass OvR call is the oracle."""
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(3, 30)), 2000
    y = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    logits = rng.normal(size=(n, k)) + np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for average in ("macro", "micro", "weighted"):
        ref = skm.roc_auc_score(y, probs, multi_class="ovr", average=average)
        assert m.roc_auc_score(y, probs, average=average) == pytest.approx(ref, abs=TOL)


def test_large_inputs_k200_and_n1e5():
    rng = np.random.default_rng(0)
    n, k = 20_000, 200
    y = rng.integers(0, k, n)
    s = rng.dirichlet(np.full(k, 0.3), size=n).astype(np.float32)
    ours = m.roc_auc_score(y, s, average=None)
    for c in range(0, k, 7):
        assert ours[c] == pytest.approx(skm.roc_auc_score(y == c, s[:, c]), abs=TOL)
    n, k = 50_000, 10
    y = rng.integers(0, k, n)
    s = rng.dirichlet(np.ones(k), size=n)
    assert m.roc_auc_score(y, s) == pytest.approx(skm.roc_auc_score(y, s, multi_class="ovr"), abs=TOL)
    p = s.argmax(1)
    assert np.array_equal(m.confusion_matrix(y, p, k), skm.confusion_matrix(y, p))


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_auc_trapezoid(seed):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.random(50))
    y = rng.random(50)
    assert m.auc(x, y) == pytest.approx(skm.auc(x, y), abs=TOL)
    assert m.auc(x[::-1], y[::-1]) == pytest.approx(skm.auc(x[::-1], y[::-1]), abs=TOL)
    with pytest.raises(ValueError, match="neither increasing nor decreasing"):
        m.auc(rng.permutation(x), y)
    with pytest.raises(ValueError, match="At least 2 points"):
        m.auc([0.0], [1.0])


@pytest.mark.parametrize("seed", [0, 3, 7, 11])
def test_classification_report_text_and_dict(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 15))
    # every class occurs (else sklearn prints the support of absent labels as floats, "0.0")
    y = np.concatenate([np.arange(k), rng.integers(0, k, 200)])
    p = np.where(rng.random(y.size) < 0.5, y, rng.integers(0, max(1, k - 1), y.size))
    names = [f"class-{c}" for c in range(k)]
    for digits in (2, 4):
        ref = skm.classification_report(y, p, labels=np.arange(k), target_names=names, digits=digits,
                                        zero_division=0.0)
        assert m.classification_report(y, p, num_classes=k, class_names=names, digits=digits) == ref
    y, p, _, k = _case(seed)  # awkward cases: compare the dict
    names = [f"class-{c}" for c in range(k)]
    ref = skm.classification_report(y, p, labels=np.arange(k), target_names=names, output_dict=True,
                                    zero_division=0.0)
    ours = m.classification_report(y, p, num_classes=k, class_names=names, output_dict=True)
    assert ours.keys() == ref.keys()
    for key, value in ref.items():
        if isinstance(value, dict):
            _close(list(ours[key].values()), list(value.values()))
        else:
            _close(ours[key], value)


# ------------------------------------------------------------------------------------------------ NaN cases


def test_auc_undefined_class_is_nan_with_warning_naming_it():
    y = np.array([0, 1, 0, 1, 0, 1])  # class 2 absent: no positives
    s = np.random.default_rng(0).random((6, 3))
    with pytest.warns(m.UndefinedMetricWarning, match=r"class 2 \('bird'\): no positives"):
        per_class = m.roc_auc_score(y, s, average=None, class_names=["cat", "dog", "bird"])
    assert np.isnan(per_class[2]) and not np.isnan(per_class[:2]).any()
    with pytest.warns(m.UndefinedMetricWarning, match="class 2"):
        assert m.roc_auc_score(y, s) == pytest.approx(np.mean(per_class[:2]), abs=TOL)
    # a single class: every class undefined (class 0 has no negatives) -> NaN macro
    with pytest.warns(m.UndefinedMetricWarning, match="no negatives"):
        assert np.isnan(m.roc_auc_score(np.zeros(4, dtype=int), s[:4]))


def test_binary_auc_single_class_is_nan_with_warning():
    with pytest.warns(m.UndefinedMetricWarning, match="only negatives"):
        assert np.isnan(m.roc_auc_score([0, 0, 0], [0.1, 0.2, 0.3]))
    with pytest.warns(m.UndefinedMetricWarning, match="No negative samples"):
        fpr, tpr, _ = m.roc_curve([1, 1], [0.1, 0.2])
    assert np.isnan(fpr).all() and tpr[-1] == 1.0


# ------------------------------------------------------------------------------------------------ inputs


def test_string_labels_through_classes():
    classes = ["cat", "dog", "bird"]
    y = ["cat", "bird", "dog", "dog", "cat"]
    p = ["cat", "dog", "dog", "bird", "cat"]
    codes = {c: i for i, c in enumerate(classes)}
    yi, pi = [codes[v] for v in y], [codes[v] for v in p]
    assert np.array_equal(m.confusion_matrix(y, p, classes=classes), m.confusion_matrix(yi, pi, 3))
    assert m.precision_recall_fscore(y, p, classes=classes, average="macro") == \
        m.precision_recall_fscore(yi, pi, num_classes=3, average="macro")
    s = np.random.default_rng(0).random((5, 3))
    assert m.roc_auc_score(y, s, classes=classes) == m.roc_auc_score(yi, s)
    assert "bird" in m.classification_report(y, p, classes=classes)
    with pytest.raises(ValueError, match="'fish', which is not in classes"):
        m.confusion_matrix(["fish"], ["cat"], classes=classes)


def test_torch_inputs_equal_numpy():
    y, p, s, k = _case(7)
    yt, pt, st = torch.from_numpy(y), torch.from_numpy(p), torch.from_numpy(s)
    assert np.array_equal(m.confusion_matrix(yt, pt, k), m.confusion_matrix(y, p, k))
    assert np.array_equal(_cuda_confusion_matrix(yt, pt, k), m.confusion_matrix(y, p, k))  # device-agnostic code
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes absent from y_true
        assert m.roc_auc_score(yt, st) == m.roc_auc_score(y, s)
        # the GPU route (torch sort + searchsorted), run here on CPU tensors
        _close(ranking._ovr_auc_torch(yt, st)[0], m.roc_auc_score(y, s, average=None))
    _close(ranking.micro_auc(yt, st), m.roc_auc_score(y, s, average="micro"))


def test_block_boundaries_do_not_change_results(monkeypatch):
    y, _, s, _ = _case(13)
    full_micro = m.roc_auc_score(y, s, average="micro")
    monkeypatch.setattr(ranking, "_BLOCK_ELEMS", 7)  # micro-average pool sorted in many small blocks
    assert m.roc_auc_score(y, s, average="micro") == pytest.approx(full_micro, abs=TOL)


@pytest.mark.parametrize("call, match", [
    (lambda: m.roc_auc_score([0, 1], [0.1, np.nan]), "NaN or inf"),
    (lambda: m.roc_auc_score([0, 1, 2], np.array([[0.1, 0.2, np.inf]] * 3)), "NaN or inf"),
    (lambda: m.roc_curve([0, 1, 1], [0.1, 0.2]), "3 samples but y_score has 2"),
    (lambda: m.roc_auc_score([0, 1, 2], np.ones((4, 3))), "3 samples but y_score has 4 rows"),
    (lambda: m.confusion_matrix([0, 1], [0, 1, 1]), "same length"),
    (lambda: m.confusion_matrix([0, 5], [0, 1], num_classes=3), "label 5, outside 0..2"),
    (lambda: m.confusion_matrix([0, -1], [0, 1]), "label -1"),
    (lambda: m.roc_auc_score([0, 3], np.ones((2, 3))), "label 3, outside 0..2"),
    (lambda: m.confusion_matrix([], []), "y_true is empty"),
    (lambda: m.roc_auc_score([], np.ones((0, 3))), "empty"),
    (lambda: m.accuracy_score(np.zeros((2, 2), dtype=int), [0, 1]), "1-D"),
    (lambda: m.accuracy_score([0.5, 1.0], [0, 1]), "integer class labels"),
    (lambda: m.accuracy_score(["a", "b"], ["a", "b"]), "pass classes"),
    (lambda: m.roc_auc_score([0, 1], np.ones((2, 2, 2))), r"y_score must have shape \(N, K\), got \(2, 2, 2\)"),
    (lambda: m.roc_auc_score([0, 1], np.ones((2, 3)), num_classes=4), "3 columns"),
    (lambda: m.roc_auc_score([0, 1], [0.1, 0.2], average="samples"), "average must be"),
    (lambda: m.precision_recall_fscore([0, 1], [0, 1], average="binary"), "average must be"),
    (lambda: m.precision_recall_fscore([0, 1], [0, 1], zero_division=0.5), "zero_division"),
    (lambda: m.precision_recall_fscore([0, 1], [0, 1], beta=-1), "beta must be >= 0"),
    (lambda: m.confusion_matrix([0, 1], [0, 1], normalize="rows"), "normalize must be"),
    (lambda: m.top_k_accuracy_score([0, 1], np.ones((2, 3)), k=0), "k must be a positive integer"),
    (lambda: m.roc_curve([0, 1, 2], [0.1, 0.2, 0.3]), "must be binary"),
    (lambda: m.confusion_matrix([0, 1], [0, 1], num_classes=3, classes=["a", "b"]), "classes has 2"),
])
def test_bad_input_raises_a_precise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
