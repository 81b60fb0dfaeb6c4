"""Multiclass SVM from scratch: `LinearSVM`, its objectives, random Fourier features and features (the svm job
that writes a run folder is dlstudy.jobs.svm)."""

from dlstudy.svm.estimator import ConvergenceWarning, LinearSVM
from dlstudy.svm.objectives import FORMULATIONS, primal_objective

__all__ = ["LinearSVM", "ConvergenceWarning", "FORMULATIONS", "primal_objective"]
