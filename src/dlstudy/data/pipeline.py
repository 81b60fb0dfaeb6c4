"""The in-memory input pipeline: seeded index batches of a uint8 Split -> augmented, normalised float batches.

Everything works on whole batch tensors (no per-image PIL), so feeding a model costs a few gathers and one fused
multiply-add per batch. Randomness (shuffle and augmentation) comes from one CPU generator seeded by
(seed, epoch): the same seed and epoch give the same batches on any device, so a run resumed at an epoch
boundary sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from dlstudy.data.splits import Split
from dlstudy.errors import DataError


@dataclass(frozen=True)
class AugmentPreset:
    name: str
    description: str
    flip: bool = False  # horizontal flip with probability 1/2
    pad_crop: int = 0  # zero-pad by this many pixels, then crop back to the original size at a random offset
    resized_crop: tuple[float, float] | None = None  # random-resized-crop area range (aspect 3/4..4/3), output size kept


AUGMENT_PRESETS: dict[str, AugmentPreset] = {
    "none": AugmentPreset("none", "no augmentation"),
    "flip": AugmentPreset("flip", "random horizontal flip", flip=True),
    "crop": AugmentPreset("crop", "pad-4 random crop (no flip: digits are not mirror-symmetric)", pad_crop=4),
    # the classic CIFAR recipe (He et al. 2016): pad 4, random 32x32 crop, horizontal flip
    "flip_crop": AugmentPreset("flip_crop", "pad-4 random crop + random horizontal flip", flip=True, pad_crop=4),
    # airbench's CIFAR-10 recipe: a milder 2 px translate, which suits a short schedule better than pad 4
    "flip_crop2": AugmentPreset("flip_crop2", "pad-2 random crop + random horizontal flip", flip=True, pad_crop=2),
    # Inception-style crop as torchvision's training preset, with a milder minimum area for small images
    "standard": AugmentPreset("standard", "random resized crop (area 25-100%, aspect 3/4-4/3) + horizontal flip",
                              flip=True, resized_crop=(0.25, 1.0)),
}


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator behind one epoch's shuffle and augmentation."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


# ------------------------------------------------------------------------------------------------ transforms


def _scale_shift(mean: Sequence[float] | None, std: Sequence[float] | None, channels: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """x_uint8 * scale - shift == (x / 255 - mean) / std, as (C, 1, 1) tensors."""
    mean_t = torch.tensor(mean if mean is not None else [0.0] * channels, dtype=torch.float32)
    std_t = torch.tensor(std if std is not None else [1.0] * channels, dtype=torch.float32)
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise ValueError(f"mean/std have {mean_t.numel()}/{std_t.numel()} values for {channels}-channel images")
    scale = 1.0 / (255.0 * std_t)
    shift = mean_t / std_t
    return scale.view(-1, 1, 1).to(device), shift.view(-1, 1, 1).to(device)


def to_float(images: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) or (C, H, W) -> float32 (x / 255 - mean) / std: the eval-time transform."""
    channels = images.shape[-3]
    scale, shift = _scale_shift(mean, std, channels, images.device)
    return images.to(torch.float32).mul_(scale).sub_(shift)


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image of (B, C, H, W) left-right with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def random_pad_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad (B, C, H, W) by `pad` and crop H x W at per-image random offsets, as one strided gather."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p), zeros like torchvision's RandomCrop(padding=p)
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (B, C, 2p+1, 2p+1, H, W): every crop, a view (no copy)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    return windows[torch.arange(b, device=x.device), :, dy, dx]  # (B, C, H, W): image i's crop at (dy_i, dx_i)


