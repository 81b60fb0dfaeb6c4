"""`Evaluator`: gather per-batch scores and labels, then compute the `metrics.json` dict in one go.

State is only the float32 (N, K) score buffer and the (N,) int64 labels: every metric is a pure function
of those two, called once in `compute()`. The kind of score is explicit, because one-vs-rest ROC AUC is not
invariant to a per-row softmax: 'logits' are turned into softmax probabilities at `update` time, 'probabilities'
are kept, 'margins' (an SVM's decision values) are ranked as they are. `metrics["score_kind"]` says which.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dlstudy.metrics._validate import check_labels, check_scores, is_tensor, to_numpy
from dlstudy.metrics.classification import prf_from_confusion, top_k_accuracy_score
from dlstudy.metrics.counts import confusion_counts
from dlstudy.metrics.ranking import micro_auc, ovr_auc_per_class, _warn_undefined

SCORE_KINDS = ("probabilities", "margins", "logits")  # what compute_metrics takes
_EVALUATOR_KINDS = ("auto", *SCORE_KINDS, "probs")  # "probs": the older spelling of "probabilities"


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)  # (B, K), shift for stability
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _looks_like_probs(x: np.ndarray) -> bool:
    return bool(x.min() >= 0 and x.max() <= 1 and np.allclose(x.sum(axis=1), 1.0, atol=1e-3))


class Evaluator:
    """Streaming evaluation of a K-class classifier.

    >>> ev = Evaluator(3)
    >>> ev.update(logits_batch, labels_batch)      # (B, 3) logits or probabilities, (B,) labels 0..2
    >>> metrics = ev.compute()                      # dict with every key of dlstudy.runs.METRIC_KEYS

    scores: 'auto' (probabilities if the first batch's rows are in [0, 1] and sum to 1, else logits), 'logits',
    'probabilities' ('probs') or 'margins'. After `compute()` (or any time) `y_true_` (N,) and `y_score_` (N, K) float32 feed ROC plots.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None, scores: str = "auto"):
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} entries but num_classes={num_classes}")
        if scores not in _EVALUATOR_KINDS:
            raise ValueError(f"scores must be one of {_EVALUATOR_KINDS[:-1]}, got {scores!r}")
        self.num_classes = int(num_classes)
        self.class_names = [str(c) for c in class_names] if class_names is not None else None
        self.scores = "probabilities" if scores == "probs" else scores
        self.reset()

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._kind = None if self.scores == "auto" else self.scores

    def update(self, y_score: Any, y_true: Any) -> None:
        """Add a batch: (B, K) logits or probabilities and (B,) integer labels in 0..K-1."""
        if is_tensor(y_score):
            y_score = y_score.detach().float().cpu()
        s = to_numpy(y_score).astype(np.float32, copy=False)
        y = to_numpy(y_true)
        if s.ndim != 2 or s.shape[1] != self.num_classes:
            raise ValueError(f"y_score must be (B, {self.num_classes}), got shape {s.shape}")
        if y.ndim != 1 or y.shape[0] != s.shape[0]:
            raise ValueError(f"y_true must be (B,) with B={s.shape[0]} matching y_score, got shape {y.shape}")
        if s.shape[0] == 0:
            return
        if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(f"y_true must hold integer labels in 0..{self.num_classes - 1}, got dtype {y.dtype} "
                             f"with range {y.min()}..{y.max()}")
        if not (np.isfinite(s.min()) and np.isfinite(s.max())):
            from dlstudy.errors import ScoresNotFinite  # a TrainingDiverged: a run failed, not bad input

            raise ScoresNotFinite("y_score contains NaN or inf: the model's weights diverged (lower optim.lr or set "
                                  "train.grad_clip)")
        if self._kind is None:
            self._kind = "probabilities" if _looks_like_probs(s) else "logits"
        elif self._kind == "probabilities" and not _looks_like_probs(s):
            raise ValueError("a batch's rows are not probabilities (in [0, 1], summing to 1) but earlier batches "
                             "were treated as probabilities; pass scores='logits' or 'probs' explicitly")
        self._scores.append(_softmax(s.copy()) if self._kind == "logits" else np.array(s, dtype=np.float32))
        self._labels.append(y.astype(np.int64))

    @property
    def score_kind(self) -> str:
        """What y_score_ holds: 'probabilities' (given, or softmax of logits) or 'margins'."""
        return "margins" if self._kind == "margins" else "probabilities"

    @property
    def n_samples(self) -> int:
        return sum(len(y) for y in self._labels)

    @property
    def y_true_(self) -> np.ndarray:
        """(N,) int64 labels gathered so far."""
        self._consolidate()
        return self._labels[0] if self._labels else np.zeros(0, dtype=np.int64)

    @property
    def y_score_(self) -> np.ndarray:
        """(N, K) float32 scores gathered so far (probabilities, or margins for scores='margins')."""
        self._consolidate()
        return self._scores[0] if self._scores else np.zeros((0, self.num_classes), dtype=np.float32)

    def _consolidate(self) -> None:
        # one concatenation, then the batch list is dropped: memory stays ~ one (N, K) buffer
        if len(self._scores) > 1:
            self._scores = [np.concatenate(self._scores)]
            self._labels = [np.concatenate(self._labels)]

    def compute(self) -> dict:
        """The metrics dict (keys of dlstudy.runs.METRIC_KEYS plus extras); NaN where undefined."""
        if not self._labels:
            raise ValueError("Evaluator.compute() called before any update(): no samples to evaluate")
        return compute_metrics(self.y_true_, self.y_score_, self.class_names, scores=self.score_kind)


