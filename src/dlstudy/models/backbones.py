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


def _densenet(factory: Callable[[], nn.Module]) -> Callable[[int, int, bool], nn.Module]:
    def build(in_channels: int, image_size: int, small_stem: bool) -> nn.Module:
        net = factory()
        stem_width = net.features.conv0.out_channels
        if small_stem:
            net.features.conv0 = _small_stem_conv(in_channels, stem_width)
            net.features.pool0 = nn.Identity()
        elif in_channels != 3:
            net.features.conv0 = nn.Conv2d(in_channels, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        return _DenseNetFeatures(net)
    return build


def _densenet121() -> nn.Module:
    from torchvision.models import densenet121

    return densenet121(weights=None)


def _densenet_small() -> nn.Module:
    # torchvision's DenseNet at growth 16, blocks 3-6-12-8, 32 stem channels: DenseNet-121's layout at ~1/10 of its
    # FLOPs (~920 vs ~180 img/s training at 64 px on 2 CPU cores, bf16), for the CPU tier's loss study.
    from torchvision.models import DenseNet

    return DenseNet(growth_rate=16, block_config=(3, 6, 12, 8), num_init_features=32)


def _resnet10(weights=None) -> nn.Module:
    # torchvision's ResNet with one BasicBlock per stage: ResNet-18's layout at about half its FLOPs.
    from torchvision.models import ResNet
    from torchvision.models.resnet import BasicBlock

    return ResNet(BasicBlock, [1, 1, 1, 1])


class _Airbench(nn.Module):
    """The airbench94 network (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU"): a 2x2 stem conv,
    three conv-pool-BN-GELU-conv-BN-GELU blocks (64, 256, 256 channels) and a global max-pool; (B, C, H, W) ->
    (B, 256). ~0.12 GMACs per 32 px image: ~1,100 img/s training on 2 CPU cores with bf16 autocast."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int] = (64, 256, 256), ceil_pool: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 24, kernel_size=2, bias=True), nn.GELU())
        blocks, cin = [], 24
        for width in widths:
            blocks.append(nn.Sequential(
                nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.MaxPool2d(2, ceil_mode=ceil_pool),
                nn.BatchNorm2d(width), nn.GELU(),
                nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.GELU()))
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveMaxPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.blocks(self.stem(x))), 1)  # (B, 256)


def _airbench(in_channels: int, image_size: int, small_stem: bool) -> nn.Module:
    # below 16 px three floor-pools would leave nothing (8 px digits: 7 -> 3 -> 1 -> 0); round up there instead
    return _Airbench(in_channels, ceil_pool=image_size < 16)


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
    "densenet121": ModelSpec("densenet121", _densenet(_densenet121), 1024, "DenseNet121_Weights", True,
                             "features.conv0", "classifier"),
    "resnet10": ModelSpec("resnet10", _resnet(_resnet10), 512, None, True, "conv1", "fc"),
    "densenet-small": ModelSpec("densenet-small", _densenet(_densenet_small), 258, None, True, "features.conv0",
                                "classifier"),
    "airbench": ModelSpec("airbench", _airbench, 256, None, True, "stem.0"),
    "smallcnn": ModelSpec("smallcnn", _smallcnn, 128, None, False),
    "mlp": ModelSpec("mlp", _mlp, 256, None, False),
}


def get_spec(name: str) -> ModelSpec:
    from dlstudy.errors import ConfigError

    if name not in MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}; valid models are {sorted(MODELS)}")
    return MODELS[name]
