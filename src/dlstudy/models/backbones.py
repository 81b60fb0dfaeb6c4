"""Backbone registry: each entry builds a feature extractor `(B, C, H, W) -> (B, F)` without a classifier.

`MODELS` maps model.name to a `ModelSpec`: our own backbones by their short names (resnet18, smallcnn, ...), and, on
lookup, every `tv:<name>` / `timm:<name>` of the model zoos (dlstudy.models.zoo). One `ModelSpec` shape for all
three, so `build_backbone`, the `Classifier` around it and the weights loader are one code path.

Torchvision models are built with `weights=None` (weights are loaded separately by `dlstudy.models.weights`), their
classifier replaced by `nn.Identity`, so their state-dict keys stay torchvision's and an ImageNet file loads as is.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Callable

import torch
from torch import nn

from dlstudy.models.spec import ModelSpec


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

    def __init__(self, in_channels: int, widths: tuple[int, int, int] = (64, 256, 256), ceil_pool: bool = False,
                 stem_conv: nn.Module | None = None):
        super().__init__()
        stem_conv = stem_conv if stem_conv is not None else nn.Conv2d(in_channels, 24, kernel_size=2, bias=True)
        self.stem = nn.Sequential(stem_conv, nn.GELU())
        blocks, cin = [], stem_conv.out_channels
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


class _Airbench94(_Airbench):
    """airbench94's initialisation of the same network (Jordan 2024, sections 3.2-3.3): the 2x2 stem is a fixed
    patch-whitening filter computed from training images (`init_from_data`; a buffer, never trained, only its
    bias is) and every 3x3 conv starts as the identity on its first channels (dirac), an implicit residual. Both
    are free at run time and, in airbench's ablations, cut the epochs to 94% from 35 to 18."""

    WHITEN_EPS = 5e-4  # airbench's: added to the patch covariance's eigenvalues before the inverse square root

    def __init__(self, in_channels: int, ceil_pool: bool = False):
        # the whitening filters of C-channel 2x2 patches and their negatives: 2 * C * 4 (24 for RGB, as airbench)
        super().__init__(in_channels, ceil_pool=ceil_pool, stem_conv=_WhiteningConv(in_channels, 2 * in_channels * 4))
        for block in self.blocks:
            for conv in (m for m in block if isinstance(m, nn.Conv2d)):
                nn.init.dirac_(conv.weight.data[:conv.in_channels])

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the stem to whiten the 2x2 patches of `images` ((N, C, H, W), normalised as training sees them)."""
        self.stem[0].whiten(images, self.WHITEN_EPS)


class _WhiteningConv(nn.Module):
    """A 2x2 conv whose filters are a buffer (fixed: set by `whiten`) and whose bias trains."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.out_channels = out_channels
        weight = torch.empty(out_channels, in_channels, 2, 2)
        nn.init.kaiming_uniform_(weight, a=5 ** 0.5)  # nn.Conv2d's own init until `whiten` is called
        self.register_buffer("weight", weight)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight, self.bias)

    def whiten(self, images: torch.Tensor, eps: float) -> None:
        """Filters = the eigenvectors of the (uncentred) 2x2 patch covariance of `images`, largest first, each
        scaled by 1 / sqrt(eigenvalue + eps), then their negatives: the outputs are decorrelated, unit variance."""
        c = images.shape[1]
        covariance = torch.zeros(c * 4, c * 4, dtype=torch.float64)
        count = 0
        for chunk in images.split(1000):
            patches = nn.functional.unfold(chunk.float().cpu(), kernel_size=2).double()  # (n, C*4, L)
            covariance += torch.einsum("npl,nql->pq", patches, patches)
            count += patches.shape[0] * patches.shape[2]
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance / max(count, 1))  # ascending
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).flip(0)  # (C*4, C*4)
        filters = filters.reshape(c * 4, c, 2, 2)  # unfold's patch order is (C, kh, kw), a conv filter's
        self.weight.copy_(torch.cat([filters, -filters]))


def _airbench94(in_channels: int, image_size: int, small_stem: bool) -> nn.Module:
    return _Airbench94(in_channels, ceil_pool=image_size < 16)


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