def compute_metrics(y_true: np.ndarray, y_score: np.ndarray, class_names: Sequence[str] | None = None, *,
                    scores: str = "probabilities") -> dict:
    """The metrics.json dict from (N,) labels 0..K-1 and (N, K) scores; predictions are their argmax.

    scores: 'probabilities' and 'margins' (e.g. an SVM's decision values) are ranked as given by ROC AUC;
    'logits' get a softmax first (float32, as Evaluator does). The dict's "score_kind" records which it was.
    """
    if scores not in SCORE_KINDS:
        raise ValueError(f"scores must be one of {SCORE_KINDS}, got {scores!r}")
    y_score = to_numpy(check_scores(y_score, ndim=(2,)))
    if scores == "logits":
        y_score = _softmax(y_score.astype(np.float32))
        scores = "probabilities"
    y_true = check_labels(y_true, "y_true", y_score.shape[1])
    if y_true.shape[0] != y_score.shape[0]:
        raise ValueError(f"y_true has {y_true.shape[0]} samples but y_score has {y_score.shape[0]} rows")
    n, k = y_score.shape
    names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    y_pred = y_score.argmax(axis=1)
    cm = confusion_counts(y_true, y_pred, k)  # (K, K), rows = true class
    prec, rec, f1, support = prf_from_confusion(cm, average=None, zero_division=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class_acc = np.diag(cm) / cm.sum(axis=1)  # NaN for classes absent from y_true
    macro = prf_from_confusion(cm, average="macro", zero_division=0.0)[:3]  # precision, recall, F1
    aucs, counts = ovr_auc_per_class(y_true, y_score)
    _warn_undefined(aucs, counts, n, names)
    defined = ~np.isnan(aucs)
    out = {
        "accuracy": float(np.trace(cm) / n),
        "per_class_accuracy": per_class_acc.tolist(),
        "precision_macro": macro[0], "recall_macro": macro[1], "f1_macro": macro[2],
        "confusion_matrix": cm.tolist(),
        "roc_auc_macro": float(np.mean(aucs[defined])) if defined.any() else float("nan"),
        "roc_auc_micro": micro_auc(y_true, y_score),
        "roc_auc_per_class": aucs.tolist(),
        "num_classes": k, "class_names": names, "n_samples": n,
        "balanced_accuracy": float(np.nanmean(per_class_acc)) if (~np.isnan(per_class_acc)).any() else float("nan"),
        "precision_per_class": prec.tolist(), "recall_per_class": rec.tolist(), "f1_per_class": f1.tolist(),
        "support_per_class": support.tolist(), "score_kind": scores,
    }
    if k > 5:
        out["top5_accuracy"] = top_k_accuracy_score(y_true, y_score, k=5)
    return out
