"""Center loss (Wen et al., ECCV 2016): pull each deep feature towards a learned centre of its class.

    L_C = 1/2 * mean_i ||x_i - c_{y_i}||^2        (the paper sums over the batch; we average so that the weight
                                                   lambda does not depend on the batch size)
Centre update (the paper's Algorithm 1, eq. 4), applied after each optimiser step on the batch just seen:
    delta_c_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)      n_j = number of samples of class j in the batch
    c_j <- c_j - alpha * delta_c_j
The "1 +" keeps the step bounded for classes with few samples; classes absent from the batch do not move. Under
DDP the batch sums are all-reduced, so the update is that of the global batch and the ranks' centres agree.
The centres are *not* trained by the model's optimiser (no gradient, no weight decay, no momentum): they are a
parameter with requires_grad=False, so they sit in state_dict / .to(device) / parameters() but any optimiser skips
them (their .grad stays None).
"""

from __future__ import annotations

import torch
from torch import nn


def center_loss(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """1/2 * mean_i ||x_i - c_{y_i}||^2 for features (B, F), labels (B,) and centers (K, F)."""
    if features.ndim != 2 or centers.ndim != 2 or features.shape[1] != centers.shape[1]:
        raise ValueError(f"center_loss: expected features (B, F) and centers (K, F), got "
                         f"{tuple(features.shape)} and {tuple(centers.shape)}")
    dtype = torch.promote_types(features.dtype, centers.dtype)  # fp32 centres keep bf16/fp16 features exact
    diff = features.to(dtype) - centers[labels].to(dtype)  # (B, F)
    return 0.5 * (diff * diff).sum(dim=1).mean()


@torch.no_grad()
def center_update(centers: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, alpha: float,
                  sync: bool = True) -> None:
    """In place: c_j -= alpha * sum_{i: y_i=j} (c_j - x_i) / (1 + n_j), Wen et al. 2016 eq. 4.

    Under torch.distributed (and `sync`), the sums and counts are all-reduced first, so the update uses the
    global batch and every rank's centres stay identical.
    """
    features = features.to(centers.dtype)
    k = centers.shape[0]
    counts = torch.bincount(labels, minlength=k).to(centers.dtype)  # (K,) n_j
    diff_sum = torch.zeros_like(centers).index_add_(0, labels, centers[labels] - features)  # (K, F)
    if sync and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(counts)
        torch.distributed.all_reduce(diff_sum)
    centers.sub_(alpha * diff_sum / (1.0 + counts)[:, None])


class CenterLoss(nn.Module):
    """Class centres (num_classes, feature_dim) and the centre loss; `update()` applies the Wen et al. rule.

    forward(features, labels) returns the (unweighted) loss and, when gradients are enabled (a training step, not
    an evaluation under no_grad), remembers the detached batch so that `update()` (called by the objective's
    after_step, after optimizer.step) can move the centres. Keyed on grad mode rather than .training so that an
    evaluation that leaves the objective in eval mode cannot silently stop the centre updates.
    """

    def __init__(self, num_classes: int, feature_dim: int, alpha: float = 0.5):
        super().__init__()
        if num_classes < 1 or feature_dim < 1:
            raise ValueError(f"CenterLoss: num_classes and feature_dim must be >= 1, got {num_classes}, "
                             f"{feature_dim}")
        # Zero init as in the paper's released code: centres start at the origin and move at rate alpha.
        self.centers = nn.Parameter(torch.zeros(num_classes, feature_dim), requires_grad=False)
        self.alpha = alpha
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self._pending = (features.detach(), labels.detach())
        return center_loss(features, labels, self.centers)

    def update(self) -> None:
        """Apply the centre update for the last training batch (no-op when there is none)."""
        if self._pending is not None:
            center_update(self.centers.data, *self._pending, alpha=self.alpha)
            self._pending = None

    def extra_repr(self) -> str:
        return f"num_classes={self.centers.shape[0]}, feature_dim={self.centers.shape[1]}, alpha={self.alpha}"
