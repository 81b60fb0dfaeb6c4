"""Splits (vs scikit-learn), normalisation stats (vs a float64 oracle), the batch pipeline and augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dlstudy.config import DataConfig
from dlstudy.data import (
    AUGMENT_PRESETS,
    DATASETS,
    Split,
    as_torch_dataset,
    batches,
    channel_stats,
    ensure_channels,
    load_dataset,
    stratified_take,
    to_float,
)
from dlstudy.data.pipeline import random_pad_crop, random_resized_crop
from dlstudy.data.registry import resize_images
from dlstudy.errors import DataError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLSTUDY_CACHE", str(tmp_path / "cache"))


def toy_split(n=40, c=3, h=6, w=5, k=4, seed=0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=gen), torch.arange(n) % k)


# ------------------------------------------------------------------------------------------------ splits


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=6), fraction=st.floats(0.0, 0.95),
       seed=st.integers(0, 10))
def test_stratified_take_is_a_proportional_partition(counts, fraction, seed):
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])[torch.randperm(sum(counts))]
    n_take = int(round(fraction * len(labels)))
    taken, rest = stratified_take(labels, n_take, seed)
    assert len(taken) == n_take and sorted(torch.cat([taken, rest]).tolist()) == list(range(len(labels)))
    per_class = torch.bincount(labels[taken], minlength=len(counts))
    for k, c in enumerate(counts):  # each class within one image of its exact share
        assert abs(int(per_class[k]) - c * n_take / len(labels)) < 1.0 + 1e-9
    again, _ = stratified_take(labels, n_take, seed)
    assert torch.equal(taken, again)


def test_stratified_take_matches_sklearn_class_counts():
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(0)
    labels = rng.choice(7, size=1000, p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.07, 0.03])
    taken, _ = stratified_take(torch.from_numpy(labels), 250, seed=3)
    _, sk_test = train_test_split(np.arange(1000), test_size=250, stratify=labels, random_state=3)
    ours = np.bincount(labels[taken.numpy()], minlength=7)
    theirs = np.bincount(labels[sk_test], minlength=7)
    assert ours.sum() == theirs.sum() == 250 and np.abs(ours - theirs).max() <= 1
    other, _ = stratified_take(torch.from_numpy(labels), 250, seed=4)
    assert not torch.equal(taken, other)  # the seed matters


def test_digits_default_split_is_fixed_seeded_stratified():
    splits = load_dataset(DataConfig())  # the embedded default
    assert splits.name == "digits" and splits.image_shape == (1, 8, 8) and splits.num_classes == 10
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1294, 144, 359)
    assert splits.train.images.max() == 255 and splits.train.images.dtype == torch.uint8
    full = torch.bincount(torch.cat([splits.train.labels, splits.val.labels, splits.test.labels]))
    test_counts = torch.bincount(splits.test.labels, minlength=10)
    assert (test_counts.double() - full.double() * 0.2).abs().max() < 1.0
    again = load_dataset(DataConfig())
    assert torch.equal(again.test.images, splits.test.images)
    other = load_dataset(DataConfig(split_seed=1))
    assert not torch.equal(other.test.images, splits.test.images)


def test_caps_are_stratified_and_bad_values_rejected():
    splits = load_dataset(DataConfig(max_train=100, max_eval=50))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 50, 50)
    assert torch.bincount(splits.train.labels).tolist() == [10] * 10
    with pytest.raises(DataError, match="test_fraction"):
        load_dataset(DataConfig(test_fraction=1.5))
    with pytest.raises(DataError, match="data.augment: unknown preset 'wild'; presets: none, flip"):
        load_dataset(DataConfig(augment="wild"))
    with pytest.raises(DataError, match="data.normalize"):
        load_dataset(DataConfig(normalize="z-score"))


def test_digits_image_size_resizes():
    splits = load_dataset(DataConfig(image_size=16, normalize="imagenet"))
    assert splits.image_shape == (1, 16, 16) and len(splits.mean) == 1


def test_every_registered_dataset_is_well_formed():
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.layout and spec.description and callable(spec.loader)
        assert spec.num_classes is None or spec.num_classes >= 2


# ------------------------------------------------------------------------------------------------ normalisation


def test_channel_stats_match_float64_oracle():
    images = toy_split(n=50, h=9, w=7).images
    mean, std = channel_stats(images)
    x = images.double() / 255
    assert np.allclose(mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-12)
    assert np.allclose(std, x.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-12)


def test_to_float_normalises_like_torchvision():
    from torchvision.transforms import v2

    images = toy_split().images
    mean, std = (0.2, 0.4, 0.6), (0.1, 0.2, 0.3)
    expected = v2.Normalize(mean, std)(v2.ToDtype(torch.float32, scale=True)(images))
    assert torch.allclose(to_float(images, mean, std), expected, atol=1e-5)
    assert torch.allclose(to_float(images[0]), images[0].float() / 255)


# ------------------------------------------------------------------------------------------------ batches


def test_batches_cover_each_image_once_and_are_reproducible():
    split = toy_split(n=37)
    epoch0 = list(batches(split, 8, shuffle=True, seed=1, epoch=0))
    assert [len(y) for _, y in epoch0] == [8, 8, 8, 8, 5]
    seen = torch.cat([x for x, _ in epoch0]) * 255
    assert sorted(map(tuple, seen.round().to(torch.uint8).flatten(1).tolist())) == \
        sorted(map(tuple, split.images.flatten(1).tolist()))
    again = list(batches(split, 8, shuffle=True, seed=1, epoch=0))
    assert all(torch.equal(a[1], b[1]) and torch.equal(a[0], b[0]) for a, b in zip(epoch0, again))
    epoch1 = torch.cat([y for _, y in batches(split, 8, shuffle=True, seed=1, epoch=1)])
    assert not torch.equal(epoch1, torch.cat([y for _, y in epoch0]))  # a new order each epoch
    ordered = torch.cat([y for _, y in batches(split, 8, shuffle=False, drop_last=True)])
    assert torch.equal(ordered, split.labels[:32])


def test_batches_normalise_with_mean_std_and_sampler():
    split = toy_split(n=20, c=1)
    mean, std = (0.5,), (0.25,)
    (x, y), = batches(split, 20, shuffle=False, mean=mean, std=std)
    assert torch.allclose(x, to_float(split.images, mean, std)) and x.dtype == torch.float32
    sampler = [[0, 4, 8], [1, 5]]
    got = [y.tolist() for _, y in batches(split, 99, shuffle=True, sampler=sampler)]
    assert got == [split.labels[[0, 4, 8]].tolist(), split.labels[[1, 5]].tolist()]


def test_sampler_set_epoch_is_called():
    class Sampler:
        def __init__(self):
            self.epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            yield [self.epoch]

    sampler = Sampler()
    (_, y), = batches(toy_split(), 4, shuffle=True, epoch=3, sampler=sampler)
    assert sampler.epoch == 3 and y.tolist() == [3 % 4]


def _naive_pad_crop_candidates(img: torch.Tensor, pad: int, flip: bool) -> list[torch.Tensor]:
    """Every output a pad-`pad` crop (+ optional flip) of one (C, H, W) image can produce, by a plain loop."""
    c, h, w = img.shape
    padded = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=img.dtype)
    padded[:, pad:pad + h, pad:pad + w] = img
    outs = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            outs.append(crop)
            if flip:
                outs.append(crop.flip(2))
    return outs


def test_flip_crop_outputs_are_crops_of_the_padded_input():
    split = toy_split(n=12, h=8, w=8)
    (x, y), = batches(split, 12, shuffle=False, augment="flip_crop", seed=5)
    out = (x * 255).round().to(torch.uint8)
    changed = 0
    for i in range(12):
        candidates = _naive_pad_crop_candidates(split.images[i], 4, flip=True)
        assert any(torch.equal(out[i], cand) for cand in candidates)
        changed += not torch.equal(out[i], split.images[i])
    assert changed >= 10  # 1 in 162 chance per image of the identity


def test_pad_crop_offsets_cover_the_range():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(400, 1, 1, 1)
    out = random_pad_crop(x, 2, torch.Generator().manual_seed(0))
    corners = {tuple(o[0, 0, :2].tolist()) for o in out}
    assert len(corners) > 10 and out.shape == x.shape


def test_standard_preset_is_a_bounded_reproducible_resized_crop():
    split = toy_split(n=16, h=16, w=16)
    run = lambda: next(iter(batches(split, 16, shuffle=True, seed=2, augment="standard")))  # noqa: E731
    (x1, y1), (x2, y2) = run(), run()
    assert torch.equal(y1, y2)
    assert torch.equal(x1, x2) and x1.shape == (16, 3, 16, 16) and x1.dtype == torch.float32
    assert x1.min() >= 0 and x1.max() <= 1 + 1e-6  # bilinear stays in the convex hull of the pixels
    full = random_resized_crop(torch.ones(4, 1, 8, 8), (1.0, 1.0), torch.Generator().manual_seed(0))
    assert torch.allclose(full, torch.ones(4, 1, 8, 8))


@pytest.mark.parametrize("preset", list(AUGMENT_PRESETS))
def test_every_preset_keeps_shape_labels_and_gray(preset):
    split = toy_split(n=10, c=1, h=12, w=12)
    xs, ys = zip(*batches(split, 4, shuffle=True, augment=preset, mean=(0.5,), std=(0.2,)))
    assert all(x.shape[1:] == (1, 12, 12) for x in xs) and sorted(torch.cat(ys).tolist()) == sorted(split.labels.tolist())


def test_unknown_preset_and_bad_batch_size():
    with pytest.raises(DataError, match="unknown augmentation preset 'mixup'"):
        batches(toy_split(), 4, shuffle=False, augment="mixup")  # raised at the call, not at the first batch
    with pytest.raises(ValueError, match="batch_size"):
        batches(toy_split(), 0, shuffle=False)


# ------------------------------------------------------------------------------------------------ helpers


def test_ensure_channels():
    gray = toy_split(c=1).images
    rgb = ensure_channels(gray, 3)
    assert rgb.shape[1] == 3 and torch.equal(rgb[:, 2], gray[:, 0])
    assert ensure_channels(rgb, 3) is rgb
    assert ensure_channels(rgb.float(), 1).shape[1] == 1
    with pytest.raises(ValueError, match="2-channel"):
        ensure_channels(torch.zeros(1, 2, 3, 3), 3)


def test_as_torch_dataset_with_dataloader_and_v2_transform():
    from torchvision.transforms import v2

    split = toy_split(n=10)
    ds = as_torch_dataset(split, mean=(0.5,) * 3, std=(0.5,) * 3, class_names=["a", "b", "c", "d"])
    assert len(ds) == 10 and ds.classes == ["a", "b", "c", "d"] and ds.targets == split.labels.tolist()
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=10)))
    assert torch.allclose(x, to_float(split.images, (0.5,) * 3, (0.5,) * 3)) and torch.equal(y, split.labels)
    flipped = as_torch_dataset(split, transform=v2.RandomHorizontalFlip(p=1.0))
    assert torch.equal(flipped[3][0], split.images[3].flip(2))


def test_resize_images_matches_torchvision_resize():
    from torchvision.transforms import v2

    images = toy_split(n=3, h=28, w=28).images
    ours = resize_images(images, 14)
    theirs = v2.Resize((14, 14), antialias=True)(images)
    assert ours.shape == (3, 3, 14, 14) and (ours.int() - theirs.int()).abs().max() <= 1


def test_split_validates_its_tensors():
    with pytest.raises(ValueError, match="uint8"):
        Split(torch.zeros(2, 1, 3, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="labels"):
        Split(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.zeros(3))
