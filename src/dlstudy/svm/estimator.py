"""`LinearSVM`: multiclass linear (or random-Fourier-feature RBF) SVM, a scikit-learn classifier.

Our own solver (`solver.newton_solve`) in PyTorch, CPU or CUDA, float32 or float64; no liblinear/libsvm inside.
The primal objective of each formulation is written out in `dlstudy.svm.objectives`; `objective_` reports it at the
solution and `dual_gap_` certifies it: objective_ - optimum <= dual_gap_ (for the fitted bias). It passes
scikit-learn's `parametrize_with_checks` (tests/test_svm_sklearn.py lists the checks it is exempt from, and why).

Example:
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> svm = LinearSVM(C=0.1).fit(X / 16, y)
    >>> svm.decision_function(X[:2] / 16).shape
    (2, 10)
    >>> LinearSVM(C=0.1).fit(X / 16, y == 3).decision_function(X[:2] / 16).shape  # two classes: one score
    (2,)
"""

from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from dlstudy.svm.objectives import FORMULATIONS
from dlstudy.svm.persistence import load_model, save_model
from dlstudy.svm.rff import default_gamma, rff_transform, sample_rff
from dlstudy.svm.solver import Design, Problem, formulation_name, newton_solve
from dlstudy.svm.validation import as_2d_tensor, check_sample_weight, may_share_memory, row_chunks

MULTI_CLASS = ("ovr", "crammer_singer", "weston_watkins")
LOSSES = ("squared_hinge", "hinge")
KERNELS = ("linear", "rbf")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


SMALL_PROBLEM = 2e7  # N * D * K below which one CPU thread is faster (thread sync costs more than the work)


