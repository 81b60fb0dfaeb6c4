"""From-scratch evaluation metrics (scikit-learn-exact) and a streaming `Evaluator`.

Pure functions take NumPy arrays, lists or torch tensors and return NumPy values or floats; see docs/metrics.md.
Their plots live in dlstudy.figures (the one package that imports matplotlib). `METRICS` (metrics/table.py) is the
one table of metric keys every list derives from; `confusion_counts` (metrics/counts.py) is the one counting core.
"""

from dlstudy.metrics._validate import UndefinedMetricWarning
from dlstudy.metrics.classification import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                                            per_class_accuracy, precision_recall_fscore, prf_from_confusion,
                                            top_k_accuracy_score)
from dlstudy.metrics.counts import class_counts, confusion_counts
from dlstudy.metrics.evaluator import Evaluator, compute_metrics
from dlstudy.metrics.ranking import auc, micro_auc, micro_roc_curve, ovr_auc_per_class, roc_auc_score, roc_curve
from dlstudy.metrics.report_table import classification_report
from dlstudy.metrics.table import METRICS, Metric

__all__ = [
    "METRICS", "Evaluator", "Metric", "UndefinedMetricWarning", "accuracy_score", "auc", "balanced_accuracy_score",
    "class_counts", "classification_report", "compute_metrics", "confusion_counts", "confusion_matrix", "micro_auc",
    "micro_roc_curve",
    "ovr_auc_per_class", "per_class_accuracy", "precision_recall_fscore", "prf_from_confusion", "roc_auc_score",
    "roc_curve", "top_k_accuracy_score",
]
