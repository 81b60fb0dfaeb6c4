"""`LinearSVM`: multiclass linear (or random-Fourier-feature RBF) SVM with the scikit-learn estimator contract.

Our own solver (`solver.newton_solve`) in PyTorch, CPU or CUDA, float32 or float64; no liblinear/libsvm inside.
The primal objective of each formulation is written out in `dlstudy.svm.objectives`; `objective_` reports it at the
solution and `dual_gap_` certifies it: objective_ - optimum <= dual_gap_ (for the fitted bias).

Example:
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> svm = LinearSVM(C=0.1).fit(X / 16, y)
    >>> svm.decision_function(X[:2] / 16).shape
    (2, 10)
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import math
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from dlstudy.svm.objectives import FORMULATIONS
from dlstudy.svm.rff import default_gamma, rff_transform, sample_rff
from dlstudy.svm.solver import Design, Problem, formulation_name, newton_solve

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


def _as_2d_tensor(X, where: str, dtype: torch.dtype) -> torch.Tensor:
    """X as a (N, D) tensor of `dtype` (no copy when it already is one); ValueError naming `where` otherwise."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu() if X.device.type != "cpu" else X.detach()
        T = X.to(dtype)
    else:
        arr = np.asarray(X)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{where}: X must be numeric, got dtype {arr.dtype}")
        T = torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)
    if T.ndim != 2:
        raise ValueError(f"{where}: X must be 2-D (n_samples, n_features), got shape {tuple(T.shape)}")
    if T.shape[0] == 0 or T.shape[1] == 0:
        raise ValueError(f"{where}: X is empty, shape {tuple(T.shape)}")
    for i in range(0, T.shape[0], 8192):  # chunked, so the check never allocates a full (N, D) mask
        bad = ~torch.isfinite(T[i:i + 8192])
        if bool(bad.any()):
            r, c = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"{where}: X contains NaN or inf (first at row {i + r}, column {c}: "
                             f"{float(T[i + r, c])})")
    return T


