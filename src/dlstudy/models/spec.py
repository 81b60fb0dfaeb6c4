"""`ModelSpec`: what a model name resolves to, the same record for our backbones and the model zoos' (tv:, timm:)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what model.name says: resnet18, tv:mobilenet_v3_small, timm:convnext_atto
    builder: Callable[[int, int, bool], nn.Module]  # (in_channels, image_size, small_stem) -> backbone
    feature_dim: int | None  # F of the pooled features; None: measured on the built backbone (zoo models)
    weights_enum: str | None = None  # torchvision.models.<enum> holding the ImageNet weights; None: none there
    has_batchnorm: bool | None = None  # BatchNorm needs batch size >= 2 in training; None: known once built
    head_prefix: str | None = None  # torchvision's classifier key prefix, dropped when loading its weights
    source: str = "dlstudy"  # dlstudy | torchvision | timm: where the architecture and its ImageNet file come from
    arch: str | None = None  # the zoo's own name (timm's may carry a pretrained tag: resnet18.a1_in1k)
    # a weights file's state dict in the zoo's format -> the backbone's keys (timm's checkpoint_filter_fn)
    state_filter: Callable[[dict, nn.Module], dict] | None = None