OWN_MODELS: dict[str, ModelSpec] = {
    "resnet18": ModelSpec("resnet18", _resnet(_tv("resnet18")), 512, "ResNet18_Weights", True, "fc"),
    "resnet50": ModelSpec("resnet50", _resnet(_tv("resnet50")), 2048, "ResNet50_Weights", True, "fc"),
    "densenet121": ModelSpec("densenet121", _densenet(_densenet121), 1024, "DenseNet121_Weights", True,
                             "classifier"),
    "resnet10": ModelSpec("resnet10", _resnet(_resnet10), 512, None, True, "fc"),
    "densenet-small": ModelSpec("densenet-small", _densenet(_densenet_small), 258, None, True, "classifier"),
    "airbench": ModelSpec("airbench", _airbench, 256, None, True),
    "airbench94": ModelSpec("airbench94", _airbench94, 256, None, True),
    "smallcnn": ModelSpec("smallcnn", _smallcnn, 128, None, False),
    "mlp": ModelSpec("mlp", _mlp, 256, None, False),
}


class ModelRegistry(Mapping[str, ModelSpec]):
    """model.name -> ModelSpec. Iterating (and len) gives our own short names; a lookup (`[]`, `in`, `.get`) also
    resolves every `tv:<name>` / `timm:<name>` of the model zoos, lazily: `"timm:convnext_atto" in MODELS` is True
    without listing timm's thousand models. `dlstudy models` lists them all (dlstudy.models.zoo.zoo_names)."""

    def __init__(self, own: dict[str, ModelSpec]):
        self._own = own

    def __getitem__(self, name: str) -> ModelSpec:
        if name in self._own:
            return self._own[name]
        from dlstudy.models.zoo import resolve

        spec = resolve(name) if isinstance(name, str) else None
        if spec is None:
            raise KeyError(name)
        return spec

    def __iter__(self) -> Iterator[str]:
        return iter(self._own)

    def __len__(self) -> int:
        return len(self._own)


MODELS = ModelRegistry(OWN_MODELS)


def unknown_model_message(name: str, key: str = "model.name") -> str:
    """`key`: unknown model, with the close matches among every name (ours, tv:, timm:) and where to list them."""
    from dlstudy.models.zoo import PREFIXES, zoo_names

    everything = list(OWN_MODELS) + zoo_names()
    close = difflib.get_close_matches(name, everything, n=5, cutoff=0.6)
    if not close and not name.startswith(PREFIXES):  # a bare zoo name: resnet34 -> tv:resnet34, timm:resnet34
        close = [n for n in (p + name for p in PREFIXES) if n in everything]
    hint = f"close matches: {', '.join(close)}; " if close else ""
    return (f"{key}: unknown model {name!r}; {hint}our own models are {sorted(OWN_MODELS)}, and tv:<name> / "
            f"timm:<name> name any torchvision / timm model (`dlstudy models PATTERN` lists them)")


def get_spec(name: str) -> ModelSpec:
    from dlstudy.errors import ConfigError

    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(unknown_model_message(name)) from None


@torch.no_grad()
def measure_feature_dim(backbone: nn.Module, name: str, in_channels: int, image_size: int) -> int:
    """F of `backbone`'s (B, F) output, from one zero image on its device (meta included); a ConfigError naming
    the model and the image shape when it cannot take such images (too small for its downsampling, a ViT's size
    not a multiple of its patch)."""
    param = next(backbone.parameters(), None)
    x = torch.zeros(1, in_channels, image_size, image_size, device=param.device if param is not None else None)
    was_training = backbone.training
    backbone.eval()
    try:
        out = backbone(x)
    except Exception as exc:  # noqa: BLE001 - each architecture fails its own way on a size it cannot take
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise _shape_error(name, in_channels, image_size, f"{type(exc).__name__}: {first}") from None
    finally:
        backbone.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise _shape_error(name, in_channels, image_size, f"it returns {got}, not (B, F) pooled features")
    return int(out.shape[1])


def _shape_error(name: str, in_channels: int, image_size: int, why: str):
    from dlstudy.errors import ConfigError

    return ConfigError(f"model.name={name!r} does not take {in_channels}-channel {image_size}x{image_size} images "
                       f"({why}); set data.image_size to a size it accepts (ImageNet models: 224; ViTs: a "
                       f"multiple of the patch size)")


def build_backbone(spec: ModelSpec, in_channels: int, image_size: int, small_stem: bool) -> tuple[nn.Module, int]:
    """(backbone, F): `spec`'s feature extractor for `in_channels` x image_size^2 images, with random weights.

    Zoo models are measured with one forward pass (F, and a clear error for a size they cannot take)."""
    if spec.source == "dlstudy":
        return spec.builder(in_channels, image_size, small_stem), spec.feature_dim
    try:
        backbone = spec.builder(in_channels, image_size, small_stem)
    except Exception as exc:  # noqa: BLE001 - e.g. a ViT's image size that is not a multiple of its patch
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise _shape_error(spec.name, in_channels, image_size, f"{type(exc).__name__}: {first}") from None
    return backbone, measure_feature_dim(backbone, spec.name, in_channels, image_size)
