"""MNIST in its original IDX format (LeCun et al.): .gz or not, flat folder or torchvision's MNIST/raw/."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from dlstudy.data.splits import RawData, Split
from dlstudy.errors import DataError

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions (N, rows, cols)
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension (N,)
# Both spellings exist in the wild: the original `train-images-idx3-ubyte` and Kaggle's `train-images.idx3-ubyte`.
FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
CLASS_NAMES = [str(d) for d in range(10)]


def find_file(folder: Path, key: str) -> Path | None:
    """The IDX file for `key` in `folder`, plain or .gz, or None."""
    for stem in FILES[key]:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def is_mnist_folder(folder: Path) -> bool:
    return folder.is_dir() and find_file(folder, "train_images") is not None


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """An IDX file -> uint8 array of its declared shape; DataError naming the file on any mismatch."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read IDX file (corrupt or truncated gzip?): {exc}") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, no header)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: wrong IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
                        f"({'images' if expected_magic == IMAGES_MAGIC else 'labels'} file of unsigned bytes)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, expected at least {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX size mismatch: header declares shape {shape} = {expected} bytes of data, "
                        f"file holds {len(raw) - header} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _read_pair(folder: Path, split: str) -> Split:
    paths = {}
    for kind in ("images", "labels"):
        path = find_file(folder, f"{split}_{kind}")
        if path is None:
            raise DataError(f"{folder}: missing MNIST file {FILES[f'{split}_{kind}'][0]}[.gz]")
        paths[kind] = path
    images = read_idx(paths["images"], IMAGES_MAGIC)  # (N, 28, 28)
    labels = read_idx(paths["labels"], LABELS_MAGIC)  # (N,)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{paths['labels']}: {labels.shape[0]} labels for {images.shape[0]} images in {paths['images']}")
    if labels.size and labels.max() > 9:
        raise DataError(f"{paths['labels']}: label {int(labels.max())} out of range 0..9")
    return Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def load_mnist(source: Path) -> RawData:
    """60,000 training and 10,000 official test images, (N, 1, 28, 28) uint8."""
    return RawData(class_names=list(CLASS_NAMES), pool=_read_pair(source, "train"), test=_read_pair(source, "test"))
