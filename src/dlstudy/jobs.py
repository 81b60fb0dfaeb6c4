"""Job registry: a RunConfig's `task` names the function that runs it into a run folder."""

from __future__ import annotations

import importlib
import os
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path

from dlstudy.config import RunConfig
from dlstudy.errors import ConfigError
from dlstudy.runs import RunDir
from dlstudy.io import atomic_write_text


@dataclass(frozen=True)
class Job:
    target: str  # "module:function" with signature (cfg: RunConfig, run_dir: RunDir, resume: bool) -> dict
    help: str


JOBS: dict[str, Job] = {
    "svm": Job("dlstudy.svm.job:run_svm_job", "multiclass SVM on raw pixels or CNN features"),
    "train": Job("dlstudy.engine.job:run_train_job", "train / fine-tune a network, evaluated before and after"),
}


def run_job(cfg: RunConfig, run_dir: RunDir, resume: bool = False) -> dict:
    """Run `cfg` into `run_dir` and return its metrics dict.

    On failure, a folder this call created that holds no result yet (no metrics.json, history.csv or checkpoint) is removed, so
    bad input leaves nothing behind; otherwise the folder keeps what it had (the last good checkpoint, for
    `--resume`) plus `error.txt` with the traceback.
    """
    if cfg.task not in JOBS:
        raise ConfigError(f"task: unknown task {cfg.task!r}; valid tasks are {sorted(JOBS)}")
    module_name, func_name = JOBS[cfg.task].target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    missing = [p for p in (run_dir.path, *run_dir.path.parents) if not p.exists()]  # folders this call creates
    try:
        return func(cfg, run_dir, resume=resume)
    except BaseException:
        if os.environ.get("RANK", "0") == "0" and run_dir.path.is_dir():  # one writer under torchrun
            _clean_up_failed_run(run_dir, missing, traceback.format_exc())
        raise


def _clean_up_failed_run(run_dir: RunDir, created: list[Path], text: str) -> None:
    """A run folder this call created and that holds no result is removed, with the empty parent folders it
    created (e.g. a new --out); otherwise error.txt is written beside the results."""
    has_results = any(run_dir.file(name).exists() for name in ("metrics.json", "history.csv", "checkpoints"))
    if created and not has_results:
        shutil.rmtree(run_dir.path, ignore_errors=True)
        for parent in created[1:]:
            try:
                parent.rmdir()  # only while empty: another run may have written beside this one meanwhile
            except OSError:
                break
    else:
        atomic_write_text(run_dir.file("error.txt"), text)
