"""Backbone registry (our own, `tv:<name>`, `timm:<name>`), the `Classifier` interface (timm's forward_features /
forward_head), weights resolution (`none | imagenet | PATH | RUN_DIR`), the one batched forward pass
(`forward_batches`) and the BatchNorm guard."""

from __future__ import annotations

import logging

from dlstudy.models.backbones import MODELS, ModelSpec, build_backbone, get_spec
from dlstudy.models.batchnorm import check_batchnorm_batch_size, freeze_batchnorm
from dlstudy.models.classifier import Classifier
from dlstudy.models.forward import OUTPUTS, forward_batches
from dlstudy.models.weights import WeightsReport, load_weights

__all__ = ["MODELS", "ModelSpec", "get_spec", "Classifier", "build_model", "load_weights", "WeightsReport", "use_small_stem",
           "OUTPUTS", "forward_batches", "check_batchnorm_batch_size", "freeze_batchnorm"]

log = logging.getLogger(__name__)


def use_small_stem(cfg_value: bool | None, image_size: int) -> bool:
    """The 3x3 stride-1 stem without max-pool: explicit setting, else on for images of at most 64 px."""
    return bool(cfg_value) if cfg_value is not None else image_size <= 64


def _small_stem(spec: ModelSpec, cfg_value: bool | None, image_size: int) -> bool:
    """use_small_stem for our own backbones; a zoo model keeps its architecture (an explicit true is refused)."""
    if spec.source == "dlstudy":
        return use_small_stem(cfg_value, image_size)
    if cfg_value:
        from dlstudy.errors import ConfigError

        raise ConfigError(f"model.small_input_stem=true: only dlstudy's own resnets / densenets / airbench have a "
                          f"small-input stem; {spec.name} keeps its own architecture (leave it null or false)")
    return False


def build_model(cfg, num_classes: int, in_channels: int = 3, image_size: int = 224,
                frozen_bn: bool = False) -> Classifier:
    """A `Classifier` for `cfg` (a ModelConfig) with its weights loaded; the head is always new (random).

    One path for every source: `get_spec` resolves model.name (ours, tv:, timm:), `build_backbone` gives the
    (B, F) feature extractor and F, the same Classifier wraps it, `load_weights` fills it.
    frozen_bn (the engine passes train.frozen_bn): BatchNorm statistics stay fixed in training (Classifier).
    Loaded, new and skipped tensors are logged and kept on `model.weights_report`.
    """
    spec = get_spec(cfg.name)
    small = _small_stem(spec, cfg.small_input_stem, image_size)
    backbone, feature_dim = build_backbone(spec, in_channels, image_size, small)
    model = Classifier(backbone, feature_dim, num_classes, cfg.embedding_dim, cfg.dropout, name=spec.name,
                       frozen_bn=frozen_bn)
    model.small_input_stem = small
    model.weights_report = load_weights(model, spec, cfg.weights, in_channels)
    if model.weights_report is not None:
        log.info("%s", model.weights_report.summary())
    return model
