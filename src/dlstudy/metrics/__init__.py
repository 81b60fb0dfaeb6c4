"""From-scratch evaluation metrics (scikit-learn-exact), a streaming `Evaluator`, and plots.

Pure functions take NumPy arrays, lists or torch tensors and return NumPy values or floats; see docs/metrics.md.
Plots import matplotlib only when called.
"""

from dlstudy.metrics._validate import UndefinedMetricWarning
from dlstudy.metrics.classification import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                                            per_class_accuracy, precision_recall_fscore, prf_from_confusion,
                                            top_k_accuracy_score)
from dlstudy.metrics.evaluator import Evaluator, compute_metrics
from dlstudy.metrics.plots import plot_confusion_matrix, plot_per_class_accuracy, plot_roc_curves
from dlstudy.metrics.ranking import auc, micro_auc, micro_roc_curve, ovr_auc_per_class, roc_auc_score, roc_curve
from dlstudy.metrics.report_table import classification_report

__all__ = [
    "Evaluator", "UndefinedMetricWarning", "accuracy_score", "auc", "balanced_accuracy_score",
    "classification_report", "compute_metrics", "confusion_matrix", "micro_auc", "micro_roc_curve",
    "ovr_auc_per_class", "per_class_accuracy", "plot_confusion_matrix", "plot_per_class_accuracy",
    "plot_roc_curves", "precision_recall_fscore", "prf_from_confusion", "roc_auc_score", "roc_curve",
    "top_k_accuracy_score",
]
