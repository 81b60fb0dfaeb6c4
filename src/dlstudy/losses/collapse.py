"""Collapse guard for triplet training.

When an embedding network collapses, every embedding maps to (nearly) the same point: every distance is 0, so
every triplet has loss exactly `margin` and is active, and the training loss sits *pinned at the margin* while
nothing is learned (a known failure of batch-hard / hardest-negative mining early in training). We flag it when
both signs are present:
    spread     = mean_i ||x_i - mean(x)|| / mean_i ||x_i||   (scale-free; about 1 for spread-out unit vectors)
    loss_ratio = mean of the last `window` losses / margin   (1 when pinned)
    collapsed  = spread < spread_tol and |loss_ratio - 1| < loss_tol
With the soft-margin loss, pass margin = log(2), the value softplus(0) a collapsed batch gives.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Sequence

import torch

log = logging.getLogger(__name__)


def embedding_spread(embeddings: torch.Tensor) -> float:
    """mean ||x_i - mean(x)|| / mean ||x_i|| of (N, E) embeddings; 0 for identical rows, 0 for all-zero input."""
    x = torch.as_tensor(embeddings).double()
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"embedding_spread: expected (N >= 2, E) embeddings, got {tuple(x.shape)}")
    scale = x.norm(dim=1).mean()
    if scale == 0:
        return 0.0
    return float((x - x.mean(dim=0)).norm(dim=1).mean() / scale)


def collapse_diagnostics(embeddings: torch.Tensor, loss_history: Sequence[float], margin: float,
                         window: int = 5, spread_tol: float = 0.05, loss_tol: float = 0.05,
                         warn: bool = True) -> dict:
    """{"collapsed", "spread", "loss_ratio", "warning"}; warns (warnings + log) when collapsed and `warn`.

    loss_history: training losses in order (per step or per epoch); an empty history judges by spread alone.
    """
    spread = embedding_spread(embeddings)
    recent = [float(v) for v in list(loss_history)[-window:] if v is not None and math.isfinite(float(v))]
    loss_ratio = (sum(recent) / len(recent)) / margin if recent and margin > 0 else math.nan
    pinned = (not recent) or (math.isfinite(loss_ratio) and abs(loss_ratio - 1.0) < loss_tol)
    collapsed = spread < spread_tol and pinned
    message = None
    if collapsed:
        message = (f"embedding collapse: embedding spread {spread:.3g} (< {spread_tol}) and triplet loss at "
                   f"{loss_ratio:.3g} x margin; try semihard mining, a smaller learning rate, or adding CE")
        if warn:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            log.warning(message)
    return {"collapsed": collapsed, "spread": spread, "loss_ratio": loss_ratio, "warning": message}
