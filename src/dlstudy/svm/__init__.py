"""Multiclass SVM from scratch: `LinearSVM`, its objectives, random Fourier features, features and the svm job."""

from dlstudy.svm.estimator import ConvergenceWarning, LinearSVM
from dlstudy.svm.objectives import FORMULATIONS, primal_objective

__all__ = ["LinearSVM", "ConvergenceWarning", "FORMULATIONS", "primal_objective"]
