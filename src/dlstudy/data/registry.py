"""The dataset registry and `load_dataset`: find the files, decode once (cached), split, compute stats."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dlstudy.data import cifar, folders, mnist
from dlstudy.data.cache import cache_dir, cached_decode
from dlstudy.data.sources import find_prefix, is_archive, is_image_name, open_tree
from dlstudy.data.splits import NORMALIZATIONS, DatasetSplits, RawData, Split, make_splits, normalization_stats
from dlstudy.errors import ConfigError, DataError
from dlstudy.io import format_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    locations: tuple[str, ...]  # tried in order below each data root ('.' is the root itself)
    layout: str  # the expected on-disk layout, shown when nothing is found
    num_classes: int | None  # None: read from the files (imagefolder)
    image_shape: tuple[int, int, int] | None  # native (C, H, W); None: the first image's
    official_test: bool  # has a labelled test split of its own (else test_fraction of the pool is held out)
    probe: Callable[[Path], bool]  # does this candidate path look like the dataset?
    loader: Callable[[Path, int | None], RawData]  # decode the source at a path, resized to image_size if given
    download: str | None = None  # torchvision.datasets class able to download it
    builtin: Callable[[], Path] | None = None  # the file a shipped dataset comes from (no search)
    num_images: int | None = None  # every split together, for the memory check before decoding; None: counted


# ------------------------------------------------------------------------------------------------ loaders


def _digits_file() -> Path:
    """scikit-learn's digits file, found without importing sklearn (a second-long import)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'digits' needs scikit-learn (pip install scikit-learn)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"


def _load_digits(source: Path, image_size: int | None) -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 8x8 gray values 0..16 -> 0..255 so every dataset is uint8 on the same scale
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    pool = Split(torch.from_numpy(images), torch.from_numpy(bunch.target.astype(np.int64)))
    return RawData(class_names=[str(d) for d in range(10)], pool=pool)


def _load_cifar10(source: Path, image_size: int | None) -> RawData:
    tree = open_tree(source)
    prefix = find_prefix(tree, "data_batch_1")
    if prefix is not None:
        return cifar.load_cifar_batches(tree.sub(prefix))
    prefix = find_prefix(tree, "train/")
    if prefix is not None:
        return folders.load_image_tree(tree.sub(prefix), image_size, mode="RGB")
    raise DataError(f"{source}: holds neither cifar-10-batches-py/data_batch_1..5 nor train/<class>/<image>")


def _load_tiny(source: Path, image_size: int | None) -> RawData:
    tree = open_tree(source)
    prefix = find_prefix(tree, "wnids.txt")
    if prefix is None:
        raise DataError(f"{source}: no tiny-imagenet-200/wnids.txt inside")
    return folders.load_tiny_imagenet(tree.sub(prefix), image_size)


def _load_imagefolder(source: Path, image_size: int | None) -> RawData:
    tree = open_tree(source)
    prefix = find_prefix(tree, "train/") if is_archive(source) else ""
    return folders.load_image_tree(tree.sub(prefix or ""), image_size)


def _is_cifar(path: Path) -> bool:
    if path.is_dir():
        return (path / "data_batch_1").is_file() or (path / "train").is_dir()
    return is_archive(path)


def _is_tiny(path: Path) -> bool:
    return (path / "wnids.txt").is_file() if path.is_dir() else path.is_file() and path.suffix.lower() == ".zip"


