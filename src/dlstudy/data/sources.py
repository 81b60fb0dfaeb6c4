"""File trees read the same way from a folder, a .zip or a .tar(.gz), and image decoding with clear errors."""

from __future__ import annotations

import copy
import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from dlstudy.errors import DataError
from dlstudy.progress import progress

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


class Tree:
    """Read-only view of files by '/'-separated relative name. Subclasses: folder, zip, tar."""

    def __init__(self, location: Path, prefix: str = ""):
        self.location = location
        self.prefix = prefix  # a sub-folder inside the tree, '' or ending in '/'

    def _all_names(self) -> list[str]:
        raise NotImplementedError

    def _read_full(self, full: str) -> bytes:
        raise NotImplementedError

    def names(self) -> list[str]:
        """Every regular file below the prefix, relative to it, sorted."""
        p = self.prefix
        return sorted(n[len(p):] for n in self._all_names() if n.startswith(p) and not n.endswith("/"))

    def _dir_names(self) -> list[str]:
        """Folders the source records on their own (so empty ones too), each ending in '/'."""
        return [n for n in self._all_names() if n.endswith("/")]  # a zip's directory entries

    def skipped(self) -> list[tuple[str, str]]:
        """(relative name, why) of folders below the prefix that were not read (DirTree: loops, unreadable)."""
        return []

    def folders(self) -> list[str]:
        """Every folder below the prefix, relative to it, without a trailing '/', sorted; empty folders included
        where the source records them (on disk, or as a zip/tar directory entry)."""
        p, found = self.prefix, set()
        for name in self._all_names() + self._dir_names():
            if name.startswith(p):
                parts = name[len(p):].split("/")[:-1]  # the folders above a file; a 'dir/' entry is its own
                found.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        return sorted(found)

    def read(self, name: str) -> bytes:
        try:
            return self._read_full(self.prefix + name)
        except (KeyError, FileNotFoundError):
            raise DataError(f"{self.describe(name)}: file not found") from None
        except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
            raise DataError(f"{self.describe(name)}: cannot read: {exc}") from None

    def exists(self, name: str) -> bool:
        return (self.prefix + name) in set(self._all_names())

    def describe(self, name: str = "") -> str:
        """Human path of `name`, e.g. data/t.zip!tiny-imagenet-200/wnids.txt for a file inside an archive."""
        inner = self.prefix + name
        if isinstance(self, DirTree):
            return str(self.location / inner) if inner else str(self.location)
        return f"{self.location}!{inner}" if inner else str(self.location)

    def sub(self, prefix: str) -> "Tree":
        """The same tree seen from sub-folder `prefix` ('' keeps it)."""
        clone = copy.copy(self)  # shares the open archive
        clone.prefix = self.prefix + (prefix.rstrip("/") + "/" if prefix else "")
        return clone


def walk_folder(location: Path, skipped: list[tuple[str, str]] | None = None):
    """os.walk of `location` that follows symlinked folders, each real folder once: yields (relative base ('' or
    ending in '/'), absolute dirpath, sorted sub-folder names, file names). A folder reached a second time (a
    symlink loop, or a second link to the same folder) and a folder that cannot be listed are not walked; each is
    appended to `skipped` as (relative name, why)."""
    skipped = [] if skipped is None else skipped
    seen = {os.path.realpath(location): ""}

    def unreadable(exc: OSError) -> None:
        rel = os.path.relpath(exc.filename, location).replace(os.sep, "/")
        skipped.append((rel, f"folder cannot be read ({exc.strerror})"))

    for dirpath, dirnames, filenames in os.walk(location, onerror=unreadable, followlinks=True):
        rel = os.path.relpath(dirpath, location)
        base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        kept = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in seen:
                first = seen[real] or "the tree's top folder"
                skipped.append((base + d, f"the same folder as {first} (a symlink loop or a second link to it), "
                                          "read once there"))
            else:
                seen[real] = base + d
                kept.append(d)
        dirnames[:] = kept
        yield base, dirpath, kept, filenames


class DirTree(Tree):
    """A folder; symlinked files and folders are followed like their targets (each real folder read once)."""

    def __init__(self, location: Path):
        super().__init__(location)
        self._names: list[str] | None = None

    def _all_names(self) -> list[str]:
        if self._names is None:
            names, dirs, skipped = [], [], []
            for base, _, dirnames, filenames in walk_folder(self.location, skipped):
                names.extend(base + f for f in filenames)
                dirs.extend(base + d + "/" for d in dirnames)
            self._names, self._dirs, self._skipped = names, dirs, skipped
        return self._names

    def _dir_names(self) -> list[str]:
        self._all_names()
        return self._dirs

    def skipped(self) -> list[tuple[str, str]]:
        self._all_names()
        p = self.prefix
        return [(n[len(p):], why) for n, why in self._skipped if n.startswith(p)]

    def _read_full(self, full: str) -> bytes:
        return (self.location / full).read_bytes()

    def exists(self, name: str) -> bool:
        return (self.location / (self.prefix + name)).is_file()


