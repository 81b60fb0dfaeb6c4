"""The one batched forward pass: a network over many images, in eval mode, without gradients.

    forward_batches(model, images, output=..., mean, std, batch_size, device)   (N, D) float32 on the CPU
    iter_forward(model, split, ...)                                             per batch: (out, labels, loss)

`output` picks what is collected, through the `Classifier` interface (timm's):
    logits     forward_head(forward_features(x))                        (B, K)
    features   forward_features(x), the pooled backbone features        (B, F)
    embedding  forward_head(forward_features(x), pre_logits=True)       (B, E), the features without an embedding head
The SVM's backbone features, the embedding evaluation, inference and the engine's `predict` all run through
`iter_forward`, so batching, normalisation, autocast and memory format are one code path: under bf16 autocast the
scores depend in their last bits on the batch composition, so the batch size is part of the numbers.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from dlstudy.config import TTA_MODES
from dlstudy.data import Split, batches, ensure_channels
from dlstudy.progress import progress

OUTPUTS = ("logits", "features", "embedding")
# eval.tta (its modes: dlstudy.config.TTA_MODES): test-time augmentation of the logits. flip: the mean of the
# logits of each image and its mirror image (airbench94's cheapest part: one more forward pass; +0.009 to +0.013
# CIFAR-10 test accuracy measured on airbench runs of the CPU tier's size); none: one pass.
LossFn = Callable[[dict, torch.Tensor], torch.Tensor]  # (model outputs, labels (B,)) -> scalar loss


def autocast(device: str | torch.device, amp_dtype: torch.dtype | None):
    """Mixed precision at `amp_dtype` (None: float32); the caller resolved the dtype for this device."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype)


def batch_output(model: nn.Module, x: torch.Tensor, output: str) -> torch.Tensor:
    """(B, D) `output` of one normalised batch x (B, C, H, W); only the parts of the model it needs are run."""
    features = model.forward_features(x)  # (B, F)
    if output == "features":
        return features
    return model.forward_head(features, pre_logits=output == "embedding")


def _flip_mean(first: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
    return (first.float() + mirrored.float()) / 2


def _batch_forward(model: nn.Module, x: torch.Tensor, output: str, loss_fn: LossFn | None, labels: torch.Tensor,
                   tta: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """((B, D) `output`, loss or None) of one normalised batch, its logits averaged over `tta`'s views."""
    mirror = x.flip(3) if tta == "flip" else None
    if loss_fn is None:
        out = batch_output(model, x, output)
        return (out if mirror is None else _flip_mean(out, batch_output(model, mirror, output))), None
    outputs = model(x)
    if mirror is not None:  # the loss of the averaged logits; the other outputs are the unflipped view's
        outputs = {**outputs, "logits": _flip_mean(outputs["logits"], model(mirror)["logits"])}
    out = outputs[output] if outputs.get(output) is not None else outputs["features"]
    return out, loss_fn(outputs, labels)


def _as_split(images: torch.Tensor | Split) -> Split:
    if not isinstance(images, torch.Tensor):
        return images
    return Split(images, torch.zeros(len(images), dtype=torch.int64))  # unlabelled: the labels are never read


@torch.no_grad()
def iter_forward(model: nn.Module, images: torch.Tensor | Split, *, output: str = "logits",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, batch_size: int = 512,
                 device: str | torch.device = "cpu", amp_dtype: torch.dtype | None = None,
                 channels_last: bool = False, channels: int | None = None, loss_fn: LossFn | None = None,
                 desc: str | None = None,
                 tta: str = "none") -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Per batch, in order: ((B, D) float32 `output` on `device`, (B,) labels, loss or None).

    `images`: (N, C, H, W) uint8 or a Split; normalised with mean / std (the eval transform), converted to
    `channels` when given (gray replicated to RGB for ImageNet backbones), channels_last when asked. With
    `loss_fn` the whole model runs (its output dict) and loss_fn(outputs, labels) is computed under the same
    autocast. `tta` (TTA_MODES): "flip" averages the logits of each image and its mirror image (output="logits"
    only: features and embeddings are one view's). The model is in eval mode meanwhile and gets its mode back at
    the end; it is not moved.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output: expected one of {list(OUTPUTS)}, got {output!r}")
    if tta not in TTA_MODES or (tta != "none" and output != "logits"):
        raise ValueError(f"tta: expected one of {list(TTA_MODES)}, and 'none' unless output='logits'; got "
                         f"tta={tta!r} for output={output!r}")
    split = _as_split(images)
    total = math.ceil(len(split) / batch_size) if batch_size > 0 else None
    stream = batches(split, batch_size, shuffle=False, mean=mean, std=std, device=device)
    if desc is not None:
        stream = progress(stream, desc=desc, total=total)
    was_training = model.training
    model.eval()
    try:
        for x, labels in stream:
            if channels is not None:
                x = ensure_channels(x, channels)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp_dtype):
                out, loss = _batch_forward(model, x, output, loss_fn, labels, tta)
            yield out.float().flatten(1), labels, loss
    finally:
        model.train(was_training)


def forward_batches(model: nn.Module, images: torch.Tensor | Split, *, output: str = "logits",
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None, batch_size: int = 512,
                    device: str | torch.device = "cpu", amp_dtype: torch.dtype | None = None,
                    channels_last: bool = False, channels: int | None = None,
                    desc: str | None = None, tta: str = "none") -> torch.Tensor:
    """(N, D) float32 CPU tensor of `output` for every image, in order: THE way to run a network over many images
    (see iter_forward for the arguments; `desc` shows a progress bar). An empty input is a ValueError."""
    outs = [out for out, _, _ in iter_forward(model, images, output=output, mean=mean, std=std,
                                              batch_size=batch_size, device=device, amp_dtype=amp_dtype,
                                              channels_last=channels_last, channels=channels, desc=desc,
                                              tta=tta)]
    if not outs:
        raise ValueError("forward_batches: no images")
    return torch.cat(outs).cpu()
