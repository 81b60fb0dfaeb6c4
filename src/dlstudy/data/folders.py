"""Image trees: the generic `<split>/<class>/<image>` ImageFolder layout and Tiny ImageNet's official layout."""

from __future__ import annotations

import logging
from collections import defaultdict

import torch

from dlstudy.data.sources import IMAGE_EXTENSIONS, Tree, decode_images, is_image_name, probe_image
from dlstudy.data.splits import RawData, Split
from dlstudy.errors import DataError

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


def _scan(tree: Tree) -> dict[str, dict[str, list[str]]]:
    """{split: {class: [relative image names]}} of every `split/class/image` entry; what else lies under a split
    folder is named in a warning (`_warn_left_out`), never dropped in silence."""
    found: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    left_out: dict[tuple[str, str], list[str]] = defaultdict(list)  # (folder, why) -> file names
    for name in tree.names():
        parts = name.split("/")
        if parts[0] not in SPLIT_NAMES or len(parts) < 2 or any(p.startswith(".") for p in parts):
            continue  # outside the split folders, or hidden (.DS_Store, .git)
        if len(parts) == 3 and is_image_name(parts[2]):
            found[parts[0]][parts[1]].append(name)
        elif len(parts) == 3:
            left_out[(f"{parts[0]}/{parts[1]}", "not image files (by extension)")].append(parts[2])
        elif len(parts) == 2:
            left_out[(parts[0], "files beside the class folders, not in one")].append(parts[1])
        else:
            left_out[("/".join(parts[:2]), "in sub-folders of a class folder (only split/class/image is read)")
                     ].append("/".join(parts[2:]))
    _warn_left_out(tree, left_out)
    return found


def _warn_left_out(tree: Tree, left_out: dict[tuple[str, str], list[str]]) -> None:
    for (folder, why), names in sorted(left_out.items()):
        shown = ", ".join(names[:3]) + (f", ... ({len(names)} in all)" if len(names) > 3 else "")
        log.warning("%s: %d file(s) left out, %s: %s", tree.describe(folder), len(names), why, shown)
    for name, why in tree.skipped():
        if name.split("/")[0] in SPLIT_NAMES:
            log.warning("%s: left out: %s", tree.describe(name), why)


def _warn_empty_class_folders(tree: Tree, found: dict[str, dict[str, list[str]]]) -> None:
    """A `split/class/` folder without images is left out of the classes: say so, naming it (folders not read at
    all were named by `_warn_left_out` with their own reason)."""
    not_read = {name for name, _ in tree.skipped()}
    for folder in tree.folders():
        parts = folder.split("/")
        if len(parts) == 2 and parts[0] in SPLIT_NAMES and not parts[1].startswith(".") \
                and parts[1] not in found.get(parts[0], {}) and folder not in not_read:
            log.warning("%s: class folder has no images (%s); left out of the classes", tree.describe(folder),
                        ", ".join(e for e in IMAGE_EXTENSIONS[:4]) + ", ...")


def _target(tree: Tree, first: str, image_size: int | None, mode: str | None) -> tuple[str, tuple[int, int]]:
    """Decode mode and (W, H): `image_size` squared when given, else the first image's size."""
    probed_mode, probed_size = probe_image(tree.read(first), tree.describe(first))
    size = (image_size, image_size) if image_size else probed_size
    return mode or probed_mode, size


def _decode_split(tree: Tree, per_class: dict[str, list[str]], class_index: dict[str, int], mode: str,
                  size: tuple[int, int], split: str) -> Split:
    names, labels = [], []
    for cls in sorted(per_class):
        if cls not in class_index:
            raise DataError(f"{tree.describe(split + '/' + cls)}: class folder {cls!r} has no counterpart in train/ "
                            f"(train classes: {sorted(class_index)[:10]}...)")
        names.extend(per_class[cls])
        labels.extend([class_index[cls]] * len(per_class[cls]))
    images = decode_images(tree, names, mode, size, desc=f"decoding {split}")
    return Split(torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64), names)


