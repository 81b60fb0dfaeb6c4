"""Decode once: the decoded uint8 tensors of a source are kept in one file, keyed by what would change them."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable

import torch

from dlstudy.data.sources import fingerprint
from dlstudy.io import atomic_write
from dlstudy.data.splits import RawData, Split

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # bump when the decoded content of any loader changes, so old cache files are ignored


def cache_dir(configured: str | None = None) -> Path:
    """`configured`, else $DLSTUDY_CACHE, else ~/.cache/dlstudy."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("DLSTUDY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dlstudy"


def cache_key(dataset: str, source: Path, image_size: int | None) -> str:
    """Name of the cache file: dataset, resolved source path, its size/mtime, image size and cache format."""
    resolved = source.resolve()
    ident = f"{CACHE_FORMAT}|{dataset}|{resolved}|{fingerprint(resolved)}|{image_size}"
    return f"{dataset}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.pt"


def _pack(raw: RawData) -> dict:
    out: dict = {"format": CACHE_FORMAT, "class_names": list(raw.class_names)}
    for part in ("pool", "test", "val"):
        split = getattr(raw, part)
        if split is not None:
            out[part] = {"images": split.images.contiguous(), "labels": split.labels, "ids": split.ids.tolist()}
    return out


def _unpack(obj: dict) -> RawData:
    parts = {p: Split(obj[p]["images"], obj[p]["labels"], obj[p]["ids"]) for p in ("pool", "test", "val") if p in obj}
    return RawData(class_names=list(obj["class_names"]), pool=parts["pool"], test=parts.get("test"), val=parts.get("val"))


def save_torch(obj: dict, path: Path) -> Path:
    """torch.save streamed into an atomic write (dlstudy.io): readers never see half a file, and the payload is
    never held in memory a second time."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def load_cached(path: Path) -> RawData | None:
    """The RawData in cache file `path`, or None when it is missing or unreadable (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, weights_only=True)  # tensors, lists and strings only: no code runs on load
        if obj.get("format") != CACHE_FORMAT:
            return None
        return _unpack(obj)
    except Exception as exc:  # a corrupt cache is never fatal: decode again
        log.warning("ignoring unreadable cache file %s (%s); decoding again", path, exc)
        return None


def cached_decode(dataset: str, source: Path, image_size: int | None, decode: Callable[[], RawData],
                  directory: str | None = None, use_cache: bool = True) -> tuple[RawData, bool]:
    """(RawData, came_from_cache): load the cache file of this source, or `decode()` and write it."""
    if not use_cache:
        return decode(), False
    path = cache_dir(directory) / cache_key(dataset, source, image_size)
    raw = load_cached(path)
    if raw is not None:
        log.debug("loaded %s from cache %s", dataset, path)
        return raw, True
    raw = decode()
    try:
        save_torch(_pack(raw), path)
        log.info("decoded %s from %s; cached at %s", dataset, source, path)
    except OSError as exc:  # read-only home, full disk: still usable, just slower next time
        log.warning("could not write cache %s: %s", path, exc)
    return raw, False