class ZipTree(Tree):
    def __init__(self, location: Path):
        super().__init__(location)
        try:
            self._zip = zipfile.ZipFile(location)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{location}: not a readable zip file: {exc}") from None
        self._names = self._zip.namelist()
        self._set = set(self._names)

    def _all_names(self) -> list[str]:
        return self._names

    def _read_full(self, full: str) -> bytes:
        return self._zip.read(full)

    def exists(self, name: str) -> bool:
        return (self.prefix + name) in self._set


class TarTree(Tree):
    """A tar(.gz) is read once, sequentially, into memory: gzip has no random access, and our archives are small."""

    def __init__(self, location: Path):
        super().__init__(location)
        self._files: dict[str, bytes] = {}
        self._dirs: list[str] = []
        try:
            with tarfile.open(location, "r:*") as tar:
                for member in progress(tar, desc=f"reading {location.name}"):
                    if member.isfile():
                        self._files[member.name.removeprefix("./")] = tar.extractfile(member).read()
                    elif member.isdir() and member.name.removeprefix("./").strip("/.") != "":
                        self._dirs.append(member.name.removeprefix("./").rstrip("/") + "/")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{location}: not a readable tar archive (truncated or corrupt?): {exc}") from None

    def _all_names(self) -> list[str]:
        return list(self._files)

    def _read_full(self, full: str) -> bytes:
        return self._files[full]

    def _dir_names(self) -> list[str]:
        return self._dirs

    def exists(self, name: str) -> bool:
        return (self.prefix + name) in self._files


def open_tree(path: Path) -> Tree:
    """A Tree over a folder, .zip or .tar(.gz)."""
    if path.is_dir():
        return DirTree(path)
    if path.name.lower().endswith(".zip"):
        return ZipTree(path)
    if path.name.lower().endswith((".tar", ".tar.gz", ".tgz")):
        return TarTree(path)
    raise DataError(f"{path}: expected a folder, a .zip or a .tar.gz")


def find_prefix(tree: Tree, marker: str) -> str | None:
    """The shortest folder prefix under which `marker` (a relative file or folder path) exists, or None."""
    best = None
    for name in tree.names():
        pos = name.find(marker)
        while pos != -1:
            if pos == 0 or name[pos - 1] == "/":
                prefix = name[:pos]
                if best is None or len(prefix) < len(best):
                    best = prefix
                break
            pos = name.find(marker, pos + 1)
    return best


def fingerprint(path: Path) -> str:
    """Cheap identity of a source for the cache key: size+mtime of a file, or of every file below a folder."""
    if path.is_file():
        st = path.stat()
        return f"file:{st.st_size}:{st.st_mtime_ns}"
    count = size = newest = 0
    for _, dirpath, _, filenames in walk_folder(path):
        for f in filenames:
            try:
                st = os.stat(os.path.join(dirpath, f))
            except OSError:  # a broken symlink: reading it names the problem
                continue
            count, size, newest = count + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return f"dir:{count}:{size}:{newest}"


# ------------------------------------------------------------------------------------------------ image decoding


def _undecodable(where: str, data: bytes, exc: Exception) -> DataError:
    """The error for an image PIL cannot read, naming the file (PIL's own message names an in-memory buffer)."""
    from PIL import UnidentifiedImageError

    if not data:
        return DataError(f"{where}: cannot decode image: empty file (0 bytes)")
    if isinstance(exc, UnidentifiedImageError):
        return DataError(f"{where}: cannot decode image: not in a format PIL reads (corrupt, or not an image?)")
    return DataError(f"{where}: cannot decode image (corrupt or truncated?): {exc}")


def decode_image(data: bytes, where: str, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One encoded image -> (H, W, C) uint8 in PIL `mode` ('L' or 'RGB'), resized to `size` (W, H) when it differs."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert(mode)  # forces the full decode, so truncation is detected here
            if size is not None and img.size != size:
                img = img.resize(size, Image.BILINEAR, reducing_gap=None)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise _undecodable(where, data, exc) from None
    return array[:, :, None] if array.ndim == 2 else array


def probe_image(data: bytes, where: str) -> tuple[str, tuple[int, int]]:
    """('L' or 'RGB', (W, H)) of an encoded image: the mode and size a tree of images is decoded to by default."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            mode = "L" if img.mode in ("1", "L", "I;16", "I", "F") else "RGB"
            return mode, img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise _undecodable(where, data, exc) from None


def decode_images(tree: Tree, names: list[str], mode: str, size: tuple[int, int], desc: str = "decoding") -> np.ndarray:
    """Decode `names` of `tree` into one (N, C, H, W) uint8 array, all converted to `mode` and resized to `size`."""
    channels = 1 if mode == "L" else 3
    out = np.empty((len(names), channels, size[1], size[0]), dtype=np.uint8)
    for i, name in enumerate(progress(names, desc=desc)):
        out[i] = decode_image(tree.read(name), tree.describe(name), mode, size).transpose(2, 0, 1)
    return out