@contextlib.contextmanager
def _cpu_threads(n: int | None):
    """Run the block with n torch CPU threads (None: unchanged), restoring the previous count after."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class ConvergenceWarning(UserWarning):
    """Fitting stopped at max_iter before the duality-gap tolerance was met."""


class LinearSVM(ClassifierMixin, BaseEstimator):
    """Multiclass SVM: one-vs-rest (squared hinge or hinge), Crammer-Singer or Weston-Watkins.

    Parameters: C (> 0, loss weight), multi_class ('ovr' | 'crammer_singer' | 'weston_watkins'), loss
    ('squared_hinge' | 'hinge', OvR only), fit_intercept (unregularised bias), class_weight (None | 'balanced' |
    {label: weight}, multiplies the loss of each sample of that class), tol (relative duality gap at which to stop),
    max_iter (Newton iterations), random_state (RFF draw), device ('cpu' | 'cuda' | 'auto'), dtype ('float64' |
    'float32': the precision of the solver's state; float32 is faster and precise enough for squared hinge, the
    smoothed losses want float64; a float32 X is multiplied in float32 either way, never copied to float64),
    batch_size (None: X on the device at once; else rows streamed in chunks of this size, for data larger than device memory), kernel ('linear' |
    'rbf' via random Fourier features), gamma (None: 1 / (D * X.var())), n_components (number of random features
    for 'rbf'), standardize (z-score each input column with the training mean and population std, weighted by
    sample_weight, a constant column's std taken as 1; applied again by every prediction method).
    `fit(X, y, sample_weight=None)`: sample_weight multiplies each sample's loss (as class_weight does per class),
    so an integer weight equals repeating the sample.

    Fitted: coef_ (K, D') (D' = n_components for 'rbf'), intercept_ (K,), classes_, n_features_in_ (and
    feature_names_in_ for a DataFrame), n_iter_, objective_, dual_gap_, converged_, temperature_ and calibration_
    ('train' or 'heldout') for predict_proba; mean_ and scale_ (D,) with standardize; gamma_, rff_omega_,
    rff_beta_ for 'rbf'. `save(path)` / `LinearSVM.load(path)` keep all of it in a NumPy .npz that loads without
    pickle. Always K = len(classes_) columns inside; `decision_function` follows scikit-learn and returns one
    column, (N,), for two classes.
    """

    def __init__(self, C: float = 1.0, multi_class: str = "ovr", loss: str = "squared_hinge",
                 fit_intercept: bool = True, class_weight=None, tol: float = 1e-3, max_iter: int = 1000,
                 random_state: int | None = None, device: str = "cpu", dtype: str = "float64",
                 batch_size: int | None = None, kernel: str = "linear", gamma: float | None = None,
                 n_components: int = 2000, standardize: bool = False):
        self.C, self.multi_class, self.loss, self.fit_intercept = C, multi_class, loss, fit_intercept
        self.class_weight, self.tol, self.max_iter, self.random_state = class_weight, tol, max_iter, random_state
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        self.kernel, self.gamma, self.n_components = kernel, gamma, n_components
        self.standardize = standardize

    # ------------------------------------------------------------------------------------------ fitting

    def _check_params(self) -> None:
        where = "LinearSVM"
        if isinstance(self.C, bool) or not isinstance(self.C, (int, float)) or not self.C > 0:
            raise ValueError(f"{where}: C must be a number > 0, got {self.C!r}")
        for name, value, options in (("multi_class", self.multi_class, MULTI_CLASS), ("loss", self.loss, LOSSES),
                                     ("kernel", self.kernel, KERNELS), ("dtype", str(self.dtype), tuple(DTYPES))):
            if value not in options:
                raise ValueError(f"{where}: {name} must be one of {list(options)}, got {value!r}")
        if self.loss == "hinge" and self.multi_class != "ovr":
            raise ValueError(f"{where}: loss='hinge' applies to multi_class='ovr' only, got {self.multi_class!r}")
        if not self.tol > 0 or int(self.max_iter) < 1:
            raise ValueError(f"{where}: tol must be > 0 and max_iter >= 1, got tol={self.tol}, max_iter={self.max_iter}")
        if self.kernel == "rbf" and (int(self.n_components) < 1 or (self.gamma is not None and not self.gamma > 0)):
            raise ValueError(f"{where}: rbf needs n_components >= 1 and gamma > 0 or None, "
                             f"got {self.n_components}, {self.gamma}")

    def _device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _class_weights(self, y_idx: np.ndarray) -> np.ndarray:
        """(K,) weight per class: ones, n / (K n_k) for 'balanced', or a {label: weight} mapping (others 1)."""
        K = len(self.classes_)
        if self.class_weight is None:
            return np.ones(K)
        if self.class_weight == "balanced":
            counts = np.bincount(y_idx, minlength=K)
            return len(y_idx) / (K * counts)
        if isinstance(self.class_weight, dict):
            known = set(self.classes_.tolist())
            unknown = [k for k in self.class_weight if k not in known]
            if unknown:
                raise ValueError(f"LinearSVM: class_weight has labels {unknown} not in y (classes {sorted(known)})")
            return np.array([float(self.class_weight.get(c, 1.0)) for c in self.classes_.tolist()])
        raise ValueError(f"LinearSVM: class_weight must be None, 'balanced' or a dict, got {self.class_weight!r}")

    def _standardized(self, X: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """(X - mean_) / scale_ in X's dtype (in place only when X is our own copy), or X without standardize."""
        if not self.standardize:
            return X
        mean, scale = torch.from_numpy(self.mean_).to(X.dtype), torch.from_numpy(self.scale_).to(X.dtype)
        return (X.sub_(mean) if inplace else X.sub(mean)).div_(scale)

    def _features(self, X: torch.Tensor) -> torch.Tensor:
        """The solver's inputs: X (standardised if asked), or its random Fourier features for kernel='rbf'."""
        Z = self._standardized(X)
        if self.kernel == "linear":
            return Z
        return rff_transform(Z, self.rff_omega_, self.rff_beta_)

    def _fit_standardization(self, X: torch.Tensor, sw: np.ndarray | None) -> None:
        """mean_, scale_ (D,) float64: column mean and population std (ddof 0; weighted by sw), 1 where a column
        is constant."""
        w = torch.ones(X.shape[0], dtype=torch.float64) if sw is None else torch.from_numpy(sw)
        mean = torch.zeros(X.shape[1], dtype=torch.float64)
        for rows in row_chunks(*X.shape):  # chunked: never a second (N, D) float64 copy
            mean += w[rows] @ X[rows].to(torch.float64)
        mean /= w.sum()
        var = torch.zeros_like(mean)
        for rows in row_chunks(*X.shape):
            var += w[rows] @ (X[rows].to(torch.float64) - mean).square_()
        std = (var / w.sum()).sqrt()
        std[std < 1e-12] = 1.0
        self.mean_, self.scale_ = mean.numpy(), std.numpy()

    def fit(self, X, y, sample_weight=None) -> "LinearSVM":
        """Fit on X (N, D) and labels y (N,) of any sortable type, each sample's loss times sample_weight (N,);
        returns self."""
        self._check_params()
        dtype = DTYPES[str(self.dtype)]
        X_t = as_2d_tensor(X, "LinearSVM.fit", dtype)
        validate_data(self, X, reset=True, skip_check_array=True)  # n_features_in_, feature_names_in_
        y_arr = column_or_1d(y, warn=True)
        if y_arr.dtype.kind == "f" and not np.isfinite(y_arr).all():
            raise ValueError(f"LinearSVM.fit: Input y contains {'NaN' if np.isnan(y_arr).any() else 'infinity'}")
        check_classification_targets(y_arr)
        if len(y_arr) != X_t.shape[0]:
            raise ValueError(f"LinearSVM.fit: y must be 1-D with one label per row of X; got y shape "
                             f"{y_arr.shape} for X with {X_t.shape[0]} rows")
        sw = check_sample_weight(sample_weight, X_t.shape[0], "LinearSVM.fit")
        self.classes_, y_idx = np.unique(y_arr, return_inverse=True)
        n_weighted = len(self.classes_) if sw is None else len(np.unique(y_idx[sw > 0]))
        if len(self.classes_) < 2 or n_weighted < 2:
            raise ValueError(f"LinearSVM.fit: y needs at least 2 classes with positive weight, got {n_weighted} "
                             f"class{'es' if n_weighted != 1 else ''} (labels {self.classes_.tolist()})")
        self.n_features_in_ = X_t.shape[1]
        if self.standardize:
            self._fit_standardization(X_t, sw)
            X_t = self._standardized(X_t, inplace=not may_share_memory(X, X_t))  # never the caller's array
        F = X_t  # (N, D') what the solver sees
        if self.kernel == "rbf":
            self.gamma_ = float(self.gamma) if self.gamma is not None else default_gamma(X_t)
            self.rff_omega_, self.rff_beta_ = sample_rff(X_t.shape[1], int(self.n_components), self.gamma_,
                                                         self.random_state, dtype)
            F = rff_transform(X_t, self.rff_omega_, self.rff_beta_)
        self._solve(F, y_idx, sw, dtype)
        train_scores = self._scores(F)  # (N, K), reused: one pass over the training set
        self.temperature_ = self._fit_temperature(train_scores, y_idx, sw)
        self.train_accuracy_ = float((train_scores.argmax(axis=1) == y_idx).mean())
        self.calibration_ = "train"
        return self

    def _solve(self, F: torch.Tensor, y_idx: np.ndarray, sw: np.ndarray | None, dtype: torch.dtype) -> None:
        device, K = self._device(), len(self.classes_)
        form = FORMULATIONS[formulation_name(self.multi_class, self.loss)]
        y_t = torch.from_numpy(y_idx.astype(np.int64)).to(device)
        weight = torch.tensor(self._class_weights(y_idx), dtype=dtype, device=device)[y_t] * float(self.C)  # (N,)
        if sw is not None:
            weight *= torch.from_numpy(sw).to(device=device, dtype=dtype)
        prob = Problem(Design(F, device, self.batch_size), form.target(y_t, K, dtype), weight, form,
                       bool(self.fit_intercept))
        W0 = torch.zeros(F.shape[1], K, dtype=dtype, device=device)
        with _cpu_threads(1 if device.type == "cpu" and F.numel() * K < SMALL_PROBLEM else None):
            res = newton_solve(prob, W0, torch.zeros(K, dtype=dtype, device=device), float(self.tol),
                               int(self.max_iter))
        self.coef_ = res.W.T.cpu().numpy().copy()  # (K, D')
        self.intercept_ = res.b.cpu().numpy().copy()  # (K,)
        self.n_iter_, self.objective_, self.dual_gap_ = res.n_iter, res.objective, res.dual_gap
        self.converged_ = res.converged
        if not res.converged:
            hint = "raise max_iter or tol" if res.n_iter >= int(self.max_iter) else \
                "the smoothing reached its coldest temperature; raise tol"
            warnings.warn(f"LinearSVM: stopped after {res.n_iter} Newton iterations (max_iter={self.max_iter}) with "
                          f"relative duality gap {res.dual_gap / max(abs(res.objective), 1e-300):.2e} > "
                          f"tol={self.tol}; {hint}", ConvergenceWarning, stacklevel=3)

    # ------------------------------------------------------------------------------------------ prediction

    def _decision_matrix(self, X, where: str = "decision_function") -> np.ndarray:
        """(N, K) scores z = W^T x + b, one column per entry of classes_, for any number of classes."""
        check_is_fitted(self)
        X_t = as_2d_tensor(X, f"LinearSVM.{where}", DTYPES[str(self.dtype)])
        if X_t.shape[1] != self.n_features_in_:
            raise ValueError(f"LinearSVM.{where}: X has {X_t.shape[1]} features, but LinearSVM is expecting "
                             f"{self.n_features_in_} features as input")
        validate_data(self, X, reset=False, skip_check_array=True)  # feature names, when fitted with them
        return self._scores(self._features(X_t))

    def decision_function(self, X) -> np.ndarray:
        """(N, K) scores z = W^T x + b, one column per entry of classes_ (higher: more likely that class).

        Two classes give (N,) (z_1 - z_0) / 2, positive for classes_[1] (scikit-learn's convention): for OvR the
        two columns are mirror images, so this is the binary SVM's own margin z_1.
        """
        scores = self._decision_matrix(X)
        return (scores[:, 1] - scores[:, 0]) / 2 if scores.shape[1] == 2 else scores

    def _scores(self, F: torch.Tensor) -> np.ndarray:
        W = torch.from_numpy(self.coef_).to(F.dtype)  # (K, D')
        scores = F @ W.T + torch.from_numpy(self.intercept_).to(F.dtype)  # (N, K) in X's precision
        return scores.to(DTYPES[str(self.dtype)]).numpy()

    def predict(self, X) -> np.ndarray:
        """(N,) labels from classes_ with the highest decision score."""
        scores = self._decision_matrix(X, "predict")  # first: NotFittedError before classes_ is looked up
        return self.classes_[scores.argmax(1)]

    # ------------------------------------------------------------------------------------------ probabilities

    @staticmethod
    def _fit_temperature(scores: np.ndarray, y_idx: np.ndarray, sw: np.ndarray | None = None) -> float:
        """T minimising the (sw-weighted) NLL of softmax(scores / T): golden-section search on log(1/T) (the NLL
        is convex in 1/T)."""
        s = torch.from_numpy(np.asarray(scores, dtype=np.float64))
        y_t = torch.from_numpy(np.asarray(y_idx, dtype=np.int64))
        w = None if sw is None else torch.from_numpy(sw) / float(sw.sum())

        def nll(log_a: float) -> float:
            if w is None:
                return float(torch.nn.functional.cross_entropy(s * math.exp(log_a), y_t))
            return float(w @ torch.nn.functional.cross_entropy(s * math.exp(log_a), y_t, reduction="none"))

        lo, hi = -8.0, 8.0
        ratio = (math.sqrt(5) - 1) / 2
        for _ in range(80):
            m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
            if nll(m1) <= nll(m2):
                hi = m2
            else:
                lo = m1
        return math.exp(-(lo + hi) / 2)

    def calibrate(self, X_val, y_val) -> "LinearSVM":
        """Fit predict_proba's temperature on held-out data (fit() sets one from the training data as a fallback)."""
        check_is_fitted(self)
        y_arr = np.asarray(y_val)
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        missing = sorted({v for v in y_arr.tolist() if v not in index})
        if missing:
            raise ValueError(f"LinearSVM.calibrate: y_val has labels {missing} not seen in fit (classes_)")
        y_idx = np.array([index[v] for v in y_arr.tolist()], dtype=np.int64)
        scores = self._decision_matrix(X_val, "calibrate")
        if len(y_idx) != scores.shape[0]:
            raise ValueError(f"LinearSVM.calibrate: {len(y_idx)} labels for {scores.shape[0]} rows of X_val")
        self.temperature_ = self._fit_temperature(scores, y_idx)
        self.calibration_ = "heldout"
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(N, K) softmax(z / temperature_) of the (N, K) scores z (also for two classes); rows sum to 1."""
        scores = torch.from_numpy(self._decision_matrix(X, "predict_proba").astype(np.float64)) / self.temperature_
        return torch.softmax(scores, 1).numpy()

    # ------------------------------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to `path` (.npz of plain arrays + JSON text, atomically); returns the path."""
        check_is_fitted(self)
        return save_model(self, path)

    @classmethod
    def load(cls, path: str | Path) -> "LinearSVM":
        """A fitted LinearSVM from a file written by `save`; ValueError naming the file when it is not one."""
        return load_model(cls, path)
