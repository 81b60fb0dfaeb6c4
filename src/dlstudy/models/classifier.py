"""One interface for every backbone: pooled features, a replaceable linear head, an optional embedding head."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from dlstudy.models.batchnorm import freeze_batchnorm


class Classifier(nn.Module):
    """backbone -> (B, F) features -> dropout -> head (B, K); optional embedding head (B, E), L2-normalised.

    frozen_bn: every BatchNorm layer stays in eval mode, also in train() (running statistics fixed, affine weights
    still trained), so BatchNorm models can train at batch size 1 (train.frozen_bn).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, embedding_dim: int | None = None,
                 dropout: float = 0.0, name: str = "", frozen_bn: bool = False):
        super().__init__()
        self.name = name
        self.frozen_bn = frozen_bn
        self._backbone_frozen = False
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(feature_dim, num_classes)
        self.embedding = nn.Linear(feature_dim, embedding_dim) if embedding_dim else None

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, F) pooled features."""
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, F) pooled features -> (B, K) logits; pre_logits=True: the representation before the classifier
        that metric losses train, the (B, E) L2-normalised embedding, or the features themselves without an
        embedding head (timm's `forward_head(x, pre_logits=True)`)."""
        if not pre_logits:
            return self.head(self.dropout(features))
        if self.embedding is None:
            return features
        return nn.functional.normalize(self.embedding(features), dim=1)  # (B, E) on the unit sphere

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """{"logits": (B, K), "features": (B, F), "embedding": (B, E) or None without an embedding head}."""
        features = self.forward_features(x)  # (B, F)
        logits = self.forward_head(features)  # (B, K)
        embedding = self.forward_head(features, pre_logits=True) if self.embedding is not None else None
        return {"logits": logits, "features": features, "embedding": embedding}

    def reset_classifier(self, num_classes: int) -> None:
        """A new randomly initialised head for `num_classes` classes (same device and dtype as the old one)."""
        old = self.head
        self.head = nn.Linear(self.feature_dim, num_classes).to(device=old.weight.device, dtype=old.weight.dtype)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters trained from the first epoch on: the classification head and the embedding head."""
        yield from self.head.parameters()
        if self.embedding is not None:
            yield from self.embedding.parameters()

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Head-only training: no gradients for the backbone and its BatchNorm statistics fixed (eval mode)."""
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self._backbone_frozen = frozen
        self.train(self.training)

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.eval()  # a frozen backbone must not update BatchNorm running statistics
        if self.frozen_bn:  # BN statistics fixed (batch size 1 allowed)
            freeze_batchnorm(self)
        return self
