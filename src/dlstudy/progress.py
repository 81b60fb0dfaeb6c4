"""Progress: a bar on a terminal, a plain line at a steady interval in a log file, nothing under
DLSTUDY_NO_PROGRESS.

    progress(iterable, desc, total)   wraps `iterable`; the wrapper has `.disable` and `.set_postfix(**values)`

On a terminal it is a tqdm bar. When stderr is not a terminal (a log file, a pipe, a cluster job) a bar would be
silent until it ends, so a line like

    epoch 3: step 1200/4688 (26%), 2.61 it/s, elapsed 7m40s, ETA 22m16s, loss=0.4312, img_s=167

is logged (logger "dlstudy.progress", level INFO) every DLSTUDY_PROGRESS_INTERVAL seconds (default 60); the
values the caller last passed to `set_postfix` (e.g. the training loss) end the line.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Generic, Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0  # a line a minute: a 13-minute epoch shows 13 lines, a 10-second one none


def progress_enabled() -> bool:
    """True when stderr is a terminal and DLSTUDY_NO_PROGRESS is not set."""
    if os.environ.get("DLSTUDY_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


def log_interval() -> float | None:
    """Seconds between progress lines when stderr is not a terminal; None when DLSTUDY_NO_PROGRESS is set."""
    if os.environ.get("DLSTUDY_NO_PROGRESS"):
        return None
    value = os.environ.get("DLSTUDY_PROGRESS_INTERVAL", "")
    try:
        interval = float(value) if value else DEFAULT_INTERVAL_S
    except ValueError:
        interval = DEFAULT_INTERVAL_S
    return interval if interval > 0 else DEFAULT_INTERVAL_S


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, leave: bool = False,
             **kwargs) -> "tqdm[T] | LogProgress[T]":
    """`iterable` with progress: a tqdm bar on a terminal, else a line every log_interval() seconds, else silent."""
    if not progress_enabled():
        interval = log_interval()
        if interval is not None:
            return LogProgress(iterable, desc=desc, total=total, interval=interval)
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=not progress_enabled(),
                dynamic_ncols=True, **kwargs)


class LogProgress(Generic[T]):
    """Iterates `iterable` and logs a progress line whenever `interval` seconds have passed since the last one."""

    disable = False  # like an enabled tqdm bar: callers that check `.disable` keep passing postfix values

    def __init__(self, iterable: Iterable[T], desc: str = "", total: int | None = None, interval: float = 60.0):
        self.iterable, self.desc, self.interval = iterable, desc, interval
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.postfix: dict[str, object] = {}
        self.n = 0

    def set_postfix(self, **values) -> None:
        """Values (e.g. loss=..., img_s=...) shown at the end of the next lines."""
        self.postfix = values

    def __len__(self) -> int:
        return self.total if self.total is not None else len(self.iterable)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[T]:
        start = last = time.monotonic()
        for item in self.iterable:
            yield item
            self.n += 1
            now = time.monotonic()  # ~50 ns: cheap beside even a batch-1 MLP step
            if now - last >= self.interval:
                last = now
                log.info("%s", self.line(now - start))

    def line(self, elapsed: float) -> str:
        """The line after `elapsed` seconds: desc, step k/n (p%), it/s, elapsed, ETA, then the postfix values."""
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts = [f"step {self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total
                 else f"step {self.n}", f"{rate:.3g} it/s", f"elapsed {_duration(elapsed)}"]
        if self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        parts += [f"{key}={value}" for key, value in self.postfix.items()]
        return f"{self.desc}: " * bool(self.desc) + ", ".join(parts)


def _duration(seconds: float) -> str:
    """12s, 7m40s, 2h05m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
