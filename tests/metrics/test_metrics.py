"""dlstudy.metrics against scikit-learn as the oracle: many random inputs, to 1e-12 (ROC curves bit-exact)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dlstudy import metrics as m
from dlstudy.metrics import _ranks, counts, ranking
from dlstudy.metrics.counts import _cuda_confusion_matrix

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


# ------------------------------------------------------------------------------------------------ fast paths


LABEL_DTYPES = [np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint32, np.uint64]


@pytest.mark.parametrize("dtype", LABEL_DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 5, 10])
def test_label_dtypes_give_sklearns_exact_counts(seed, dtype):
    """Labels are counted in their own dtype (int32 and narrower combine in int32): same integers as sklearn."""
    y, p, _, k = _case(seed)
    k = min(k, 100)  # int8 holds 0..127
    y, p = y % k, p % k
    yd, pd = y.astype(dtype), p.astype(dtype)
    assert np.array_equal(m.confusion_matrix(yd, pd, k), skm.confusion_matrix(y, p, labels=np.arange(k)))
    inferred = np.arange(max(y.max(), p.max()) + 1)  # without num_classes, K = max label + 1
    assert np.array_equal(m.confusion_matrix(yd, pd), skm.confusion_matrix(y, p, labels=inferred))
    assert m.accuracy_score(yd, pd) == skm.accuracy_score(y, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = m.precision_recall_fscore(yd, pd, average="macro", num_classes=k)
        ref = skm.precision_recall_fscore_support(y, p, average="macro", labels=np.arange(k), zero_division=0.0)
    assert ours[:3] == ref[:3]


@pytest.mark.parametrize("chunk", [7, 64, 1 << 16])
def test_confusion_matrix_chunks_do_not_change_counts(chunk, monkeypatch):
    """Pairs are counted in chunks (a partial last one) while K*K fits a chunk, in one bincount past that; without
    num_classes K grows chunk by chunk (sorted labels: each chunk brings a larger one)."""
    monkeypatch.setattr(counts, "_PAIR_CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    for k in (2, 5, 37):
        y, p = rng.integers(0, k, 3001), rng.integers(0, k, 3001)
        ys = np.sort(y)
        for dtype in (np.int64, np.int32, np.uint8, np.int8):
            ours = m.confusion_matrix(y.astype(dtype), p.astype(dtype), k)
            assert np.array_equal(ours, skm.confusion_matrix(y, p, labels=np.arange(k)))
            ours = m.confusion_matrix(ys.astype(dtype), np.sort(p).astype(dtype))
            assert np.array_equal(ours, skm.confusion_matrix(ys, np.sort(p), labels=np.arange(k)))


def test_bool_labels_and_label_range_errors_per_dtype():
    y = np.array([True, False, True])
    assert np.array_equal(m.confusion_matrix(y, ~y), skm.confusion_matrix(y, ~y))
    for dtype in (np.int8, np.int32, np.int64):
        with pytest.raises(ValueError, match="label -3, outside"):
            m.confusion_matrix(np.array([0, -3, 1], dtype=dtype), np.array([0, 1, 1], dtype=dtype))
        with pytest.raises(ValueError, match="label 3, outside 0..2"):
            m.confusion_matrix(np.array([0, 3, 1], dtype=dtype), np.array([0, 1, 1], dtype=dtype), 3)
    with pytest.raises(ValueError, match="label 7, outside 0..2"):
        m.roc_auc_score(np.array([0, 7, 1], dtype=np.uint32), np.ones((3, 3)))


@pytest.mark.parametrize("seed", [0, 3])
def test_confusion_counts_with_a_resample_axis(seed):
    """(B, N) resample counts give (B, K, K): each the confusion matrix of its resample (sklearn's sample_weight)."""
    y, p, _, k = _case(seed)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(y.size, np.full(y.size, 1 / y.size), size=4)  # (4, N) bootstrap resamples
    cms = counts.confusion_counts(y, p, k, weights=weights)
    assert cms.shape == (4, k, k) and cms.dtype == np.int64
    for b in range(4):
        rows = np.repeat(np.arange(y.size), weights[b])
        assert np.array_equal(cms[b], skm.confusion_matrix(y[rows], p[rows], labels=np.arange(k)))
        assert np.array_equal(cms[b], skm.confusion_matrix(y, p, labels=np.arange(k), sample_weight=weights[b]))
    assert np.array_equal(counts.confusion_counts(y, p, k, weights=np.ones((1, y.size), int))[0],
                          counts.confusion_counts(y, p, k))
    tp, n_true, n_pred = counts.class_counts(cms)  # (B, K) each
    assert np.array_equal(tp[0], np.diag(cms[0])) and np.array_equal(n_true.sum(axis=1), weights.sum(axis=1))
    assert np.array_equal(n_pred, cms.sum(axis=1))
    with pytest.raises(ValueError, match="weights must be"):
        counts.confusion_counts(y, p, k, weights=np.ones(y.size))
    with pytest.raises(ValueError, match="weights must be"):
        counts.confusion_counts(y, p, k, weights=np.full((2, y.size), 0.5))


@pytest.mark.parametrize("label_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("score_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ovr_auc_fast_path_equals_sklearn(seed, label_dtype, score_dtype):
    """int64/int32 labels with float64/float32 probabilities (the benchmark's inputs), scores with ties and exact
    zeros, every class present: sklearn's multiclass call is the oracle (to 1e-12: ours divides exact integer rank
    sums once, sklearn sums trapezoids, so the two may differ in the last bit)."""
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(3, 12)), 5000
    y = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    logits = 3 * rng.normal(size=(n, k)) + 2 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if seed % 2:
        probs = np.round(probs, 2)  # many ties and exact zeros
    s = probs.astype(score_dtype)
    yl = y.astype(label_dtype)
    per_class = [skm.roc_auc_score(y == c, s[:, c]) for c in range(k)]
    _close(m.roc_auc_score(yl, s, average=None), per_class)
    # rounded rows no longer sum to 1, which sklearn's multiclass call refuses: its macro is the per-class mean
    ref = np.mean(per_class) if seed % 2 else skm.roc_auc_score(y, s, multi_class="ovr")
    _close(m.roc_auc_score(yl, s), ref)


@pytest.mark.parametrize("scores", ["negative zero", "mixed signs", "all negative", "F-ordered"])
def test_ovr_auc_score_layouts_and_signs_equal_sklearn(scores, monkeypatch):
    """The integer-bit search (non-negative scores), the float search (any sign, -0.0) and the column blocks
    (several per matrix here, Fortran order) all give sklearn's values; the caller's array is left untouched."""
    rng = np.random.default_rng(4)
    k, n = 7, 3000
    y = rng.integers(0, k, n)
    s = np.round(rng.random((n, k)), 1)
    if scores == "negative zero":
        s[rng.random((n, k)) < 0.3] = -0.0  # equal to +0.0, but its bits are the largest unsigned value
    elif scores == "mixed signs":
        s -= 0.5
    elif scores == "all negative":
        s = -s - 1.0
    else:
        s = np.asfortranarray(s)
    before = s.copy()
    monkeypatch.setattr(ranking, "_BLOCK_BYTES", 3 * n * s.itemsize)  # blocks of 3 columns: 3 + 3 + 1
    per_class = m.roc_auc_score(y, s, average=None)
    assert np.array_equal(s, before) and np.array_equal(np.signbit(s), np.signbit(before))
    _close(per_class, [skm.roc_auc_score(y == c, s[:, c]) for c in range(k)])
    _close(m.roc_auc_score(y == 2, s[:, 2]), skm.roc_auc_score(y == 2, s[:, 2]))


@pytest.mark.parametrize("seed", range(6))
def test_rank_sums_equal_a_naive_pair_count(seed):
    """S = sum over positives of (#pool < v) + (#pool <= v), against an O(N P) count: ties, a unique or a repeated
    maximum, float and integer-bit searches."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    pool = rng.integers(0, 6, n).astype(np.float64 if seed % 2 else np.float32)
    if seed % 3 == 0:
        pool -= 3.0  # negative values: float search
    if seed == 4:
        pool[0] = 100.0  # the maximum is unique and a positive
    members = np.sort(pool[rng.random(n) < 0.5])
    others = np.sort(rng.integers(-4, 8, 5).astype(pool.dtype))
    pool = np.sort(pool)
    for pos, rank_sum in ((members, _ranks.rank_sum_members), (members, _ranks.rank_sum_sorted),
                          (others, _ranks.rank_sum_sorted)):
        if seed == 4 and pos is members:
            pos = np.append(pos, 100.0).astype(pool.dtype)
        naive = int(sum((pool < v).sum() + (pool <= v).sum() for v in pos))
        assert rank_sum(pool, pos) == naive


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("column", [0, 2])
def test_ovr_auc_finds_non_finite_scores_on_the_sorted_columns(bad, column):
    """The OvR path checks finiteness on each sorted column's ends, including a column whose class is absent."""
    y = np.array([0, 1, 0, 1, 0, 1])  # class 2 has no positives: its column is not ranked
    s = np.random.default_rng(0).random((6, 3))
    s[3, column] = bad
    for average in ("macro", None, "micro", "weighted"):
        with pytest.raises(ValueError, match="NaN or inf"):
            m.roc_auc_score(y, s, average=average)


def test_scores_whose_sum_overflows_are_finite():
    y = np.array([0, 1, 2, 0, 1, 2])
    s = np.finfo(np.float64).max * np.random.default_rng(0).random((6, 3))  # sum overflows to inf
    _close(m.roc_auc_score(y, s, average="micro"), skm.roc_auc_score(np.eye(3)[y].ravel(), s.ravel()))
    _close(m.roc_auc_score(y, s, average=None), [skm.roc_auc_score(y == c, s[:, c]) for c in range(3)])
    s32 = np.full((4, 2), np.finfo(np.float32).max, dtype=np.float32)
    assert m.top_k_accuracy_score([0, 1, 0, 1], s32, k=1) == 0.5


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_ovr_auc_threaded_columns_equal_sklearn(workers, monkeypatch):
    """Columns sorted on 1, 2 or 3 threads (in blocks of 3 columns, one class absent) give sklearn's per-class
    values, the same bits whatever the thread count; a NaN found by a worker thread raises ValueError."""
    rng = np.random.default_rng(7)
    k, n = 8, 40_000
    y = rng.integers(0, k - 1, n)  # class k - 1 absent: its column is only checked for finiteness
    s = np.round(rng.random((n, k)), 3)
    monkeypatch.setattr(ranking, "_BLOCK_BYTES", 3 * n * s.itemsize)
    monkeypatch.setattr(ranking, "_worker_count", lambda n_rows, n_cols: workers)
    with pytest.warns(m.UndefinedMetricWarning, match="class 7"):
        per_class = m.roc_auc_score(y, s, average=None)
    _close(per_class[:-1], [skm.roc_auc_score(y == c, s[:, c]) for c in range(k - 1)])
    monkeypatch.setattr(ranking, "_worker_count", lambda n_rows, n_cols: 1)
    with pytest.warns(m.UndefinedMetricWarning):
        assert np.array_equal(m.roc_auc_score(y, s, average=None), per_class, equal_nan=True)
    monkeypatch.setattr(ranking, "_worker_count", lambda n_rows, n_cols: workers)
    s[123, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        m.roc_auc_score(y, s)


def test_ovr_auc_thread_count_follows_cores_and_omp_num_threads(monkeypatch):
    monkeypatch.setattr(ranking.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert ranking._worker_count(10**6, 10) == 4
    assert ranking._worker_count(10**6, 3) == 3  # no more threads than columns
    assert ranking._worker_count(1000, 10) == 1  # short columns: no hand-off
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert ranking._worker_count(10**6, 10) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert ranking._worker_count(10**6, 10) == 2
