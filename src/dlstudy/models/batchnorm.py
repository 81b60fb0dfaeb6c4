"""BatchNorm at batch size 1: find the BN layers, freeze their statistics, refuse degenerate batch statistics.

    check_batchnorm_batch_size(...)  batch size 1 + BatchNorm is an error unless train.frozen_bn
    freeze_batchnorm(model)          BN layers to eval mode (Classifier.train() keeps them so when frozen_bn)
"""

from __future__ import annotations

from torch import nn

from dlstudy.errors import ConfigError


def batchnorm_layers(model: nn.Module) -> list[str]:
    """Names of the BatchNorm modules (1d/2d/3d, SyncBatchNorm) in `model`."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm layer in eval mode: running statistics fixed, affine weight/bias still trained.

    model.train() switches them back: a `Classifier` whose `frozen_bn` attribute is set (the train job sets it from
    train.frozen_bn) re-freezes them in its own train(); any other model needs this after every model.train().
    Returns the count.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            count += 1
    return count


def check_batchnorm_batch_size(model: nn.Module, batch_size: int, frozen_bn: bool) -> None:
    """Refuse BatchNorm training at batch size 1 (one-sample batch statistics are degenerate) unless frozen_bn.

    With frozen_bn the BN layers are frozen here (see freeze_batchnorm) at any batch size.
    """
    names = batchnorm_layers(model)
    if not names:
        return
    if frozen_bn:
        freeze_batchnorm(model)
        return
    if batch_size == 1:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ConfigError(f"train.batch_size=1 with a model containing BatchNorm ({shown}): the batch statistics "
                          "of one sample are degenerate. Use a model without BatchNorm (model.name: mlp, or "
                          "smallcnn with GroupNorm) or set train.frozen_bn: true to keep BN statistics fixed")