def _is_imagefolder(path: Path) -> bool:
    if path.is_dir():  # a tree with only test/ (or val/) can be evaluated on
        return any((path / split).is_dir() for split in folders.SPLIT_NAMES)
    return is_archive(path)


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        "digits", "scikit-learn's shipped 8x8 handwritten digits (1,797 real images); the embedded default",
        (), "shipped inside scikit-learn (sklearn/datasets/data/digits.csv.gz)", 10, (1, 8, 8), False,
        probe=lambda p: p.is_file(), loader=_load_digits, builtin=_digits_file, num_images=1_797),
    "mnist": DatasetSpec(
        "mnist", "MNIST handwritten digits, 60,000 train + 10,000 test, 28x28 gray",
        (".", "mnist", "MNIST/raw", "mnist/MNIST/raw"),
        "a folder with train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte (each optionally .gz), flat or as torchvision's MNIST/raw/",
        10, (1, 28, 28), True, probe=mnist.is_mnist_folder, loader=lambda p, s: mnist.load_mnist(p), download="MNIST", num_images=70_000),
    "cifar10": DatasetSpec(
        "cifar10", "CIFAR-10, 10 classes of 32x32 colour images (official python batches or an ImageFolder tree)",
        (".", "cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10", "cifar10-train-jpg.tar.gz",
         "cifar-10-python.tar.gz"),
        "cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} (or the official cifar-10-python.tar.gz), "
        "or an ImageFolder tree train/<class>/*.jpg [+ test/<class>/*] as a folder or .tar.gz",
        10, (3, 32, 32), True, probe=_is_cifar, loader=_load_cifar10, download="CIFAR10", num_images=60_000),
    "tiny-imagenet": DatasetSpec(
        "tiny-imagenet", "Tiny ImageNet-200, 64x64 colour, 200 classes; the labelled val/ is the test split",
        (".", "tiny-imagenet-200", "tiny-imagenet-200.zip", "tiny-imagenet-200-subset.zip"),
        "tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
        "val/val_annotations.txt}, as a folder or its .zip",
        200, (3, 64, 64), True, probe=_is_tiny, loader=_load_tiny, num_images=110_000),
    "imagefolder": DatasetSpec(
        "imagefolder", "any ROOT/<split>/<class>/<image> tree (split: train, optional val and test); needs --data-root",
        (".",), "ROOT/train/<class>/<image> (+ optional ROOT/val/<class>/..., ROOT/test/<class>/...), "
        "folder or .zip/.tar.gz; images resized to data.image_size or the first image's size",
        None, None, False, probe=_is_imagefolder, loader=_load_imagefolder),
}


# ------------------------------------------------------------------------------------------------ finding files


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; registered datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def default_roots() -> list[Path]:
    """Where datasets are looked for without --data-root: $DLSTUDY_DATA, ./data, <cache>/data."""
    roots = [Path(os.environ["DLSTUDY_DATA"]).expanduser()] if os.environ.get("DLSTUDY_DATA") else []
    return roots + [Path("data").absolute(), cache_dir() / "data"]


def candidates(spec: DatasetSpec, root: str | None = None) -> list[Path]:
    """Every path `spec` is looked for at, in order."""
    if spec.builtin is not None:
        return [spec.builtin()]
    if spec.name == "imagefolder":  # no default place for an arbitrary tree
        return [Path(root).expanduser()] if root else []
    bases = [Path(root).expanduser()] if root else default_roots()
    return [base if loc == "." else base / loc for base in bases for loc in spec.locations]


def locate(spec: DatasetSpec, root: str | None = None) -> tuple[Path | None, list[Path]]:
    """(first candidate that looks like the dataset or None, every candidate searched)."""
    searched = candidates(spec, root)
    for path in searched:
        if path.exists() and spec.probe(path):
            return path, searched
    return None, searched


def find_dataset(cfg) -> Path:
    """Where the files of `cfg.name` (a DataConfig) are; DataError naming every folder searched when absent."""
    spec = get_spec(cfg.name)
    source, searched = locate(spec, cfg.root)
    if source is None and cfg.download:
        source = download(spec, cfg.root)
    if source is None:
        raise missing_error(spec, searched)
    return source


def missing_error(spec: DatasetSpec, searched: list[Path], extra: str = "") -> DataError:
    where = "\n".join(f"  - {p}" for p in searched) or "  (nothing: pass --data-root ROOT)"
    hint = "pass --data-root DIR (or set $DLSTUDY_DATA)"
    if spec.download:
        hint += " or --download (needs network)"
    return DataError(f"dataset {spec.name!r} not found. Searched:\n{where}\nExpected layout: {spec.layout}.\n"
                     f"{extra}To fix: put the files there, {hint}.")


