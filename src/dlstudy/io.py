"""Atomic file writes and tolerant reads: the only I/O helpers, imported by every layer (no project imports but
dlstudy.errors).

Every write goes to a temporary file in the target's folder, is flushed to disk, then renamed over the target, so
a crash never leaves a half-written file: a reader sees the previous complete file or the new one. `atomic_write`
streams (a multi-GB checkpoint is never held in memory twice); the others are small conveniences on top of it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

from dlstudy.errors import DlstudyError

_FILE_MODE: int | None = None


def _file_mode() -> int:
    """0666 less the process umask (read once, on the first write, and restored at once)."""
    global _FILE_MODE
    if _FILE_MODE is None:
        umask = os.umask(0)
        os.umask(umask)
        _FILE_MODE = 0o666 & ~umask
    return _FILE_MODE


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call `write(fh)` on a temporary file beside `path`, then rename it to `path`; returns the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError:
        raise DlstudyError(f"{path}: cannot be written: permission denied in {path.parent} (a read-only folder "
                           "or file system); give a writable output folder") from None
    try:
        os.chmod(tmp, _file_mode())  # mkstemp makes 0600; results are meant to be shared like any file
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """NaN/inf become null (strict JSON); numpy and torch scalars/arrays become Python values."""
    if hasattr(obj, "tolist"):
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def atomic_write_csv(path: str | Path, rows: Iterable[dict], fieldnames: list[str] | None = None) -> Path:
    rows = list(rows)
    if fieldnames is None:
        fieldnames = []
        for row in rows:
            fieldnames.extend(k for k in row if k not in fieldnames)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)


def read_json(path: str | Path) -> Any:
    """The parsed file; DlstudyError naming it when it is not valid JSON (a damaged or truncated result file)."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DlstudyError(f"{path}: not valid JSON (damaged or truncated?): {exc}") from None


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
