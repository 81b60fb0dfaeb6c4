"""Jobs own the run lifecycle: start (the run folder, chosen once) -> fit -> write -> `report.finish_run`.

    JOBS[cfg.task].target   "module:function", called as function(cfg, run_dir, resume) -> metrics dict
    run_job(cfg, run_dir, resume=False) -> metrics dict        # run_dir: a RunDir, or NewRun(out)

    train       dlstudy.jobs.train     a network, evaluated before and after (DDP under torchrun)
    svm         dlstudy.jobs.svm       our LinearSVM on raw pixels or backbone features
    (evaluate   dlstudy.jobs.evaluate  a finished run scored on a split, for `dlstudy evaluate`; not a task)

Only jobs write run folders; the engine, the SVM, metrics and losses compute and return, and figures are drawn
from the written files (dlstudy.figures, called by finish_run).
"""

from __future__ import annotations

import importlib
import os
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from dlstudy.config import RunConfig
from dlstudy.errors import ConfigError
from dlstudy.io import atomic_write_text
from dlstudy.runs import RunDir, new_run_dir


@dataclass(frozen=True)
class Job:
    target: str  # "module:function" with signature (cfg: RunConfig, run_dir: RunDir | NewRun, resume: bool) -> dict
    help: str


JOBS: dict[str, Job] = {
    "svm": Job("dlstudy.jobs.svm:run_svm_job", "multiclass SVM on raw pixels or CNN features"),
    "train": Job("dlstudy.jobs.train:run_train_job", "train / fine-tune a network, evaluated before and after"),
}


@dataclass
class NewRun:
    """A run folder still to be named: OUT/<run name>, numbered when taken. The job's start step names it once
    (`place_run`; rank 0 under torchrun, the other ranks are told); `run_dir` holds it from then on."""

    out: Path
    run_dir: RunDir | None = None
    created: list[Path] = field(default_factory=list)  # the folders naming it will create (removed on failure)


def place_run(cfg: RunConfig, where: RunDir | NewRun, info=None) -> RunDir:
    """The job's run folder: `where` itself, or the folder a NewRun names (rank 0 picks it; `info` is the job's
    engine.distributed.DistInfo, whose process group tells the other ranks)."""
    if isinstance(where, RunDir):
        return where
    if where.run_dir is None:
        path = str(new_run_dir(where.out, cfg).path) if info is None or info.is_main else None
        if info is not None and info.enabled:
            from dlstudy.engine.distributed import broadcast_object

            path = broadcast_object(path, info)
        where.run_dir = RunDir(Path(path))
        where.created = _missing(where.run_dir.path)
    return where.run_dir


def run_job(cfg: RunConfig, run_dir: RunDir | NewRun, resume: bool = False) -> dict:
    """Run `cfg` into `run_dir` (a NewRun: a folder the job names) and return its metrics dict.

    On failure, a folder this call created that holds no result yet (no metrics.json, history.csv or checkpoint)
    is removed, so bad input leaves nothing behind; otherwise the folder keeps what it had (the last good
    checkpoint, for `--resume`) plus `error.txt` with the traceback.
    """
    if cfg.task not in JOBS:
        raise ConfigError(f"task: unknown task {cfg.task!r}; valid tasks are {sorted(JOBS)}")
    module_name, func_name = JOBS[cfg.task].target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    missing = _missing(run_dir.path) if isinstance(run_dir, RunDir) else []  # folders this call creates
    try:
        return func(cfg, run_dir, resume=resume)
    except BaseException:
        folder = run_dir if isinstance(run_dir, RunDir) else run_dir.run_dir
        if isinstance(run_dir, NewRun):
            missing = run_dir.created
        if folder is not None and os.environ.get("RANK", "0") == "0" and folder.path.is_dir():  # one writer
            _clean_up_failed_run(folder, missing, traceback.format_exc())
        raise


def _missing(path: Path) -> list[Path]:
    return [p for p in (path, *path.parents) if not p.exists()]


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