def download(spec: DatasetSpec, root: str | None) -> Path:
    """Fetch `spec` with torchvision's downloader into `root` (or the first default root) and return its source."""
    target = Path(root).expanduser() if root else default_roots()[0]
    if spec.download is None:
        raise missing_error(spec, candidates(spec, root), f"{spec.name} has no downloader (get it by hand). ")
    import socket

    import torchvision.datasets

    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an offline machine should fail in seconds, not hang
    try:
        for train in (True, False):
            getattr(torchvision.datasets, spec.download)(str(target), train=train, download=True)
    except Exception as exc:
        raise DataError(f"--download of {spec.name} into {target} failed ({type(exc).__name__}: {exc}). "
                        f"This machine probably has no network: download the files elsewhere and put them at "
                        f"{target} as {spec.layout}.") from None
    finally:
        socket.setdefaulttimeout(old_timeout)
    found, searched = locate(spec, str(target))
    if found is None:
        raise missing_error(spec, searched, "The download finished but the files are not where expected. ")
    return found


# ------------------------------------------------------------------------------------------------ loading


def resize_images(images: torch.Tensor, size: int | tuple[int, int], chunk: int = 2048) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, h, w) uint8 (`size` = h = w, or (h, w)), bilinear with antialiasing, in chunks
    to bound memory."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    out = torch.empty((images.shape[0], images.shape[1], h, w), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk].float()
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def decode(spec: DatasetSpec, source: Path, image_size: int | None) -> RawData:
    """Run the loader, then bring every split to `image_size` if the loader did not."""
    if image_size is not None and image_size <= 0:
        raise DataError(f"data.image_size: expected a positive integer, got {image_size}")
    raw = spec.loader(source, image_size)
    if image_size is not None:
        for part in ("pool", "test", "val"):
            split = getattr(raw, part)
            if split is not None and tuple(split.images.shape[2:]) != (image_size, image_size):
                setattr(raw, part, Split(resize_images(split.images, image_size), split.labels, split.ids))
    return raw


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable of /proc/meminfo, else free pages), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _image_count(spec: DatasetSpec, source: Path) -> int | None:
    """Images of the source without decoding: the image files of a folder or zip tree, else the spec's count."""
    if source.is_dir() or source.name.lower().endswith(".zip"):
        count = sum(1 for name in open_tree(source).names() if is_image_name(name))
        if count:
            return count
    return spec.num_images


def memory_needed(n_images: int, channels: int, size: tuple[int, int], batch_size: int | None) -> tuple[int, int]:
    """(bytes of the decoded dataset, of one training batch) at `size` (H, W): the uint8 images twice (the splits
    are copies) plus resize_images' float32 buffer (2,048 images at a time); a batch as float32, three times (the
    images, augmented, normalised)."""
    pixels = channels * size[0] * size[1]
    dataset = 2 * n_images * pixels + min(n_images, 2048) * pixels * 4
    return dataset, (3 * batch_size * pixels * 4 if batch_size else 0)


def check_memory(spec: DatasetSpec, source: Path, image_size: int | None, batch_size: int | None = None) -> None:
    """ConfigError before decoding when the dataset at data.image_size (and a batch at train.batch_size) needs
    more memory than the machine has available: naming the key, the estimate and the memory available."""
    size = (image_size, image_size) if image_size else (spec.image_shape[1:] if spec.image_shape else None)
    available = available_memory()
    n_images = _image_count(spec, source) if size and available else None
    if not n_images:
        return
    channels = spec.image_shape[0] if spec.image_shape else 3  # a tree's mode is known after decoding: RGB at most
    dataset, batch = memory_needed(n_images, channels, size, batch_size)
    if dataset + batch <= available:
        return
    key = f"data.image_size={image_size}" if image_size else f"the native size {size[0]}x{size[1]} of {spec.name}"
    per_batch = f" and a batch of train.batch_size={batch_size} about {format_bytes(batch)} more" if batch else ""
    raise ConfigError(f"{key}: {spec.name} needs about {format_bytes(dataset)} of memory at that size ({n_images} "
                      f"images x {channels} x {size[0]} x {size[1]} bytes, decoded and split){per_batch}; this machine "
                      f"has {format_bytes(available)} available. Lower data.image_size (or use a machine with more "
                      f"memory)")


