"""CIFAR-10's official python batches (Krizhevsky 2009), read with a restricted unpickler.

A pickle can call any importable function while loading. The official batches only need numpy's array
reconstruction, so `RestrictedUnpickler.find_class` hands out exactly those pieces and refuses everything else:
a batch file that tries to reach e.g. `os.system` raises DataError before anything runs.
"""

from __future__ import annotations

import codecs
import io
import pickle

import numpy as np
import torch

from dlstudy.data.sources import Tree
from dlstudy.data.splits import RawData, Split
from dlstudy.errors import DataError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _numpy_globals() -> dict[tuple[str, str], object]:
    try:  # numpy >= 2 moved the internals to numpy._core; pickles name either location
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct  # protocol <= 4 arrays
        allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5 arrays
    # Python 3 writes `bytes` in protocol 2 as _codecs.encode(text, 'latin1'): a pure conversion, no side effects.
    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


ALLOWED_GLOBALS = _numpy_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose only reachable globals are numpy's array reconstruction pieces (ALLOWED_GLOBALS)."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy array pieces are allowed") from None


def restricted_loads(data: bytes, where: str):
    """Unpickle `data` (python-2 batches: bytes keys) with RestrictedUnpickler; DataError naming `where` on failure."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, LookupError,
            OverflowError, MemoryError) as exc:
        raise DataError(f"{where}: not a valid CIFAR pickle (unexpected content): {exc}") from None


def _field(batch: dict, key: str, where: str):
    for k in (key.encode(), key):  # python-2 pickles give bytes keys; re-pickled ones may give str keys
        if k in batch:
            return batch[k]
    raise DataError(f"{where}: unexpected content: no '{key}' entry (found {sorted(map(str, batch))})")


def read_batch(tree: Tree, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images (n, 3, 32, 32) uint8 and labels (n,) int64, validated."""
    where = tree.describe(name)
    batch = restricted_loads(tree.read(name), where)
    if not isinstance(batch, dict):
        raise DataError(f"{where}: unexpected content: expected a dict, got {type(batch).__name__}")
    data = _field(batch, "data", where)
    labels = np.asarray(_field(batch, "labels", where))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: unexpected content: 'data' must be a uint8 array (n, 3072), got {got}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: unexpected content: 'labels' must be {data.shape[0]} integers, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: label out of range 0..9 ({labels.min()}..{labels.max()})")
    # rows are 1024 red, 1024 green, 1024 blue values, each row-major 32x32
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _class_names(tree: Tree) -> list[str]:
    if not tree.exists(META):
        return list(CLASS_NAMES)
    meta = restricted_loads(tree.read(META), tree.describe(META))
    names = _field(meta, "label_names", tree.describe(META)) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{tree.describe(META)}: unexpected content: 'label_names' must list 10 class names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _to_split(parts: list[tuple[np.ndarray, np.ndarray]]) -> Split:
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


def load_cifar_batches(tree: Tree) -> RawData:
    """`tree` is the cifar-10-batches-py folder (or that folder inside the official tar.gz)."""
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if not tree.exists(n)]
    if missing:
        raise DataError(f"{tree.describe()}: missing CIFAR-10 batch file(s) {missing}")
    pool = _to_split([read_batch(tree, n) for n in TRAIN_BATCHES])
    test = _to_split([read_batch(tree, TEST_BATCH)])
    return RawData(class_names=_class_names(tree), pool=pool, test=test)