class LinearSVM:
    """Multiclass SVM: one-vs-rest (squared hinge or hinge), Crammer-Singer or Weston-Watkins.

    Parameters: C (> 0, loss weight), multi_class ('ovr' | 'crammer_singer' | 'weston_watkins'), loss
    ('squared_hinge' | 'hinge', OvR only), fit_intercept (unregularised bias), class_weight (None | 'balanced' |
    {label: weight}, multiplies the loss of each sample of that class), tol (relative duality gap at which to stop),
    max_iter (Newton iterations), random_state (RFF draw), device ('cpu' | 'cuda' | 'auto'), dtype ('float64' |
    'float32': faster, and precise enough for squared hinge; the smoothed losses want float64), batch_size (None: X on the device at once; else rows streamed in chunks of this size, for data larger
    than device memory), kernel ('linear' | 'rbf' via random Fourier features), gamma (None: 1 / (D * X.var())),
    n_components (number of random features for 'rbf'), standardize (z-score each input column with the training
    mean and population std, a constant column's std taken as 1; applied again by every prediction method).

    Fitted: coef_ (K, D') (D' = n_components for 'rbf'), intercept_ (K,), classes_, n_iter_, objective_,
    dual_gap_, converged_, temperature_ and calibration_ ('train' or 'heldout') for predict_proba; mean_ and
    scale_ (D,) with standardize; gamma_, rff_omega_, rff_beta_ for 'rbf'. `save(path)` / `LinearSVM.load(path)`
    keep all of it in a NumPy .npz that loads without pickle.
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

    # ------------------------------------------------------------------------------------------ estimator contract

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> "LinearSVM":
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"LinearSVM.set_params: unknown parameter {name!r}; valid are {valid}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = LinearSVM().get_params()
        changed = {k: v for k, v in self.get_params().items() if v != defaults[k]}
        return f"LinearSVM({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

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

    def _fit_standardization(self, X: torch.Tensor) -> None:
        """mean_, scale_ (D,) float64: column mean and population std (ddof 0), 1 where a column is constant."""
        mean = X.mean(0, dtype=torch.float64)
        var = torch.zeros_like(mean)
        for i in range(0, X.shape[0], 8192):  # chunked: never a second (N, D) float64 copy
            var += (X[i:i + 8192].to(torch.float64) - mean).square().sum(0)
        std = (var / X.shape[0]).sqrt()
        std[std < 1e-12] = 1.0
        self.mean_, self.scale_ = mean.numpy(), std.numpy()

    def fit(self, X, y) -> "LinearSVM":
        """Fit on X (N, D) and labels y (N,) of any sortable type; returns self."""
        self._check_params()
        dtype = DTYPES[str(self.dtype)]
        X_t = _as_2d_tensor(X, "LinearSVM.fit", dtype)
        y_arr = np.asarray(y)
        if y_arr.ndim != 1 or len(y_arr) != X_t.shape[0]:
            raise ValueError(f"LinearSVM.fit: y must be 1-D with one label per row of X; got y shape "
                             f"{y_arr.shape} for X with {X_t.shape[0]} rows")
        self.classes_, y_idx = np.unique(y_arr, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"LinearSVM.fit: y needs at least 2 classes, got {len(self.classes_)} "
                             f"({self.classes_.tolist()})")
        self.n_features_in_ = X_t.shape[1]
        if self.standardize:
            self._fit_standardization(X_t)
            X_t = self._standardized(X_t, inplace=_data_ptr(X) != X_t.data_ptr())  # never the caller's array
        F = X_t  # (N, D') what the solver sees
        if self.kernel == "rbf":
            self.gamma_ = float(self.gamma) if self.gamma is not None else default_gamma(X_t)
            self.rff_omega_, self.rff_beta_ = sample_rff(X_t.shape[1], int(self.n_components), self.gamma_,
                                                         self.random_state, dtype)
            F = rff_transform(X_t, self.rff_omega_, self.rff_beta_)
        self._solve(F, y_idx, dtype)
        train_scores = self._scores(F)  # (N, K), reused: one pass over the training set
        self.temperature_ = self._fit_temperature(train_scores, y_idx)
        self.train_accuracy_ = float((train_scores.argmax(axis=1) == y_idx).mean())
        self.calibration_ = "train"
        return self

    def _solve(self, F: torch.Tensor, y_idx: np.ndarray, dtype: torch.dtype) -> None:
        device, K = self._device(), len(self.classes_)
        form = FORMULATIONS[formulation_name(self.multi_class, self.loss)]
        y_t = torch.from_numpy(y_idx.astype(np.int64)).to(device)
        weight = torch.tensor(self._class_weights(y_idx), dtype=dtype, device=device)[y_t] * float(self.C)
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
            warnings.warn(f"LinearSVM: stopped after max_iter={self.max_iter} Newton iterations with relative "
                          f"duality gap {res.dual_gap / max(abs(res.objective), 1e-300):.2e} > tol={self.tol}; "
                          f"raise max_iter or tol", ConvergenceWarning, stacklevel=3)

    # ------------------------------------------------------------------------------------------ prediction

    def _check_fitted(self, where: str) -> None:
        if not hasattr(self, "coef_"):
            raise ValueError(f"LinearSVM.{where}: this LinearSVM is not fitted yet; call fit(X, y) first")

    def decision_function(self, X) -> np.ndarray:
        """(N, K) scores z = W^T x + b, one column per entry of classes_ (higher: more likely that class)."""
        self._check_fitted("decision_function")
        X_t = _as_2d_tensor(X, "LinearSVM.decision_function", DTYPES[str(self.dtype)])
        if X_t.shape[1] != self.n_features_in_:
            raise ValueError(f"LinearSVM.decision_function: X has {X_t.shape[1]} features, but the model was "
                             f"fitted with {self.n_features_in_}")
        return self._scores(self._features(X_t))

    def _scores(self, F: torch.Tensor) -> np.ndarray:
        W = torch.from_numpy(self.coef_).to(F.dtype)  # (K, D')
        return (F @ W.T + torch.from_numpy(self.intercept_).to(F.dtype)).numpy()

    def predict(self, X) -> np.ndarray:
        """(N,) labels from classes_ with the highest decision score."""
        self._check_fitted("predict")
        return self.classes_[self.decision_function(X).argmax(1)]

    def score(self, X, y) -> float:
        """Accuracy of predict(X) against y."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    # ------------------------------------------------------------------------------------------ probabilities

    @staticmethod
    def _fit_temperature(scores: np.ndarray, y_idx: np.ndarray) -> float:
        """T minimising the NLL of softmax(scores / T): golden-section search on log(1/T) (NLL is convex in 1/T)."""
        s = torch.from_numpy(np.asarray(scores, dtype=np.float64))
        y_t = torch.from_numpy(np.asarray(y_idx, dtype=np.int64))

        def nll(log_a: float) -> float:
            return float(torch.nn.functional.cross_entropy(s * math.exp(log_a), y_t))

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
        self._check_fitted("calibrate")
        y_arr = np.asarray(y_val)
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        missing = sorted({v for v in y_arr.tolist() if v not in index})
        if missing:
            raise ValueError(f"LinearSVM.calibrate: y_val has labels {missing} not seen in fit (classes_)")
        y_idx = np.array([index[v] for v in y_arr.tolist()], dtype=np.int64)
        scores = self.decision_function(X_val)
        if len(y_idx) != scores.shape[0]:
            raise ValueError(f"LinearSVM.calibrate: {len(y_idx)} labels for {scores.shape[0]} rows of X_val")
        self.temperature_ = self._fit_temperature(scores, y_idx)
        self.calibration_ = "heldout"
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(N, K) softmax(decision_function(X) / temperature_); rows sum to 1."""
        scores = torch.from_numpy(self.decision_function(X).astype(np.float64)) / self.temperature_
        return torch.softmax(scores, 1).numpy()

    # ------------------------------------------------------------------------------------------ persistence

    _ARRAYS = ("coef_", "intercept_", "classes_", "mean_", "scale_", "rff_omega_", "rff_beta_")
    _SCALARS = ("n_features_in_", "n_iter_", "objective_", "dual_gap_", "converged_", "temperature_",
                "calibration_", "train_accuracy_", "gamma_")
    FORMAT = "dlstudy.LinearSVM/1"

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to `path` (.npz of plain arrays + JSON text, atomically); returns the path.

        Holds the hyper-parameters, coef_, intercept_, classes_, the standardisation and the RFF draw: everything
        `load` needs to give the same decision_function, and nothing that needs pickle to read.
        """
        from dlstudy.io import atomic_write_bytes

        self._check_fitted("save")
        params = self.get_params()
        if isinstance(params["class_weight"], dict):  # JSON keys are strings: keep the labels' types as pairs
            params["class_weight"] = {"pairs": [[_py(k), float(v)] for k, v in params["class_weight"].items()]}
        meta = {"format": self.FORMAT, "params": params,
                "fitted": {k: _py(getattr(self, k)) for k in self._SCALARS if hasattr(self, k)}}
        arrays = {k: getattr(self, k) for k in self._ARRAYS if hasattr(self, k)}
        if arrays["classes_"].dtype.kind not in "biufU":
            arrays["classes_"] = arrays["classes_"].astype(str)  # object labels would need pickle
        arrays = {k: v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in arrays.items()}
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "LinearSVM":
        """A fitted LinearSVM from a file written by `save`; ValueError naming the file when it is not one."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                meta = json.loads(str(npz["meta"]))
                arrays = {k: npz[k] for k in cls._ARRAYS if k in npz.files}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a saved LinearSVM ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != cls.FORMAT:
            raise ValueError(f"{path}: not a saved LinearSVM (format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                             f"expected {cls.FORMAT!r})")
        params = dict(meta["params"])
        if isinstance(params.get("class_weight"), dict) and "pairs" in params["class_weight"]:
            params["class_weight"] = {k: v for k, v in params["class_weight"]["pairs"]}
        model = cls(**{k: v for k, v in params.items() if k in cls._param_names()})
        for key, value in meta["fitted"].items():
            setattr(model, key, value)
        for key, value in arrays.items():
            setattr(model, key, torch.from_numpy(value) if key.startswith("rff_") else value)
        if not {"coef_", "intercept_", "classes_"} <= set(arrays):
            raise ValueError(f"{path}: saved LinearSVM lacks coef_, intercept_ or classes_")
        return model


def _data_ptr(X) -> int:
    """Address of X's first element (0 for Python lists), to tell whether a tensor made from X shares its memory."""
    if isinstance(X, torch.Tensor):
        return X.data_ptr()
    return X.__array_interface__["data"][0] if isinstance(X, np.ndarray) else 0


def _py(value):
    """A NumPy / torch scalar as a plain Python value for JSON."""
    return value.item() if hasattr(value, "item") else value
