"""Datasets: registry, loaders for the on-disk formats, a uint8 decode cache, and the in-memory input pipeline.

    splits = load_dataset(cfg.data)              # DatasetSplits: train/val/test uint8 Splits + mean/std
    for x, y in batches(splits.train, 128, shuffle=True, seed=0, epoch=e, augment="flip_crop",
                        mean=splits.mean, std=splits.std, device="cuda"):
        ...
"""

from dlstudy.data.cache import cache_dir
from dlstudy.data.cifar import RestrictedUnpickler
from dlstudy.data.pipeline import (
    AUGMENT_PRESETS,
    AugmentPreset,
    TensorImageDataset,
    as_torch_dataset,
    batches,
    ensure_channels,
    to_float,
)
from dlstudy.data.registry import DATASETS, DatasetSpec, get_spec, load_dataset, locate
from dlstudy.data.splits import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZATIONS,
    DatasetSplits,
    Split,
    channel_stats,
    stratified_take,
)

__all__ = [
    "AUGMENT_PRESETS", "AugmentPreset", "DATASETS", "DatasetSpec", "DatasetSplits", "IMAGENET_MEAN", "IMAGENET_STD",
    "NORMALIZATIONS", "RestrictedUnpickler", "Split", "TensorImageDataset", "as_torch_dataset", "batches",
    "cache_dir", "channel_stats", "ensure_channels", "get_spec", "load_dataset", "locate", "stratified_take",
    "to_float",
]
