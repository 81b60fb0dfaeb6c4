"""The one table of metrics: every list of metric keys in dlstudy (the metrics.json contract, the run report's
headline and interval rows, the bootstrap's metric names, the study tables' columns) is a view of `METRICS`.

A row says what a metrics.json key is and how it is made:

    source   'counts' (a function of the confusion counts; for a scalar, `from_counts` maps (B, K) tp, n_true,
             n_pred to (B,) and `grain` is the part of (true, predicted) it needs), 'scores' (ranks the (N, K)
             scores: ROC AUC, top-k), or 'meta' (what was evaluated: K, N, class names, score kind)
    shape    'scalar' | 'per_class' (K,) | 'matrix' (K, K) | 'names' (K,) str | 'text'
    core     written in every metrics.json block (`metric_keys()`, runs.METRIC_KEYS)
    interval 'proportion' (Wilson / Clopper-Pearson on the hit count), 'bootstrap', or None
    study    a column of the per-arm study tables (micro AUC is left out: one AUC column per arm)

Order matters: each view keeps the table's order, and reports print rows in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlstudy.metrics import counts as _c
from dlstudy.metrics.counts import CountMetric

SOURCES = ("counts", "scores", "meta")
INTERVALS = (None, "proportion", "bootstrap")
GRAINS = ("correct", "true_correct", "confusion")


@dataclass(frozen=True)
class Metric:
    """One metrics.json key."""

    key: str
    label: str  # human text in tables ("macro precision")
    source: str  # 'counts' | 'scores' | 'meta'
    shape: str = "scalar"
    higher_is_better: bool | None = None  # None for metadata
    core: bool = False
    interval: str | None = None
    study: bool = False
    short: str = ""  # narrow column title; defaults to label
    grain: str | None = None  # counts metrics: 'correct' | 'true_correct' | 'confusion'
    from_counts: CountMetric | None = None  # counts metrics: (B, K) tp, n_true, n_pred -> (B,)
    average: str | None = None  # ROC AUC: 'macro' | 'micro'

    def __post_init__(self) -> None:
        assert self.source in SOURCES and self.interval in INTERVALS and self.grain in (None, *GRAINS)
        assert (self.from_counts is not None) == (self.grain is not None)
        assert self.from_counts is None or (self.source == "counts" and self.shape == "scalar")
        assert self.average is None or self.source == "scores"

    @property
    def title(self) -> str:
        return self.short or self.label

    @property
    def bootstrappable(self) -> bool:
        """The bootstrap of dlstudy.stats can resample it: a metric of counts, or ROC AUC."""
        return self.from_counts is not None or self.average is not None


def _count(key, label, grain, fn, **kw) -> Metric:
    return Metric(key, label, "counts", higher_is_better=True, grain=grain, from_counts=fn, **kw)


_ROWS = (
    _count("accuracy", "accuracy", "correct", _c.accuracy, core=True, interval="proportion", study=True),
    _count("balanced_accuracy", "balanced acc.", "true_correct", _c.balanced_accuracy, interval="bootstrap",
           study=True),
    Metric("per_class_accuracy", "per-class accuracy", "counts", "per_class", True, core=True),
    _count("precision_macro", "macro precision", "confusion", _c.precision_macro, core=True, interval="bootstrap",
           study=True, short="macro P"),
    _count("recall_macro", "macro recall", "confusion", _c.recall_macro, core=True, interval="bootstrap",
           study=True, short="macro R"),
    _count("f1_macro", "macro F1", "confusion", _c.f1_macro, core=True, interval="bootstrap", study=True),
    Metric("confusion_matrix", "confusion matrix", "counts", "matrix", core=True),
    Metric("roc_auc_macro", "macro AUC", "scores", higher_is_better=True, core=True, interval="bootstrap",
           study=True, short="AUC", average="macro"),
    Metric("roc_auc_micro", "micro AUC", "scores", higher_is_better=True, core=True, interval="bootstrap",
           average="micro"),
    Metric("roc_auc_per_class", "per-class AUC", "scores", "per_class", True, core=True),
    Metric("top5_accuracy", "top-5 accuracy", "scores", higher_is_better=True),
    Metric("num_classes", "classes", "meta", core=True),
    Metric("class_names", "class names", "meta", "names", core=True),
    Metric("n_samples", "samples", "meta", core=True),
    Metric("precision_per_class", "per-class precision", "counts", "per_class", True),
    Metric("recall_per_class", "per-class recall", "counts", "per_class", True),
    Metric("f1_per_class", "per-class F1", "counts", "per_class", True),
    Metric("support_per_class", "per-class support", "counts", "per_class"),
    Metric("score_kind", "score kind", "meta", "text"),
)
METRICS: dict[str, Metric] = {m.key: m for m in _ROWS}


# ------------------------------------------------------------------ views (each in table order)


def metric_keys() -> tuple[str, ...]:
    """Keys every metrics.json block holds (runs.METRIC_KEYS)."""
    return tuple(m.key for m in METRICS.values() if m.core)


def headline_keys() -> tuple[str, ...]:
    """The run report's 'Test metrics' rows: the core scalars, metadata (K, N) included."""
    return tuple(m.key for m in METRICS.values() if m.core and m.shape == "scalar")


def score_keys() -> tuple[str, ...]:
    """Every scalar measure of quality (not metadata), core or not: the `evaluate` command's table."""
    return tuple(m.key for m in METRICS.values() if m.shape == "scalar" and m.source != "meta")


def interval_keys() -> tuple[str, ...]:
    """Metrics the run report gives an interval (accuracy first: Wilson and Clopper-Pearson; others bootstrap)."""
    return tuple(m.key for m in METRICS.values() if m.interval)


def bootstrap_metrics() -> dict[str, Metric]:
    """name -> Metric of every metric `dlstudy.stats.bootstrap_ci` / `paired_bootstrap` can resample."""
    return {m.key: m for m in METRICS.values() if m.bootstrappable}


def study_interval_metrics() -> tuple[tuple[str, str], ...]:
    """(key, label) columns of a study's interval table."""
    return tuple((m.key, m.label) for m in METRICS.values() if m.interval and m.study)


def study_metrics() -> tuple[tuple[str, str], ...]:
    """(key, short title) columns of a per-arm study summary: the core quality scalars shown in studies."""
    return tuple((m.key, m.title) for m in METRICS.values()
                 if m.core and m.study and m.shape == "scalar" and m.source != "meta")


def is_metadata(key: str) -> bool:
    """True for metrics.json keys that describe the evaluation (K, N, names) rather than measure it."""
    return key in METRICS and METRICS[key].source == "meta"


def label(key: str) -> str:
    """Human text of a metric key (the key itself for keys outside the table)."""
    return METRICS[key].label if key in METRICS else key