def random_resized_crop(x: torch.Tensor, area: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Per-image random crop of area fraction in `area`, aspect 3/4..4/3, resized back to H x W (float input).

    One affine grid per image and a single grid_sample: the vectorised form of torchvision's RandomResizedCrop.
    """
    b = x.shape[0]
    frac = torch.empty(b).uniform_(area[0], area[1], generator=gen)  # (B,) area fractions
    log_ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
    sx = (frac * log_ratio.exp()).sqrt().clamp(max=1.0)  # crop width / image width
    sy = (frac / log_ratio.exp()).sqrt().clamp(max=1.0)
    tx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sx)  # crop centre, in [-1, 1] grid units, kept inside
    ty = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sy)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment_batch(x: torch.Tensor, preset: AugmentPreset, gen: torch.Generator) -> torch.Tensor:
    """Geometric augmentation of a (B, C, H, W) batch; uint8 in, uint8 out unless a resized crop makes it float."""
    if preset.pad_crop:
        x = random_pad_crop(x, preset.pad_crop, gen)
    if preset.flip:
        x = random_flip(x, gen)
    if preset.resized_crop is not None:
        x = random_resized_crop(x.to(torch.float32), preset.resized_crop, gen)
    return x


def ensure_channels(x: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """(B, C, H, W) with C = `channels`: gray is replicated to 3 channels (a view), RGB -> gray uses BT.601 luma."""
    c = x.shape[-3]
    if c == channels:
        return x
    if c == 1:
        return x.expand(*x.shape[:-3], channels, *x.shape[-2:])
    if c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=x.device).view(3, 1, 1)
        return (x.to(torch.float32) * weights).sum(dim=-3, keepdim=True).to(x.dtype)
    raise ValueError(f"ensure_channels: cannot turn {c}-channel images into {channels}-channel ones")


# ------------------------------------------------------------------------------------------------ batching


def _index_batches(n: int, batch_size: int, shuffle: bool, drop_last: bool, gen: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def batches(split: Split, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, augment: str = "none",
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
            device: str | torch.device = "cpu", drop_last: bool = False,
            sampler: Iterable[Sequence[int]] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images float32 (B, C, H, W) normalised, labels int64 (B,)) on `device`, one epoch.

    `sampler`: an iterable of index lists (e.g. a P x K batch sampler) used instead of shuffled batches; its
    `set_epoch(epoch)` is called first when it has one. A split already on the device is indexed there.
    """
    if augment not in AUGMENT_PRESETS:
        raise DataError(f"unknown augmentation preset {augment!r}; presets: {', '.join(AUGMENT_PRESETS)}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    # checked here, at the call; the batches themselves are produced lazily by the generator below
    return _batch_iter(split, batch_size, shuffle, seed, epoch, AUGMENT_PRESETS[augment], mean, std,
                       torch.device(device), drop_last, sampler)


def _batch_iter(split: Split, batch_size: int, shuffle: bool, seed: int, epoch: int, preset: AugmentPreset,
                mean, std, device: torch.device, drop_last: bool, sampler) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    gen = epoch_generator(seed, epoch)
    scale, shift = _scale_shift(mean, std, split.images.shape[1], device)
    if sampler is not None:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        index_iter: Iterable = (torch.as_tensor(list(b), dtype=torch.long) for b in sampler)
    else:
        index_iter = _index_batches(len(split), batch_size, shuffle, drop_last, gen)
    for idx in index_iter:
        idx = idx.to(split.images.device)
        x = split.images[idx].to(device, non_blocking=True)  # (B, C, H, W) uint8: 4x less to move than float
        y = split.labels[idx].to(device, non_blocking=True)
        x = augment_batch(x, preset, gen).to(torch.float32)  # a fresh tensor on the [0, 255] scale
        yield x.mul_(scale).sub_(shift), y


# ------------------------------------------------------------------------------------------------ torch Dataset


class TensorImageDataset(torch.utils.data.Dataset):
    """A Split as a torchvision-style Dataset: item i is (image, label int), with `classes` and `targets`."""

    def __init__(self, split: Split, mean=None, std=None, transform: Callable | None = None,
                 target_transform: Callable | None = None, class_names: list[str] | None = None):
        self.split, self.mean, self.std = split, mean, std
        self.transform, self.target_transform = transform, target_transform
        self.classes = list(class_names) if class_names is not None else sorted(set(split.labels.tolist()))
        self.targets = split.labels.tolist()

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        image = self.split.images[index]  # (C, H, W) uint8
        # a transform gets the uint8 tensor (torchvision.transforms.v2 accepts it); otherwise normalise here
        image = self.transform(image) if self.transform is not None else to_float(image, self.mean, self.std)
        target = int(self.split.labels[index])
        return image, self.target_transform(target) if self.target_transform is not None else target


def as_torch_dataset(split: Split, *, mean=None, std=None, transform: Callable | None = None,
                     target_transform: Callable | None = None, class_names: list[str] | None = None) -> TensorImageDataset:
    """`split` as a `torch.utils.data.Dataset` for DataLoader / torchvision code."""
    return TensorImageDataset(split, mean, std, transform, target_transform, class_names)
