"""In-memory splits and the pure functions that make them: stratified seeded splitting, caps, normalisation stats."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dlstudy.errors import DataError

# ImageNet channel statistics on the [0, 1] scale (torchvision's pretrained-weights convention).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("dataset", "imagenet", "none")


@dataclass
class Split:
    """One split held in memory, decoded once."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64 in 0..K-1
    ids: np.ndarray | None = None  # (N,) str: the file path inside the dataset, else "<official split>:<index>"

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"Split.images: expected (N, C, H, W) uint8, got {tuple(self.images.shape)} {self.images.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"Split.labels: expected shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")
        self.labels = self.labels.to(torch.int64)
        if self.ids is not None:
            self.ids = np.asarray(self.ids, dtype=str)
            if self.ids.shape != (self.images.shape[0],):
                raise ValueError(f"Split.ids: expected shape ({self.images.shape[0]},), got {self.ids.shape}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> "Split":
        """The split restricted to `index` (1-D int64), in that order."""
        ids = None if self.ids is None else self.ids[index.cpu().numpy()]
        return Split(self.images[index], self.labels[index], ids)

    def rows(self, start: int, stop: int) -> "Split":
        """Rows start..stop-1 as views (no copy of the images)."""
        ids = None if self.ids is None else self.ids[start:stop]
        return Split(self.images[start:stop], self.labels[start:stop], ids)

    def to(self, device: str | torch.device) -> "Split":
        """The split on `device` (e.g. kept on the GPU once so batches are gathered there)."""
        return Split(self.images.to(device), self.labels.to(device), self.ids)

    def sample_ids(self) -> np.ndarray:
        """(N,) str ids of the rows (their index when the loader gave none)."""
        return self.ids if self.ids is not None else np.arange(len(self)).astype(str)


@dataclass
class DatasetSplits:
    """train/val/test of one dataset plus the per-channel stats `normalize` uses."""

    name: str
    class_names: list[str]
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    source: str = ""  # the file or folder the images came from
    notes: list[str] = field(default_factory=list)  # how the splits were made, for reports

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def sizes(self) -> dict:
        """What a run trains and tests on, for metrics.json and reports: split sizes, image shape, classes."""
        c, h, w = self.image_shape
        return {"n_train": len(self.train.labels), "n_val": len(self.val.labels), "n_test": len(self.test.labels),
                "image_size": [h, w], "channels": c, "num_classes": self.num_classes}


@dataclass
class RawData:
    """What a loader decodes (and the cache stores): a training pool plus the official splits that exist."""

    class_names: list[str]
    pool: Split  # the official training set, to be split into train/val (and test when there is no official one)
    test: Split | None = None  # official labelled test split
    val: Split | None = None  # official validation split (imagefolder `val/`), used instead of carving one out

    def __post_init__(self) -> None:
        # rows without a file path are named by their official split and index, so predictions can be traced back
        for part, official in (("pool", "train"), ("test", "test"), ("val", "val")):
            split = getattr(self, part)
            if split is not None and split.ids is None:
                split.ids = np.char.add(f"{official}:", np.arange(len(split)).astype(str))


# ------------------------------------------------------------------------------------------------ stratified splits


def _allocate(counts: torch.Tensor, total: int) -> torch.Tensor:
    """Split `total` over classes in proportion to `counts` (largest remainder), never more than a class holds."""
    exact = counts.double() * (total / max(int(counts.sum()), 1))
    take = exact.floor().long()
    remainder = exact - take
    for k in torch.argsort(remainder, descending=True, stable=True).tolist():
        if int(take.sum()) >= total:
            break
        if take[k] < counts[k]:
            take[k] += 1
    return take


def stratified_take(labels: torch.Tensor, n_take: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded stratified selection of `n_take` positions of `labels`; returns (taken, rest), each sorted.

    Every class contributes in proportion to its size (largest-remainder rounding), so class frequencies in both
    parts match the whole to within one image per class.
    """
    n = int(labels.shape[0])
    if not 0 <= n_take <= n:
        raise ValueError(f"stratified_take: n_take must be in 0..{n}, got {n_take}")
    gen = torch.Generator().manual_seed(int(seed))
    if n and int(labels.min()) < 0:
        raise ValueError("stratified_take: labels must be non-negative class indices")
    inverse = labels.to(torch.long)  # class index of each position
    counts = torch.bincount(inverse, minlength=1)  # (K,) images per class (0 for absent classes)
    quota = _allocate(counts, n_take)
    perm = torch.randperm(n, generator=gen)  # one shuffle, then the first `quota[k]` of each class are taken
    shuffled_cls = inverse[perm]
    # rank of each shuffled position within its class: stable sort by class keeps the shuffled order inside a class
    order = torch.argsort(shuffled_cls, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n) - starts[shuffled_cls[order]]
    chosen = rank < quota[shuffled_cls]
    taken, rest = perm[chosen], perm[~chosen]
    return taken.sort().values, rest.sort().values


def _fraction_count(n: int, fraction: float, what: str) -> int:
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"data.{what}: expected a fraction in [0, 1), got {fraction}")
    return int(round(n * fraction))


def _cap(split: Split, cap: int | None, seed: int) -> Split:
    if cap is None or cap >= len(split):
        return split
    if cap <= 0:
        raise DataError(f"data.max_train / data.max_eval must be positive, got {cap}")
    taken, _ = stratified_take(split.labels, cap, seed)
    return split.subset(taken)


def make_splits(raw: RawData, *, val_fraction: float, test_fraction: float, split_seed: int,
                max_train: int | None = None, max_eval: int | None = None) -> tuple[Split, Split, Split, list[str]]:
    """train/val/test from a RawData: official splits where they exist, seeded stratified hold-outs otherwise."""
    notes = []
    pool = raw.pool
    if raw.test is not None:
        test = raw.test
        notes.append(f"test: the official test split ({len(test)} images)")
    else:
        n_test = _fraction_count(len(pool), test_fraction, "test_fraction")
        taken, rest = stratified_take(pool.labels, n_test, split_seed)
        test, pool = pool.subset(taken), pool.subset(rest)
        notes.append(f"test: {test_fraction:g} of the pool, stratified, split_seed={split_seed} ({len(test)} images)")
    if raw.val is not None:
        train, val = pool, raw.val
        notes.append(f"val: the official validation split ({len(val)} images)")
    else:
        n_val = _fraction_count(len(pool), val_fraction, "val_fraction")
        taken, rest = stratified_take(pool.labels, n_val, split_seed + 1)
        val, train = pool.subset(taken), pool.subset(rest)
        notes.append(f"val: {val_fraction:g} of the training pool, stratified ({len(val)} images)")
    if len(train) == 0:
        raise DataError("no training images left after holding out val/test; lower data.val_fraction/test_fraction")
    train = _cap(train, max_train, split_seed + 2)
    val, test = _cap(val, max_eval, split_seed + 3), _cap(test, max_eval, split_seed + 4)
    if max_train is not None or max_eval is not None:
        notes.append(f"capped (stratified): train {len(train)}, val {len(val)}, test {len(test)}")
    return train, val, test, notes


# ------------------------------------------------------------------------------------------------ normalisation


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std on the [0, 1] scale of (N, C, H, W) uint8 images.

    Exact and cheap: a 256-bin histogram per channel, then the moments of the histogram in float64.
    """
    values = torch.arange(256, dtype=torch.float64) / 255.0
    mean, std = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)  # (256,)
        n = max(float(counts.sum()), 1.0)
        m = float((counts * values).sum() / n)
        var = float((counts * (values - m).square()).sum() / n)
        mean.append(m)
        std.append(max(var ** 0.5, 1e-6))  # never 0, it divides
    return tuple(mean), tuple(std)


def normalization_stats(kind: str, train: Split) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel for `data.normalize` = dataset | imagenet | none."""
    c = train.images.shape[1]
    if kind == "dataset":
        return channel_stats(train.images)
    if kind == "imagenet":
        if c == 3:
            return IMAGENET_MEAN, IMAGENET_STD
        if c == 1:  # gray: the channel average, as if the gray value were replicated to RGB
            return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
    if kind == "none":
        return (0.0,) * c, (1.0,) * c
    raise DataError(f"data.normalize: expected one of {list(NORMALIZATIONS)}, got {kind!r} for {c}-channel images")
