"""Loaders against tiny files written in each exact on-disk format, the cache, and every bad-input error."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dlstudy.config import DataConfig
from dlstudy.data import DATASETS, load_dataset
from dlstudy.data.cifar import RestrictedUnpickler, restricted_loads
from dlstudy.data.mnist import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from dlstudy.errors import DataError
from helpers import encode, make_image_tree

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder and no default data roots from the environment."""
    monkeypatch.setenv("DLSTUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DLSTUDY_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


def cfg(name: str, root: Path | str | None = None, **kw) -> DataConfig:
    return DataConfig(name=name, root=str(root) if root is not None else None, **kw)


# ------------------------------------------------------------------------------------------------ MNIST (IDX)


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """IDX: big-endian magic (0, 0, dtype 0x08, ndim), big-endian dims, raw uint8 data."""
    magic = magic if magic is not None else (0x0800 | array.ndim)
    payload = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(payload) if path.name.endswith(".gz") else payload)
    return path


def make_mnist(folder: Path, n_train=30, n_test=10, gz=True, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"train": (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), np.arange(n_train, dtype=np.uint8) % 10),
            "t10k": (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), np.arange(n_test, dtype=np.uint8) % 10)}
    ext = ".gz" if gz else ""
    for split, (images, labels) in data.items():
        write_idx(folder / f"{split}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", labels)
    return data


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_idx_gz_and_raw_flat_and_torchvision_layout(tmp_path, gz, layout):
    folder = tmp_path / "root" / ("mnist" if layout == "flat" else "MNIST/raw")
    data = make_mnist(folder, gz=gz)
    splits = load_dataset(cfg("mnist", tmp_path / "root", val_fraction=0.2))
    assert splits.image_shape == (1, 28, 28) and splits.class_names == [str(d) for d in range(10)]
    assert len(splits.test) == 10 and len(splits.train) + len(splits.val) == 30 and len(splits.val) == 6
    assert torch.equal(splits.test.images[:, 0], torch.from_numpy(data["t10k"][0]))  # official test kept in order
    assert torch.equal(splits.test.labels, torch.from_numpy(data["t10k"][1]).long())
    # every training image lands in train or val with its own label
    pool = torch.cat([splits.train.images, splits.val.images])[:, 0].reshape(30, -1)
    original = torch.from_numpy(data["train"][0]).reshape(30, -1)
    assert sorted(map(tuple, pool.tolist())) == sorted(map(tuple, original.tolist()))


def test_idx_wrong_magic_names_the_file(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(30, np.uint8), magic=0x00000803 ^ 0x1000)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: wrong IDX magic"):
        load_dataset(cfg("mnist", tmp_path))


def test_idx_truncated_names_the_file(tmp_path):
    make_mnist(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: IDX size mismatch.*truncated"):
        load_dataset(cfg("mnist", tmp_path))
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="truncated"):
        read_idx(path, IMAGES_MAGIC)


def test_idx_corrupt_gzip_and_label_count_mismatch(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: cannot read IDX"):
        load_dataset(cfg("mnist", tmp_path))
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29, np.uint8))
    with pytest.raises(DataError, match="29 labels for 30 images"):
        load_dataset(cfg("mnist", tmp_path))
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC).shape == (10,)


# ------------------------------------------------------------------------------------------------ CIFAR-10 batches


def pickle_batch(obj, protocol: int) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


