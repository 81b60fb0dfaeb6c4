"""Backbones from the field's model zoos as `ModelSpec`s like our own: `tv:<name>` for every torchvision
classification model, `timm:<name>` for every timm model (a pretrained tag may follow: `timm:resnet18.a1_in1k`).

Each builder returns a backbone `(B, C, H, W) -> (B, F)` pooled features, its keys the zoo's own, so the zoo's
ImageNet files load as they are (dlstudy.models.weights):
- torchvision: the model with its last Linear (the classifier) and the Dropout just before it replaced by
  `nn.Identity` (the Classifier has its own head and `model.dropout`); SqueezeNet, whose classifier is a conv, ends
  in a global average pool instead. 1-channel inputs: the first 3-channel conv is rebuilt for `in_channels`.
  ViTs take `image_size`, MaxViT `input_size`.
- timm: `timm.create_model(name, num_classes=0, in_chans=C)`, whose forward is timm's pooled pre-logits features;
  `img_size=image_size` for models whose pretrained config says `fixed_input_size` (ViTs, Swin, ...).
F is measured on the built backbone (dlstudy.models.backbones.build_backbone). Nothing here touches the network.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Callable

from torch import nn

from dlstudy.models.spec import ModelSpec

TV, TIMM = "tv:", "timm:"
PREFIXES = (TV, TIMM)


@functools.lru_cache(maxsize=1)
def tv_names() -> tuple[str, ...]:
    """torchvision's classification models (`list_models(module=torchvision.models)`), without the prefix."""
    import torchvision.models

    return tuple(torchvision.models.list_models(module=torchvision.models))


@functools.lru_cache(maxsize=1)
def timm_names() -> tuple[str, ...]:
    """Every timm architecture (`timm.list_models()`), without pretrained tags, without the prefix."""
    return tuple(_timm().list_models())


def zoo_names() -> list[str]:
    """Every `tv:` and `timm:` name model.name accepts (timm pretrained tags aside)."""
    return [TV + n for n in tv_names()] + [TIMM + n for n in timm_names()]


def _timm():
    from dlstudy.errors import ConfigError

    try:
        import timm
    except ImportError:
        raise ConfigError("model.name timm:...: the timm package is not installed; `pip install timm` "
                          "(a dependency of dlstudy)") from None
    return timm


# --------------------------------------------------------------------------------------------------- torchvision


def _tv_kwargs(arch: str, image_size: int) -> dict:
    if arch in ("googlenet", "inception_v3"):  # no auxiliary classifiers (they would change forward's output)
        return {"aux_logits": False, "init_weights": True}
    if arch.startswith("vit_"):
        return {"image_size": image_size}  # position embeddings for (image_size / patch)^2 tokens
    if arch.startswith("maxvit"):
        return {"input_size": (image_size, image_size)}
    return {}


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    setattr(root.get_submodule(parent_path) if parent_path else root, attr, module)


def _strip_classifier(net: nn.Module) -> None:
    """The classifier -> identity, in place: forward then returns the representation the classifier took."""
    linears = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:  # SqueezeNet: Dropout, 1x1 conv to 1000 classes, ReLU, pool; forward flattens after it
        net.classifier = nn.AdaptiveAvgPool2d(1)
        return
    last = linears[-1]
    _set_module(net, last, nn.Identity())
    parent_path, _, attr = last.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    if isinstance(parent, nn.Sequential) and attr.isdigit() and int(attr) > 0:
        before = str(int(attr) - 1)
        if isinstance(parent._modules[before], nn.Dropout):  # the classifier's dropout: Classifier has its own
            parent._modules[before] = nn.Identity()


def _adapt_input_conv(net: nn.Module, in_channels: int) -> None:
    """The first conv taking 3 channels rebuilt for `in_channels` (same shape otherwise, fresh weights; an ImageNet
    file's RGB kernel is summed into it when loaded, dlstudy.models.weights)."""
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            conv = nn.Conv2d(in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                             bias=m.bias is not None, padding_mode=m.padding_mode)
            _set_module(net, name, conv)
            return


def _tv_builder(arch: str) -> Callable[[int, int, bool], nn.Module]:
    def build(in_channels: int, image_size: int, small_stem: bool) -> nn.Module:
        import torchvision.models

        net = torchvision.models.get_model(arch, weights=None, **_tv_kwargs(arch, image_size))
        _strip_classifier(net)
        if in_channels != 3:
            _adapt_input_conv(net, in_channels)
        return net
    return build


def tv_spec(arch: str) -> ModelSpec:
    import torchvision.models

    enum = torchvision.models.get_model_weights(arch)  # every classification model has ImageNet weights
    return ModelSpec(TV + arch, _tv_builder(arch), None, weights_enum=enum.__name__, source="torchvision",
                     arch=arch)


# ---------------------------------------------------------------------------------------------------------- timm


def timm_pretrained_cfg(arch: str) -> dict:
    """timm's pretrained config of `arch` (its default tag, or the tag given): hf_hub_id, input_size, ..."""
    cfg = _timm().models.get_pretrained_cfg(arch)
    return cfg.to_dict() if cfg is not None else {}


def _timm_builder(arch: str) -> Callable[[int, int, bool], nn.Module]:
    def build(in_channels: int, image_size: int, small_stem: bool) -> nn.Module:
        kwargs = {"img_size": image_size} if timm_pretrained_cfg(arch).get("fixed_input_size") else {}
        return _timm().create_model(arch, pretrained=False, num_classes=0, in_chans=in_channels, **kwargs)
    return build


def timm_state_filter(state: dict, backbone: nn.Module) -> dict:
    """timm's own `checkpoint_filter_fn` of the model's module, where it has one: converts original checkpoints to
    timm's keys and resamples what depends on the input size (a ViT's position embeddings, its patch kernel)."""
    fn = getattr(sys.modules.get(type(backbone).__module__), "checkpoint_filter_fn", None)
    if fn is None:
        return state
    takes_model = len(inspect.signature(fn).parameters) >= 2
    return fn(state, backbone) if takes_model else fn(state)


def timm_spec(arch: str) -> ModelSpec:
    return ModelSpec(TIMM + arch, _timm_builder(arch), None, source="timm", arch=arch,
                     state_filter=timm_state_filter)


@functools.lru_cache(maxsize=None)
def resolve(name: str) -> ModelSpec | None:
    """The ModelSpec of a `tv:` / `timm:` name, None when it names nothing (no prefix, unknown model or tag)."""
    if name.startswith(TV):
        arch = name[len(TV):]
        return tv_spec(arch) if arch in tv_names() else None
    if name.startswith(TIMM):
        arch = name[len(TIMM):]
        timm = _timm()
        if not timm.is_model(arch):
            return None
        try:
            timm_pretrained_cfg(arch)  # an unknown pretrained tag (resnet18.nope) is an unknown name
        except RuntimeError:
            return None
        return timm_spec(arch)
    return None
