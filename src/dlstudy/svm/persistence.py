"""`LinearSVM.save` / `LinearSVM.load`: a fitted model as a NumPy .npz of plain arrays + JSON text, read without pickle."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "dlstudy.LinearSVM/1"
ARRAYS = ("coef_", "intercept_", "classes_", "mean_", "scale_", "rff_omega_", "rff_beta_")
SCALARS = ("n_features_in_", "n_iter_", "objective_", "dual_gap_", "converged_", "temperature_", "calibration_",
           "train_accuracy_", "gamma_")


def save_model(model, path: str | Path) -> Path:
    """Write the fitted `model` to `path` atomically; returns the path.

    Holds the hyper-parameters, coef_, intercept_, classes_, the standardisation and the RFF draw: everything
    `load_model` needs to give the same decision_function, and nothing that needs pickle to read.
    """
    from dlstudy.io import atomic_write

    params = model.get_params()
    if isinstance(params["class_weight"], dict):  # JSON keys are strings: keep the labels' types as pairs
        params["class_weight"] = {"pairs": [[_py(k), float(v)] for k, v in params["class_weight"].items()]}
    meta = {"format": FORMAT, "params": params,
            "fitted": {k: _py(getattr(model, k)) for k in SCALARS if hasattr(model, k)}}
    arrays = {k: getattr(model, k) for k in ARRAYS if hasattr(model, k)}
    if arrays["classes_"].dtype.kind not in "biufU":
        arrays["classes_"] = arrays["classes_"].astype(str)  # object labels would need pickle
    arrays = {k: v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in arrays.items()}
    return atomic_write(path, lambda fh: np.savez(fh, meta=np.array(json.dumps(meta)), **arrays))


def load_model(cls, path: str | Path):
    """A fitted `cls` (LinearSVM) from a file written by `save_model`; ValueError naming the file when it is not one."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            arrays = {k: npz[k] for k in ARRAYS if k in npz.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a saved LinearSVM ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: not a saved LinearSVM (format {found!r}, expected {FORMAT!r})")
    params = dict(meta["params"])
    if isinstance(params.get("class_weight"), dict) and "pairs" in params["class_weight"]:
        params["class_weight"] = {k: v for k, v in params["class_weight"]["pairs"]}
    model = cls(**{k: v for k, v in params.items() if k in cls._get_param_names()})
    for key, value in meta["fitted"].items():
        setattr(model, key, value)
    for key, value in arrays.items():
        setattr(model, key, torch.from_numpy(value) if key.startswith("rff_") else value)
    if not {"coef_", "intercept_", "classes_"} <= set(arrays):
        raise ValueError(f"{path}: saved LinearSVM lacks coef_, intercept_ or classes_")
    return model


def _py(value):
    """A NumPy / torch scalar as a plain Python value for JSON."""
    return value.item() if hasattr(value, "item") else value
