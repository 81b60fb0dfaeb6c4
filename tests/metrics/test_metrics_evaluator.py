"""Evaluator (streaming == one-shot, metrics.json contract) and the plot helpers."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from dlstudy import figures  # noqa: E402
from dlstudy import metrics as m  # noqa: E402
from dlstudy.runs import METRIC_KEYS
from dlstudy.io import atomic_write_json


def _logits(n=500, k=7, seed=0, absent=()):
    rng = np.random.default_rng(seed)
    present = [c for c in range(k) if c not in absent]
    y = rng.choice(present, n)
    logits = rng.normal(size=(n, k)).astype(np.float32) + 1.5 * np.eye(k, dtype=np.float32)[y]
    return logits, y


def _stream(logits, y, k, sizes=(1, 13, 64, 200), **kw):
    ev = m.Evaluator(k, **kw)
    i, j = 0, 0
    while i < len(y):
        b = sizes[j % len(sizes)]
        ev.update(logits[i:i + b], y[i:i + b])
        i, j = i + b, j + 1
    return ev


def test_streaming_equals_one_shot_and_the_functions():
    logits, y = _logits()
    k = logits.shape[1]
    ev = _stream(logits, y, k)
    out = ev.compute()
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    one_shot = m.Evaluator(k)
    one_shot.update(logits, y)
    assert out == one_shot.compute()
    assert set(METRIC_KEYS) <= set(out)
    assert np.array_equal(ev.y_true_, y) and ev.y_score_.dtype == np.float32
    np.testing.assert_allclose(ev.y_score_, probs, atol=1e-6)
    pred = ev.y_score_.argmax(1)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert out["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(k)).tolist()
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="macro", labels=range(k), zero_division=0)
    assert (out["precision_macro"], out["recall_macro"], out["f1_macro"]) == pytest.approx((p, r, f), abs=1e-12)
    assert out["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y, ev.y_score_, multi_class="ovr"), abs=1e-12)
    assert out["roc_auc_micro"] == pytest.approx(
        skm.roc_auc_score(y, ev.y_score_, multi_class="ovr", average="micro"), abs=1e-12)
    assert out["per_class_accuracy"] == pytest.approx(skm.recall_score(y, pred, average=None).tolist(), abs=1e-12)
    assert out["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert out["top5_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, ev.y_score_, k=5), abs=1e-12)
    assert out["n_samples"] == len(y) and out["num_classes"] == k
    assert out["class_names"] == [str(c) for c in range(k)]


def test_single_batch_absent_class_gives_json_null_auc(tmp_path):
    logits, y = _logits(n=40, k=4, absent=(2,))
    ev = m.Evaluator(4, class_names=["cat", "dog", "bird", "fish"])
    ev.update(torch.from_numpy(logits), torch.from_numpy(y))
    with pytest.warns(m.UndefinedMetricWarning, match=r"class 2 \('bird'\)"):
        out = ev.compute()
    assert np.isnan(out["roc_auc_per_class"][2]) and np.isnan(out["per_class_accuracy"][2])
    assert out["roc_auc_macro"] == pytest.approx(np.nanmean(out["roc_auc_per_class"]))
    saved = json.loads(atomic_write_json(tmp_path / "metrics.json", out).read_text())
    assert saved["roc_auc_per_class"][2] is None and saved["class_names"][2] == "bird"


def test_probabilities_are_kept_and_logits_softmaxed():
    logits, y = _logits(n=50, k=3)
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    a, b = m.Evaluator(3), m.Evaluator(3, scores="probs")
    a.update(probs, y)
    b.update(probs, y)
    np.testing.assert_array_equal(a.y_score_, probs)
    assert a.compute() == b.compute()
    c = m.Evaluator(3, scores="logits")
    c.update(logits, y)
    np.testing.assert_allclose(c.y_score_, probs, atol=1e-6)
    with pytest.raises(ValueError, match="not probabilities"):
        a.update(logits, y)


@pytest.mark.parametrize("call, match", [
    (lambda ev: ev.update(np.zeros((2, 4)), [0, 1]), r"y_score must be \(B, 3\)"),
    (lambda ev: ev.update(np.zeros((2, 3)), [0]), r"y_true must be \(B,\) with B=2"),
    (lambda ev: ev.update(np.zeros((2, 3)), [0, 3]), r"labels in 0..2"),
    (lambda ev: ev.update(np.full((2, 3), np.nan), [0, 1]), "NaN or inf"),
    (lambda ev: ev.compute(), "before any update"),
])
def test_evaluator_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(m.Evaluator(3))


def test_evaluator_constructor_checks():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        m.Evaluator(1)
    with pytest.raises(ValueError, match="class_names has 2 entries"):
        m.Evaluator(3, class_names=["a", "b"])


# ------------------------------------------------------------------------------------------------ plots


def test_confusion_matrix_plot_10_classes_is_annotated():
    import matplotlib.pyplot as plt

    logits, y = _logits(n=300, k=10)
    cm = m.confusion_matrix(y, logits.argmax(1), 10)
    names = [f"c{i}" for i in range(10)]
    ax = figures.plot_confusion_matrix(cm, names)
    assert len(ax.images) == 1 and len(ax.texts) == 100
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert {t.get_text() for t in ax.texts} == {str(v) for v in cm.ravel()}
    _, given = plt.subplots()
    ax2 = figures.plot_confusion_matrix(cm, names, normalize="true", ax=given)
    assert ax2 is given and all("." in t.get_text() for t in ax2.texts)
    plt.close("all")


def test_confusion_matrix_plot_200_classes_is_summarised():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    cm = rng.integers(0, 5, (200, 200))
    ax = figures.plot_confusion_matrix(cm, [f"class-{i}" for i in range(200)])
    assert len(ax.texts) == 0 and len(ax.images) == 1
    assert 10 <= len(ax.get_xticks()) <= 40
    plt.close("all")


def test_roc_plot_curves_and_legend():
    import matplotlib.pyplot as plt

    logits, y = _logits(n=300, k=5)
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    ax = figures.plot_roc_curves(y, probs, [f"c{i}" for i in range(5)])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 7 and all("AUC" in t for t in legend)  # 5 classes + micro + macro
    assert len(ax.lines) == 8  # + the chance diagonal
    macro = m.roc_auc_score(y, probs)
    assert any(f"macro average (AUC {macro:.3f})" == t for t in legend)
    logits, y = _logits(n=400, k=40, seed=1)
    ax = figures.plot_roc_curves(y, logits, max_classes=10)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 5 and sum("average" in t for t in legend) == 2  # best, median, worst + averages
    plt.close("all")


def test_micro_roc_curve_equals_sklearn_on_one_hot():
    logits, y = _logits(n=200, k=6)
    ours = m.micro_roc_curve(y, logits)
    ref = skm.roc_curve(np.eye(6)[y].ravel(), logits.ravel())
    for a, b in zip(ours, ref):
        assert np.array_equal(a, b)


def test_per_class_accuracy_bars():
    import matplotlib.pyplot as plt

    acc = np.array([0.5, np.nan, 0.9, 1.0])
    ax = figures.plot_per_class_accuracy(acc, ["a", "b", "c", "d"])
    assert len(ax.patches) == 4 and ax.patches[2].get_height() == pytest.approx(0.9)
    assert "mean 0.800" in ax.get_legend().get_texts()[0].get_text()
    plt.close("all")


def test_compute_metrics_on_raw_margins_ranks_them_as_given():
    """The SVM job passes decision values (negative, unnormalised): AUC must rank those, not a softmax of them."""
    logits, y = _logits(n=300, k=4, seed=3)
    margins = (logits.astype(np.float64) - 3.0) * 7.0
    out = m.compute_metrics(y, margins, ["a", "b", "c", "d"])
    expected = [skm.roc_auc_score(y == c, margins[:, c]) for c in range(4)]
    assert out["roc_auc_per_class"] == pytest.approx(expected, abs=1e-12)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, margins.argmax(1)), abs=1e-12)
    with pytest.raises(ValueError, match="300 samples but y_score has 299 rows"):
        m.compute_metrics(y, margins[:-1])