def decode_source(spec: DatasetSpec, cfg, batch_size: int | None = None) -> tuple[Path, RawData, bool]:
    """(where the files are, their decoded RawData, whether it came from the cache) of DataConfig `cfg`; the memory
    the decoded data (and a batch of `batch_size`) will take is checked first (check_memory)."""
    source = find_dataset(cfg)
    check_memory(spec, source, cfg.image_size, batch_size)
    raw, from_cache = cached_decode(spec.name, source, cfg.image_size, lambda: decode(spec, source, cfg.image_size),
                                    cfg.cache_dir, cfg.cache)
    return source, raw, from_cache


def load_dataset(cfg, batch_size: int | None = None) -> DatasetSplits:
    """train/val/test of `cfg.name` (a DataConfig); DataError with the paths searched and the layout expected.
    `batch_size` (train.batch_size) joins the memory check made before decoding."""
    from dlstudy.data.pipeline import AUGMENT_PRESETS

    spec = get_spec(cfg.name)
    if cfg.augment not in AUGMENT_PRESETS:
        raise DataError(f"data.augment: unknown preset {cfg.augment!r}; presets: {', '.join(AUGMENT_PRESETS)}")
    if cfg.normalize not in NORMALIZATIONS:
        raise DataError(f"data.normalize: expected one of {list(NORMALIZATIONS)}, got {cfg.normalize!r}")
    source, raw, from_cache = decode_source(spec, cfg, batch_size)
    if len(raw.pool) == 0:
        raise DataError(f"{source}: no train/<class>/<image> images to train on (only {_official_parts(raw)}); "
                        f"such a tree can be scored with `dlstudy evaluate RUN_DIR --data {spec.name} --data-root "
                        f"{source} --split test`")
    train, val, test, notes = make_splits(raw, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                                          split_seed=cfg.split_seed, max_train=cfg.max_train, max_eval=cfg.max_eval)
    mean, std = normalization_stats(cfg.normalize, train)
    notes.insert(0, f"source: {source}{' (decoded images from cache)' if from_cache else ''}")
    log.debug("%s: train %d, val %d, test %d", spec.name, len(train), len(val), len(test))
    return DatasetSplits(spec.name, list(raw.class_names), train, val, test, mean, std, str(source), notes)


def _official_parts(raw: RawData) -> str:
    return " and ".join(f"{p}/" for p in ("val", "test") if getattr(raw, p) is not None) or "nothing"


EVAL_SPLITS = ("test", "val", "train", "all")


def load_evaluation_split(cfg, split: str) -> tuple[Split, list[str], Path, list[str]]:
    """(the images of `split`, class names, source, notes) of dataset `cfg` (a DataConfig), for scoring a run.

    With a training pool the splits are made exactly as for training (same fractions, seeds and caps), so the
    run's own data gives the run's own test split. A tree with only test/ and / or val/ (an imagefolder made for
    evaluation) offers those. 'all' is every image of the dataset.
    """
    if split not in EVAL_SPLITS:
        raise DataError(f"--split: expected one of {list(EVAL_SPLITS)}, got {split!r}")
    source, raw, _ = decode_source(get_spec(cfg.name), cfg)
    if len(raw.pool) == 0:
        parts = {"test": raw.test, "val": raw.val}
        notes = [f"{source} has no train/: its own {_official_parts(raw)} folders"]
        if split == "all":
            chosen = [p for p in (raw.val, raw.test) if p is not None]
        elif parts.get(split) is None:
            raise DataError(f"{source}: no {split}/ images to evaluate on (it holds {_official_parts(raw)}); "
                            f"pass --split {'test' if raw.test is not None else 'val'} or --split all")
        else:
            chosen = [parts[split]]
    else:
        train, val, test, notes = make_splits(raw, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                                              split_seed=cfg.split_seed, max_train=cfg.max_train,
                                              max_eval=cfg.max_eval)
        chosen = [train, val, test] if split == "all" else [{"train": train, "val": val, "test": test}[split]]
    chosen = [p for p in chosen if len(p)]
    if not chosen:
        raise DataError(f"{source}: the {split} split of {cfg.name} is empty with these settings")
    joined = chosen[0] if len(chosen) == 1 else Split(torch.cat([p.images for p in chosen]),
                                                      torch.cat([p.labels for p in chosen]),
                                                      np.concatenate([p.sample_ids() for p in chosen]))
    return joined, list(raw.class_names), source, notes
