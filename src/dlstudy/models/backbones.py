"""Backbone registry: each entry builds a feature extractor `(B, C, H, W) -> (B, F)` without a classifier.

Torchvision models are built with `weights=None` (weights are loaded separately by `dlstudy.models.weights`), their
classifier replaced by `nn.Identity`, so their state-dict keys stay torchvision's and an ImageNet file loads as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[[int, int, bool], nn.Module]  # (in_channels, image_size, small_stem) -> backbone
    feature_dim: int  # F of the pooled features
    weights_enum: str | None  # torchvision.models.<enum> holding the ImageNet weights; None: no pretrained weights
    has_batchnorm: bool  # BatchNorm needs batch size >= 2 in training (the optimizer study's batch-1 arm)
    stem_conv: str | None = None  # state-dict key prefix of the first conv (adapted to 1-channel inputs, 3x3 stem)
    head_prefix: str | None = None  # torchvision's classifier key prefix, dropped when loading its weights


def _small_stem_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    # 3x3 stride-1 stem for 32/64 px images: the ImageNet 7x7/2 conv + max-pool would shrink 32 px to 8 px at once.
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


def _resnet(factory: Callable[..., nn.Module]) -> Callable[[int, int, bool], nn.Module]:
    def build(in_channels: int, image_size: int, small_stem: bool) -> nn.Module:
        net = factory(weights=None)
        if small_stem:
            net.conv1 = _small_stem_conv(in_channels, 64)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.fc = nn.Identity()  # (B, F) after the global average pool
        return net
    return build


class _DenseNetFeatures(nn.Module):
    """torchvision DenseNet without its classifier; keeps the `features.*` key names."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.features = net.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.features(x))  # (B, 1024, h, w)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def _densenet121(in_channels: int, image_size: int, small_stem: bool) -> nn.Module:
    from torchvision.models import densenet121

    net = densenet121(weights=None)
    if small_stem:
        net.features.conv0 = _small_stem_conv(in_channels, 64)
        net.features.pool0 = nn.Identity()
    elif in_channels != 3:
        net.features.conv0 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return _DenseNetFeatures(net)


def _conv_block(cin: int, cout: int) -> list[nn.Module]:
    # GroupNorm instead of BatchNorm: statistics per sample, so batch size 1 (vanilla SGD) trains the same way.
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(8, cout), nn.ReLU(inplace=True)]


def _smallcnn(in_channels: int, image_size: int, small_stem: bool) -> nn.Module:
    layers = [*_conv_block(in_channels, 32), *_conv_block(32, 32), nn.MaxPool2d(2),
              *_conv_block(32, 64), *_conv_block(64, 64), nn.MaxPool2d(2),
              *_conv_block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten()]  # (B, 128)
    return nn.Sequential(*layers)


def _mlp(in_channels: int, image_size: int, small_stem: bool) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, 256), nn.ReLU(inplace=True),
                         nn.Linear(256, 256), nn.ReLU(inplace=True))  # (B, 256)


def _tv(name: str) -> Callable[..., nn.Module]:
    def factory(**kwargs) -> nn.Module:
        import torchvision.models

        return getattr(torchvision.models, name)(**kwargs)
    return factory


MODELS: dict[str, ModelSpec] = {
    "resnet18": ModelSpec("resnet18", _resnet(_tv("resnet18")), 512, "ResNet18_Weights", True, "conv1", "fc"),
    "resnet50": ModelSpec("resnet50", _resnet(_tv("resnet50")), 2048, "ResNet50_Weights", True, "conv1", "fc"),
    "densenet121": ModelSpec("densenet121", _densenet121, 1024, "DenseNet121_Weights", True, "features.conv0",
                             "classifier"),
    "smallcnn": ModelSpec("smallcnn", _smallcnn, 128, None, False),
    "mlp": ModelSpec("mlp", _mlp, 256, None, False),
}


def get_spec(name: str) -> ModelSpec:
    from dlstudy.errors import ConfigError

    if name not in MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}; valid models are {sorted(MODELS)}")
    return MODELS[name]
