"""Inputs of the SVM: standardised raw pixels, or a backbone's global-pooled penultimate features, cached on disk.

Backbone features are extracted once per (dataset config, model, weights, image size) and cached under
`<cache_dir>/features/<key>.pt`, written atomically, so every arm and seed of a study reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dlstudy.models.forward import forward_batches

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
FEATURE_CACHE_FORMAT = 2  # bump when the extraction changes, so old cache files are ignored


def pixel_features(images: torch.Tensor) -> np.ndarray:
    """(N, C*H*W) float32 pixels on [0, 1] of (N, C, H, W) uint8 images: the SVM's 'raw' features.

    Not standardised here: LinearSVM(standardize=True) keeps the training statistics with the model.
    """
    pixels = images.flatten(1).numpy().astype(np.float32)  # (N, C*H*W), the one float copy
    pixels /= np.float32(255.0)
    return pixels


def raw_features(splits) -> dict[str, np.ndarray]:
    """{split: (N, C*H*W) float32} flattened pixels on [0, 1]."""
    return {s: pixel_features(getattr(splits, s).images) for s in SPLITS}


def feature_cache_key(data_cfg: dict, model: str, weights: str, image_size: int | None) -> str:
    """File stem for dataset config + model + weights + image size (a weights file adds its size and mtime)."""
    weights_id = weights
    path = Path(weights)
    if weights not in ("none", "imagenet") and path.exists():
        st = path.stat()
        weights_id = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    ident = json.dumps([FEATURE_CACHE_FORMAT, data_cfg, model, weights_id, image_size], sort_keys=True, default=str)
    stem = re.sub(r"[^A-Za-z0-9_.+-]+", "-", model)  # tv:/timm: names: no ':' in a file name (Windows)
    return f"{data_cfg.get('name', 'data')}-{stem}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


def cached(path: Path, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load {split: array} from `path`, or compute and save it atomically (a corrupt file is recomputed)."""
    if path.is_file():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            log.info("features: loaded from cache %s", path)
            return {k: v.numpy() for k, v in obj.items()}
        except Exception as exc:  # a truncated or foreign file: recompute rather than fail the run
            log.warning("features: cache %s unreadable (%s); recomputing", path, exc)
    feats = compute()
    from dlstudy.data.cache import save_torch

    try:
        save_torch({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feats.items()}, path)
        log.info("features: cached to %s", path)
    except OSError as exc:  # a read-only or full cache folder must not lose the extraction just done
        log.warning("features: could not cache to %s (%s); continuing without the cache", path, exc)
    return feats


def backbone_features(splits, model: torch.nn.Module, batch_size: int, device: str) -> dict[str, np.ndarray]:
    """{split: (N, F) float32} pooled features (`model.forward_features`, float32, no autocast) of train, val and
    test, batch by batch in eval mode; gray images are replicated to 3 channels after normalisation (ImageNet
    backbones take RGB). The model is moved to `device`."""
    model.to(device)
    return {s: forward_batches(model, getattr(splits, s).images, output="features", mean=splits.mean,
                               std=splits.std, batch_size=batch_size, device=device, channels=3,
                               desc=f"features {s}").numpy() for s in SPLITS}