def make_cifar_batches(folder: Path, n_per_batch=6, protocol=2, seed=0) -> dict:
    """Like the real cifar-10-batches-py: dicts with bytes keys, data (n, 3072) uint8 rows R|G|B, labels a list."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(n_per_batch) + i) % 10]
        batch = {b"batch_label": f"batch {i}".encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n_per_batch)]}
        (folder / name).write_bytes(pickle_batch(batch, protocol))
        out[name] = (data, labels)
    meta = {b"num_cases_per_batch": n_per_batch, b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle_batch(meta, protocol))
    return out


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_python_batches(tmp_path, protocol):
    data = make_cifar_batches(tmp_path / "cifar-10-batches-py", protocol=protocol)
    splits = load_dataset(cfg("cifar10", tmp_path, val_fraction=0.2, normalize="none"))
    assert splits.class_names == CIFAR_NAMES and splits.image_shape == (3, 32, 32)
    assert len(splits.test) == 6 and len(splits.train) + len(splits.val) == 30
    test_data, test_labels = data["test_batch"]
    # row layout: 1024 red, then green, then blue values, each a row-major 32x32 plane
    assert torch.equal(splits.test.images[2, 1], torch.from_numpy(test_data[2, 1024:2048].reshape(32, 32)))
    assert splits.test.labels.tolist() == test_labels
    assert splits.mean == (0.0, 0.0, 0.0) and splits.std == (1.0, 1.0, 1.0)


def test_cifar_official_tar_gz(tmp_path):
    make_cifar_batches(tmp_path / "x" / "cifar-10-batches-py")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "x" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    splits = load_dataset(cfg("cifar10", tmp_path / "cifar-10-python.tar.gz"))
    assert len(splits.test) == 6 and splits.class_names == CIFAR_NAMES


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match=r"refused global (posix|os|nt)\.system"):
        RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar_batches(folder)
    (folder / "data_batch_3").write_bytes(payload)
    with pytest.raises(DataError, match=r"data_batch_3: not a valid CIFAR pickle.*refused global"):
        load_dataset(cfg("cifar10", tmp_path))
    assert not marker.exists()  # nothing ran
    # other callables (builtins eval, subprocess) are refused the same way
    evil = pickle.dumps(type("E", (), {"__reduce__": lambda self: (eval, ("1+1",))})())
    with pytest.raises(DataError, match="refused global builtins.eval"):
        restricted_loads(evil, "x")


def test_cifar_unexpected_content_names_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar_batches(folder)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"test_batch: unexpected content: 'data' must be a uint8 array"):
        load_dataset(cfg("cifar10", tmp_path))
    (folder / "test_batch").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="test_batch: unexpected content: expected a dict"):
        load_dataset(cfg("cifar10", tmp_path))
    (folder / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="test_batch: not a valid CIFAR pickle"):
        load_dataset(cfg("cifar10", tmp_path))


# ------------------------------------------------------------------------------------------------ image trees


def test_imagefolder_png_jpeg_labels_and_official_splits(tmp_path):
    arrays = make_image_tree(tmp_path / "tree", splits=("train", "val", "test"))
    splits = load_dataset(cfg("imagefolder", tmp_path / "tree", normalize="none"))
    assert splits.class_names == ["cat", "dog", "emu"] and splits.image_shape == (3, 10, 12)
    assert len(splits.train) == len(splits.val) == len(splits.test) == 12  # official val and test used as they are
    assert splits.test.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    png = arrays[tmp_path / "tree" / "test" / "dog" / "002.png"]  # PNG is lossless: exact pixels
    assert torch.equal(splits.test.images[6], torch.from_numpy(png).permute(2, 0, 1))


def test_imagefolder_gray_stays_one_channel_and_resizes(tmp_path):
    make_image_tree(tmp_path / "tree", gray=True, per_class=10)
    splits = load_dataset(cfg("imagefolder", tmp_path / "tree", image_size=16, test_fraction=0.2, val_fraction=0.25))
    assert splits.image_shape == (1, 16, 16) and len(splits.mean) == 1
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 6, 6)
    assert torch.bincount(splits.test.labels).tolist() == [2, 2, 2]  # stratified


def test_imagefolder_mixed_sizes_use_first_image_size(tmp_path):
    make_image_tree(tmp_path / "tree", classes=("a",), per_class=2, size=(8, 8))
    make_image_tree(tmp_path / "tree", classes=("b",), per_class=3, size=(20, 14), seed=1)
    splits = load_dataset(cfg("imagefolder", tmp_path / "tree", test_fraction=0.4, val_fraction=0.0))
    assert splits.image_shape == (3, 8, 8) and splits.class_names == ["a", "b"]


def test_cifar_imagefolder_folder_and_tar_gz(tmp_path):
    make_image_tree(tmp_path / "src", classes=CIFAR_NAMES, per_class=2, size=(32, 32))
    with tarfile.open(tmp_path / "cifar10-train-jpg.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "train", arcname="train")
    from_tar = load_dataset(cfg("cifar10", tmp_path, test_fraction=0.5, val_fraction=0.0))
    from_dir = load_dataset(cfg("cifar10", tmp_path / "src", test_fraction=0.5, val_fraction=0.0))
    assert from_tar.source.endswith(".tar.gz") and from_dir.source == str(tmp_path / "src")
    assert from_tar.class_names == CIFAR_NAMES and len(from_tar.train) == len(from_tar.test) == 10
    assert torch.equal(from_tar.train.images, from_dir.train.images)


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
    arrays = make_image_tree(tmp_path / "tree")
    bad = tmp_path / "tree" / "train" / "dog" / "001.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(DataError, match=r"dog/001\.jpg: cannot decode image"):
        load_dataset(cfg("imagefolder", tmp_path / "tree"))
    bad.write_bytes(encode(next(iter(arrays.values())), "JPEG"))
    png = tmp_path / "tree" / "train" / "emu" / "002.png"
    png.write_bytes(png.read_bytes()[:-60])  # cut inside the image data
    with pytest.raises(DataError, match=r"emu/002\.png: cannot decode image \(corrupt or truncated"):
        load_dataset(cfg("imagefolder", tmp_path / "tree"))


def test_class_folder_missing_from_train(tmp_path):
    make_image_tree(tmp_path / "tree")
    make_image_tree(tmp_path / "tree", classes=("yak",), splits=("test",))
    with pytest.raises(DataError, match="class folder 'yak' has no counterpart in train"):
        load_dataset(cfg("imagefolder", tmp_path / "tree"))


# ------------------------------------------------------------------------------------------------ Tiny ImageNet

WNIDS = ["n01443537", "n01629819", "n02099601"]
WORDS = {"n01443537": "goldfish, Carassius auratus", "n01629819": "European fire salamander, Salamandra",
         "n02099601": "golden retriever", "n09999999": "unused entry"}


def make_tiny(root: Path, per_class=3, val_per_class=2, seed=0) -> tuple[Path, list[int]]:
    """tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/images + annotations}."""
    rng = np.random.default_rng(seed)
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (base / "words.txt").write_text("".join(f"{k}\t{v}\n" for k, v in WORDS.items()))
    for w in WNIDS:
        (base / "train" / w / "images").mkdir(parents=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(per_class):
            gray = i == 0  # real Tiny ImageNet has grayscale JPEGs: they must come out RGB
            array = rng.integers(0, 256, (64, 64) if gray else (64, 64, 3), dtype=np.uint8)
            (base / "train" / w / "images" / f"{w}_{i}.JPEG").write_bytes(encode(array, "JPEG"))
    lines, val_labels = [], []
    for j in range(val_per_class * len(WNIDS)):
        label = (j * 2) % len(WNIDS)  # annotation order differs from class order
        (base / "val" / "images" / f"val_{j}.JPEG").write_bytes(encode(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "JPEG"))
        lines.append(f"val_{j}.JPEG\t{WNIDS[label]}\t0\t1\t60\t61")
        val_labels.append(label)
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base, val_labels


def zip_folder(folder: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return zip_path


def test_tiny_imagenet_folder_and_zip_agree(tmp_path):
    base, val_labels = make_tiny(tmp_path / "unpacked")
    zip_folder(base, tmp_path / "tiny-imagenet-200.zip")
    from_dir = load_dataset(cfg("tiny-imagenet", tmp_path / "unpacked", val_fraction=0.0, normalize="imagenet"))
    from_zip = load_dataset(cfg("tiny-imagenet", tmp_path, val_fraction=0.0, normalize="imagenet"))
    assert from_zip.source.endswith(".zip") and from_dir.source.endswith("tiny-imagenet-200")
    assert from_dir.class_names == ["goldfish", "European fire salamander", "golden retriever"]
    assert from_dir.image_shape == (3, 64, 64) and len(from_dir.train) == 9
    assert from_dir.test.labels.tolist() == val_labels  # val labels come from val_annotations.txt
    assert torch.equal(from_dir.train.images, from_zip.train.images) and torch.equal(from_dir.test.images, from_zip.test.images)
    assert from_dir.mean == (0.485, 0.456, 0.406)


def test_tiny_imagenet_unknown_wnid_names_file_and_line(tmp_path):
    base, _ = make_tiny(tmp_path)
    ann = base / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split("\t")[1], "n00000042")
    ann.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"val_annotations\.txt, line 4: unknown wnid 'n00000042'"):
        load_dataset(cfg("tiny-imagenet", tmp_path))


def test_tiny_imagenet_zip_missing_annotation_image(tmp_path):
    base, _ = make_tiny(tmp_path / "u")
    (base / "val" / "images" / "val_2.JPEG").unlink()
    zip_folder(base, tmp_path / "t.zip")
    with pytest.raises(DataError, match=r"t\.zip!tiny-imagenet-200/val/val_annotations\.txt, line 3: image .*val_2"):
        load_dataset(cfg("tiny-imagenet", tmp_path / "t.zip"))


# ------------------------------------------------------------------------------------------------ finding, cache


def test_missing_dataset_names_dataset_paths_and_layout(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset(cfg("mnist", tmp_path / "nowhere"))
    message = str(info.value)
    assert "dataset 'mnist' not found" in message and str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "--download" in message
    with pytest.raises(DataError, match="needs --data-root|pass --data-root"):
        load_dataset(cfg("imagefolder"))


def test_unknown_dataset_lists_registered_ones():
    with pytest.raises(DataError) as info:
        load_dataset(cfg("imagenet-1k"))
    assert all(name in str(info.value) for name in DATASETS)


def test_download_without_network_says_so(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match=r"--download of mnist .* failed .*no network.*train-images-idx3-ubyte"):
        load_dataset(cfg("mnist", tmp_path, download=True))
    with pytest.raises(DataError, match="tiny-imagenet has no downloader"):
        load_dataset(cfg("tiny-imagenet", tmp_path, download=True))


def test_download_places_files_where_they_are_found(tmp_path, monkeypatch):
    import torchvision.datasets

    def fake_mnist(root, train, download):  # what torchvision does: files land in ROOT/MNIST/raw
        make_mnist(Path(root) / "MNIST" / "raw")

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    splits = load_dataset(cfg("mnist", tmp_path / "dl", download=True))
    assert splits.source == str(tmp_path / "dl" / "MNIST" / "raw") and len(splits.test) == 10


def test_cache_round_trip_and_invalidation(tmp_path):
    make_mnist(tmp_path / "m")
    first = load_dataset(cfg("mnist", tmp_path / "m"))
    files = list((tmp_path / "cache").glob("mnist-*.pt"))
    assert len(files) == 1 and "from cache" not in first.notes[0]
    second = load_dataset(cfg("mnist", tmp_path / "m"))
    assert "from cache" in second.notes[0]
    for a, b in [(first.train, second.train), (first.val, second.val), (first.test, second.test)]:
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    # a changed source file (new size/mtime) gets a new cache entry; a resized request too
    make_mnist(tmp_path / "m", n_test=12, seed=1)
    third = load_dataset(cfg("mnist", tmp_path / "m"))
    assert "from cache" not in third.notes[0] and len(third.test) == 12
    assert load_dataset(cfg("mnist", tmp_path / "m", image_size=14)).image_shape == (1, 14, 14)
    assert len(list((tmp_path / "cache").glob("mnist-*.pt"))) == 3
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # atomic writes leave no temp files


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    make_mnist(tmp_path / "m")
    load_dataset(cfg("mnist", tmp_path / "m"))
    (cache_file,) = (tmp_path / "cache").glob("mnist-*.pt")
    cache_file.write_bytes(b"garbage")
    again = load_dataset(cfg("mnist", tmp_path / "m"))
    assert "from cache" not in again.notes[0] and len(again.test) == 10
    off = load_dataset(cfg("mnist", tmp_path / "m", cache=False))
    assert torch.equal(off.test.images, again.test.images)


def test_datasets_command_lists_every_dataset(tmp_path, capsys):
    from dlstudy.cli import main

    make_mnist(tmp_path / "root" / "mnist")
    assert main(["datasets", "--data-root", str(tmp_path / "root"), "--paths"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and line.split()[0] in DATASETS}
    assert set(lines) == set(DATASETS)
    assert " yes " in lines["mnist"] and str(tmp_path / "root" / "mnist") in lines["mnist"]
    assert " no " in lines["cifar10"] and "32x32x3" in lines["cifar10"] and "200" in lines["tiny-imagenet"]
    assert f"searched {tmp_path / 'root' / 'cifar-10-batches-py'}" in out
