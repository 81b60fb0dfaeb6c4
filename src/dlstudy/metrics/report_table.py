"""`classification_report`: per-class precision / recall / F1 / support plus accuracy and averages."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dlstudy.metrics.classification import confusion_matrix, prf_from_confusion

_HEADERS = ("precision", "recall", "f1-score", "support")


def classification_report(y_true: Any, y_pred: Any, *, num_classes: int | None = None,
                          classes: Sequence | None = None, class_names: Sequence[str] | None = None,
                          digits: int = 2, output_dict: bool = False, zero_division=0.0):
    """Text table (or dict) laid out exactly like sklearn.metrics.classification_report with labels=0..K-1.

    Rows are named by `class_names`, else by `classes`, else by the label index. The dict maps each name to
    {precision, recall, f1-score, support}, plus 'accuracy' (a float), 'macro avg' and 'weighted avg'.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes, classes=classes)
    k = cm.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else classes if classes is not None
                              else range(k))]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} entries but there are {k} classes")
    p, r, f, s = prf_from_confusion(cm, average=None, zero_division=zero_division)
    total = int(s.sum())
    averages = {"accuracy": float(np.trace(cm) / total)}
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = prf_from_confusion(cm, average=avg, zero_division=zero_division)
        averages[f"{avg} avg"] = (ap, ar, af, total)
    if output_dict:
        out: dict = {nm: dict(zip(_HEADERS, map(float, row))) for nm, *row in zip(names, p, r, f, s)}
        out["accuracy"] = averages["accuracy"]
        for key in ("macro avg", "weighted avg"):
            out[key] = dict(zip(_HEADERS, map(float, averages[key])))
        return out
    width = max(max(len(nm) for nm in names), len("weighted avg"), digits)
    text = ("{:>{width}s} " + " {:>9}" * 4).format("", *_HEADERS, width=width) + "\n\n"
    row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    for row in zip(names, p, r, f, s):
        text += row_fmt.format(*row, width=width, digits=digits)
    text += "\n"
    acc_fmt = "{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f}" + " {:>9}\n"
    text += acc_fmt.format("accuracy", "", "", averages["accuracy"], total, width=width, digits=digits)
    for key in ("macro avg", "weighted avg"):
        text += row_fmt.format(key, *averages[key], width=width, digits=digits)
    return text