def load_image_tree(tree: Tree, image_size: int | None, mode: str | None = None) -> RawData:
    """`train/<class>/<image>` (required) plus optional `val/` and `test/` with the same class folders.

    Images are converted to `mode` ('L' or 'RGB'; default: the first image's, gray stays 1-channel) and resized to
    `image_size` squared, or to the first training image's size when `image_size` is None.
    """
    found = _scan(tree)
    # a tree without train/ (only test/ and/or val/) can be evaluated on, not trained on: its pool stays empty
    main = "train" if found.get("train") else next((s for s in ("test", "val") if found.get(s)), None)
    if main is None:
        raise DataError(f"{tree.describe()}: no images found as train/<class>/<image> (or test/<class>/<image> "
                        f"for evaluation; extensions {', '.join(('.jpg', '.png', '...'))})")
    _warn_empty_class_folders(tree, found)
    class_names = sorted(found["train"]) if main == "train" else sorted(set(found.get("test", {})) |
                                                                          set(found.get("val", {})))
    if len(class_names) < 2:
        raise DataError(f"{tree.describe(main)}: a classification dataset needs at least two classes (class "
                        f"folders with images), found {len(class_names)}: {class_names}")
    class_index = {c: i for i, c in enumerate(class_names)}
    first = found[main][sorted(found[main])[0]][0]
    mode, size = _target(tree, first, image_size, mode)
    splits = {s: _decode_split(tree, found[s], class_index, mode, size, s) for s in SPLIT_NAMES if found.get(s)}
    if "train" not in splits:
        c = 1 if mode == "L" else 3
        splits["train"] = Split(torch.zeros((0, c, size[1], size[0]), dtype=torch.uint8), torch.zeros(0))
    return RawData(class_names=class_names, pool=splits["train"], test=splits.get("test"), val=splits.get("val"))


# ------------------------------------------------------------------------------------------------ Tiny ImageNet


def _read_lines(tree: Tree, name: str) -> list[str]:
    try:
        return tree.read(name).decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{tree.describe(name)}: not UTF-8 text: {exc}") from None


def _human_names(tree: Tree, wnids: list[str]) -> list[str]:
    """First synonym of each wnid from words.txt ('n01443537\\tgoldfish, Carassius auratus'); wnid if absent."""
    words: dict[str, str] = {}
    if tree.exists("words.txt"):
        for line in _read_lines(tree, "words.txt"):
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    names = [words.get(w) or w for w in wnids]
    counts = defaultdict(int)
    for n in names:
        counts[n] += 1
    return [f"{n} ({w})" if counts[n] > 1 else n for n, w in zip(names, wnids)]  # keep names unique


def _val_labels(tree: Tree, class_index: dict[str, int]) -> tuple[list[str], list[int]]:
    """Image names and labels from val/val_annotations.txt ('val_0.JPEG\\tn03444034\\t0\\t32\\t44\\t62')."""
    ann = "val/val_annotations.txt"
    if not tree.exists(ann):
        raise DataError(f"{tree.describe(ann)}: missing (the val labels of Tiny ImageNet)")
    names, labels = [], []
    for lineno, line in enumerate(_read_lines(tree, ann), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{tree.describe(ann)}, line {lineno}: expected '<image>\\t<wnid>\\t...', got {line!r}")
        image, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in class_index:
            raise DataError(f"{tree.describe(ann)}, line {lineno}: unknown wnid {wnid!r} (not in wnids.txt)")
        if not tree.exists(f"val/images/{image}"):
            raise DataError(f"{tree.describe(ann)}, line {lineno}: image {tree.describe('val/images/' + image)} not found")
        names.append(f"val/images/{image}")
        labels.append(class_index[wnid])
    return names, labels


def load_tiny_imagenet(tree: Tree, image_size: int | None) -> RawData:
    """`tree` is the tiny-imagenet-200 folder (or that folder inside the zip). The labelled val/ is the test split."""
    if not tree.exists("wnids.txt"):
        raise DataError(f"{tree.describe('wnids.txt')}: missing (the class list of Tiny ImageNet)")
    wnids = [w.strip() for w in _read_lines(tree, "wnids.txt") if w.strip()]
    class_index = {w: i for i, w in enumerate(wnids)}
    train_names, train_labels = [], []
    by_class: dict[str, list[str]] = defaultdict(list)
    for name in tree.names():
        parts = name.split("/")  # train/<wnid>/images/<file>
        if len(parts) == 4 and parts[0] == "train" and parts[2] == "images" and is_image_name(parts[3]):
            by_class[parts[1]].append(name)
    unknown = sorted(set(by_class) - set(class_index))
    if unknown:
        raise DataError(f"{tree.describe('train')}: class folder(s) {unknown[:5]} not listed in wnids.txt")
    for wnid in wnids:
        train_names.extend(by_class.get(wnid, []))
        train_labels.extend([class_index[wnid]] * len(by_class.get(wnid, [])))
    if not train_names:
        raise DataError(f"{tree.describe('train')}: no images found as train/<wnid>/images/<image>")
    size = (image_size or 64, image_size or 64)
    val_names, val_labels = _val_labels(tree, class_index)
    # some Tiny ImageNet JPEGs are grayscale: RGB conversion keeps every image 3-channel
    train = Split(torch.from_numpy(decode_images(tree, train_names, "RGB", size, "decoding train")),
                  torch.tensor(train_labels, dtype=torch.int64), train_names)
    test = Split(torch.from_numpy(decode_images(tree, val_names, "RGB", size, "decoding val")),
                 torch.tensor(val_labels, dtype=torch.int64), val_names)
    return RawData(class_names=_human_names(tree, wnids), pool=train, test=test)
