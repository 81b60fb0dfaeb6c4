"""Progress bars that show on a terminal and stay quiet in logs, CI and pipes."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    """True when stderr is a terminal and DLSTUDY_NO_PROGRESS is not set."""
    if os.environ.get("DLSTUDY_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, leave: bool = False, **kwargs) -> "tqdm[T]":
    """Wrap `iterable` in a tqdm bar that is disabled when output is not a terminal."""
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=not progress_enabled(),
                dynamic_ncols=True, **kwargs)
