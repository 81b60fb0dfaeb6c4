"""The loaders on the real files in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import time
import zipfile

import pytest
import torch

from dlstudy.config import DataConfig
from dlstudy.data import load_dataset

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def whole(name: str, root, cache: str, **kw) -> DataConfig:
    """Nothing held out, so train is the whole official training set."""
    return DataConfig(name=name, root=str(root), val_fraction=0.0, test_fraction=0.0, cache_dir=cache, **kw)


def test_mnist_real_counts_and_cache(shared_data, cache):
    t0 = time.perf_counter()
    splits = load_dataset(whole("mnist", shared_data, cache))
    first = time.perf_counter() - t0
    assert (len(splits.train), len(splits.test)) == (60_000, 10_000) and splits.image_shape == (1, 28, 28)
    assert torch.bincount(splits.train.labels).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(splits.test.labels).tolist() == MNIST_TEST_COUNTS
    assert splits.mean[0] == pytest.approx(0.1307, abs=1e-4) and splits.std[0] == pytest.approx(0.3081, abs=1e-4)
    t0 = time.perf_counter()
    again = load_dataset(whole("mnist", shared_data, cache))
    assert "from cache" in again.notes[0] and torch.equal(again.train.images, splits.train.images)
    assert time.perf_counter() - t0 < max(first, 2.0)
    held_out = load_dataset(DataConfig(name="mnist", root=str(shared_data), cache_dir=cache))
    assert (len(held_out.train), len(held_out.val)) == (54_000, 6_000)
    val_counts = torch.bincount(held_out.val.labels).tolist()
    assert all(abs(v - c / 10) < 1 for v, c in zip(val_counts, MNIST_TRAIN_COUNTS))  # stratified to within one


def test_cifar10_real_jpg_tar(shared_data, cache):
    splits = load_dataset(whole("cifar10", shared_data, cache))
    assert splits.source.endswith("cifar10-train-jpg.tar.gz") and splits.image_shape == (3, 32, 32)
    assert splits.class_names[0] == "airplane" and splits.class_names[-1] == "truck"
    assert torch.bincount(splits.train.labels).tolist() == [5000] * 10 and len(splits.test) == 0
    assert splits.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=2e-3)  # the published CIFAR-10 means
    held_out = load_dataset(DataConfig(name="cifar10", root=str(shared_data), cache_dir=cache))
    assert torch.bincount(held_out.test.labels).tolist() == [1000] * 10  # test_fraction 0.2 held out, stratified


def test_tiny_imagenet_real_zip(shared_data, cache):
    splits = load_dataset(whole("tiny-imagenet", shared_data, cache))
    assert splits.num_classes == 200 and splits.image_shape == (3, 64, 64)
    assert torch.bincount(splits.train.labels).tolist() == [100] * 200
    assert torch.bincount(splits.test.labels).tolist() == [50] * 200
    with zipfile.ZipFile(shared_data / "tiny-imagenet-200-subset.zip") as zf:  # the labels, read independently
        wnids = zf.read("tiny-imagenet-200/wnids.txt").decode().split()
        lines = zf.read("tiny-imagenet-200/val/val_annotations.txt").decode().splitlines()
    expected = [wnids.index(line.split("\t")[1]) for line in lines if line.strip()]
    assert splits.test.labels.tolist() == expected
    assert len(set(splits.class_names)) == 200
