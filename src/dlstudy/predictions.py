"""`predictions.npz`: the per-sample scores a run or an evaluation made, so every metric can be recomputed later.

    y_true      (N,) int64 labels, indices into class_names
    scores      (N, K) float32, one column per class
    score_kind  "probabilities" (softmax of a network's logits, or k-NN votes) or "margins" (SVM decision values)
    class_names (K,) str
    sample_ids  (N,) str: the image's path inside the dataset where there is one, else "<official split>:<index>"

Stored with NumPy only (no pickled objects): `read_predictions` loads with allow_pickle=False, so a file from
elsewhere cannot run code. `metrics()` recomputes the metrics.json block with dlstudy.metrics.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlstudy.errors import DataError
from dlstudy.metrics import compute_metrics
from dlstudy.io import atomic_write

SCORE_KINDS = ("probabilities", "margins")
FIELDS = ("y_true", "scores", "score_kind", "class_names", "sample_ids")


@dataclass(frozen=True)
class Predictions:
    y_true: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N, K) float32
    score_kind: str
    class_names: list[str]
    sample_ids: np.ndarray  # (N,) str

    def __post_init__(self) -> None:
        n, k = len(self.y_true), len(self.class_names)
        if self.score_kind not in SCORE_KINDS:
            raise ValueError(f"score_kind must be one of {SCORE_KINDS}, got {self.score_kind!r}")
        if self.scores.shape != (n, k) or self.sample_ids.shape != (n,):
            raise ValueError(f"predictions: scores {self.scores.shape} and sample_ids {self.sample_ids.shape} must be "
                             f"({n}, {k}) and ({n},) for {n} labels and {k} classes")

    @property
    def y_pred(self) -> np.ndarray:
        """(N,) argmax of the scores."""
        return self.scores.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        """(N,) bool: was each sample classified right."""
        return self.y_pred == self.y_true

    def metrics(self) -> dict:
        """The metric keys of metrics.json (dlstudy.runs.METRIC_KEYS and more), recomputed from the scores."""
        return compute_metrics(self.y_true, self.scores, self.class_names, scores=self.score_kind)


def make_predictions(y_true, scores, score_kind: str, class_names, sample_ids=None) -> Predictions:
    """A Predictions with the stored dtypes (int64 labels, float32 scores, str ids; ids default to the index)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    ids = np.arange(len(y_true)).astype(str) if sample_ids is None else np.asarray(sample_ids, dtype=str)
    return Predictions(y_true, np.asarray(scores, dtype=np.float32), score_kind, [str(c) for c in class_names], ids)


def write_predictions(path: str | Path, preds: Predictions) -> Path:
    """Save atomically as an uncompressed .npz of plain arrays."""
    return atomic_write(path, lambda fh: np.savez(
        fh, y_true=preds.y_true, scores=preds.scores, score_kind=np.array(preds.score_kind),
        class_names=np.array(preds.class_names, dtype=str), sample_ids=preds.sample_ids))


def read_predictions(path: str | Path) -> Predictions:
    """Load a predictions file; DataError naming the file and the problem when it is not one."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [f for f in FIELDS if f not in npz.files]
            if missing:
                raise DataError(f"{path}: not a dlstudy predictions file (missing {missing}; expected {list(FIELDS)})")
            arrays = {f: npz[f] for f in FIELDS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: cannot read predictions ({exc}); expected a .npz written by dlstudy") from None
    try:
        return Predictions(arrays["y_true"].astype(np.int64), arrays["scores"].astype(np.float32),
                           str(arrays["score_kind"]), [str(c) for c in arrays["class_names"].tolist()],
                           arrays["sample_ids"].astype(str))
    except ValueError as exc:
        raise DataError(f"{path}: inconsistent predictions file: {exc}") from None
