"""Atomic file writes and tolerant reads: the only I/O helpers, imported by every layer (no project imports but
dlstudy.errors).

Every write goes to a temporary file in the target's folder, is flushed to disk, then renamed over the target, so
a crash never leaves a half-written file: a reader sees the previous complete file or the new one. `atomic_write`
streams (a multi-GB checkpoint is never held in memory twice); the others are small conveniences on top of it.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

from dlstudy.errors import DiskFullError, DlstudyError

_FILE_MODE: int | None = None


def _file_mode() -> int:
    """0666 less the process umask (read once, on the first write, and restored at once)."""
    global _FILE_MODE
    if _FILE_MODE is None:
        umask = os.umask(0)
        os.umask(umask)
        _FILE_MODE = 0o666 & ~umask
    return _FILE_MODE


# torch.save's C++ writer swallows the OSError of a failed write and raises a RuntimeError without its errno
_TORCH_WRITER_FAILURES = ("unexpected pos", "PytorchStreamWriter failed")
_DISK_FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
              errno.EFBIG: "file too large for the file system"}


class _Recorder:
    """The temporary file as `write(fh)` sees it: remembers the first failed write's OSError (torch.save reports
    it only as a RuntimeError) and turns a short write into an ENOSPC OSError. Everything else is the file's."""

    def __init__(self, fh: BinaryIO):
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        try:
            written = self._fh.write(data)
            if written is not None and written < size:
                raise OSError(errno.ENOSPC, f"short write: {written} of {size} bytes")
        except OSError as exc:
            self.error = self.error or exc
            raise
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def _open_temp(fd: int) -> BinaryIO:
    """The temporary file's writer (a seam: tests put a writer here that fails after N bytes)."""
    return os.fdopen(fd, "wb")


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def free_bytes(folder: str | Path) -> int | None:
    """Free bytes (for this user) on the file system of `folder`, or of its nearest existing parent; None when
    unknown."""
    folder = Path(folder).absolute()
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def _write_error(path: Path, exc: BaseException, recorded: OSError | None) -> BaseException:
    """DiskFullError for a write that met a full disk or quota (or stopped short); any other error unchanged."""
    cause = recorded if recorded is not None else exc
    torch_writer = isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITER_FAILURES)
    if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
        why = _DISK_FULL[cause.errno]
        if "short write" in str(cause):
            why = f"the write stopped short ({cause.strerror})"
    elif torch_writer:
        why = f"the write stopped short ({exc})"
    else:
        return exc
    free = free_bytes(path.parent)
    space = f"{format_bytes(free)} free in {path.parent}" if free is not None else \
        f"free space of {path.parent} unknown"
    return DiskFullError(f"{path}: cannot be written: {why} ({space}); it was not written and its previous version, "
                         f"if any, is intact. Free some space or write to another folder, then run again")


def _make_temp(path: Path) -> tuple[int, str]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError:
        raise DlstudyError(f"{path}: cannot be written: permission denied in {path.parent} (a read-only folder "
                           "or file system); give a writable output folder") from None
    except OSError as exc:
        raise _write_error(path, exc, None) from None


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call `write(fh)` on a temporary file beside `path`, then rename it to `path`; returns the path.

    A full disk or quota, or a short write (torch.save's 'unexpected pos' included), raises DiskFullError naming
    the path and the free space left; the temporary file is removed, so `path` keeps its previous content.
    """
    path = Path(path)
    fd, tmp = _make_temp(path)
    try:
        recorder = None
        try:
            os.chmod(tmp, _file_mode())  # mkstemp makes 0600; results are meant to be shared like any file
            with _open_temp(fd) as fh:
                recorder = _Recorder(fh)
                write(recorder)
                fh.flush()
                os.fsync(fh.fileno())
        except (OSError, RuntimeError) as exc:
            Path(tmp).unlink(missing_ok=True)  # first: the free space named is what is left without it
            error = _write_error(path, exc, recorder.error if recorder else None)
            if error is exc:
                raise
            raise error from None
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def estimate_run_bytes(n_params: int, *, n_scores: int, num_classes: int, optimizer_slots: int = 2,
                       checkpoints: bool = True) -> int:
    """Roughly what a train run writes: best.pt (float32 weights) and last.pt (weights plus `optimizer_slots`
    per-weight buffers: 1 for SGD momentum, 2 for Adam) while checkpointing, predictions (`n_scores` rows of
    `num_classes` float32 scores and an int64 label, test and val together), and ~1 MB of logs, figures, reports."""
    weights = 4 * n_params
    saved = weights + weights * (1 + optimizer_slots) if checkpoints else 0
    return saved + n_scores * (4 * num_classes + 8) + 2**20


def space_warning(out: str | Path, needed: int) -> str | None:
    """A warning when the file system of `out` has less free space than `needed` bytes (an estimate), else None."""
    free = free_bytes(out)
    if free is None or free >= needed:
        return None
    return (f"{out}: {format_bytes(free)} free, less than the ~{format_bytes(needed)} this run will write "
            f"(checkpoints, predictions, figures; an estimate): it may stop on a full disk")


def try_lock(path: str | Path) -> tuple[int | None, str]:
    """An exclusive OS lock (flock) on the file `path` (created when missing): (fd, "") when taken, this process's
    pid and host written into it; (None, its content: the holder's "PID HOST") when another open file holds it.

    The kernel releases the lock when the holder exits, however it ends (kill -9 included): a lock file left by a
    dead process is simply taken. Release with `unlock(path, fd)`.
    """
    import fcntl
    import socket

    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            return None, holder
        try:  # released and removed between our open and flock: lock the file now at `path` instead
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    return fd, ""


def unlock(path: str | Path, fd: int) -> None:
    """Release a lock of `try_lock`: the file is removed first (under the lock, so no one takes a file on its way
    out), then closed."""
    Path(path).unlink(missing_ok=True)
    os.close(fd)


def lock_holder(path: str | Path) -> str | None:
    """The content ("PID HOST") of the lock file `path` while a live process holds it; None when free or absent."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "?"
    finally:
        os.close(fd)  # also drops the shared lock, when it was taken
    return None


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


def read_json(path: str | Path) -> Any:
    """The parsed file; DlstudyError naming it when it is not valid JSON (a damaged or truncated result file)."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DlstudyError(f"{path}: not valid JSON (damaged or truncated?): {exc}") from None


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
