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
import logging
import os
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from dlstudy.config import RunConfig
from dlstudy.errors import ConfigError, DlstudyError, RunLocked, TrainingDiverged
from dlstudy.io import atomic_write_text
from dlstudy.runs import RunDir, RunLock, lock_run, new_run_dir

log = logging.getLogger(__name__)


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
    lock: RunLock | None = None  # the new folder's lock (rank 0), released by run_job when the job ends


def place_run(cfg: RunConfig, where: RunDir | NewRun, info=None) -> RunDir:
    """The job's run folder: `where` itself, or the folder a NewRun names (rank 0 picks it and holds its lock;
    `info` is the job's engine.distributed.DistInfo, whose process group tells the other ranks)."""
    if isinstance(where, RunDir):
        return where
    if where.run_dir is None:
        path = None
        if info is None or info.is_main:
            path, where.created, where.lock = _take_new_folder(where.out, cfg)
        if info is not None and info.enabled:
            from dlstudy.engine.distributed import broadcast_object

            path = broadcast_object(path, info)
        where.run_dir = RunDir(Path(path))
    return where.run_dir


def _take_new_folder(out: Path, cfg: RunConfig) -> tuple[str, list[Path], RunLock]:
    """OUT/<run name> (numbered when taken), the folders creating it makes, and its lock: two processes naming a
    run at the same moment get two folders."""
    while True:
        path = new_run_dir(out, cfg).path
        created = _missing(path)
        try:
            return str(path), created, lock_run(path)
        except RunLocked:  # another process took this name a moment ago: new_run_dir now numbers the next one
            continue


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
    except BaseException as exc:
        folder = run_dir if isinstance(run_dir, RunDir) else run_dir.run_dir
        if isinstance(run_dir, NewRun):
            missing = run_dir.created
        if folder is not None and os.environ.get("RANK", "0") == "0" and folder.path.is_dir():  # one writer
            _clean_up_failed_run(folder, missing, traceback.format_exc(), exc)
        raise
    finally:
        if isinstance(run_dir, NewRun) and run_dir.lock is not None:
            run_dir.lock.release()


def _missing(path: Path) -> list[Path]:
    return [p for p in (path, *path.parents) if not p.exists()]


def _clean_up_failed_run(run_dir: RunDir, created: list[Path], text: str, error: BaseException | None = None) -> None:
    """A run folder this call created and that holds no result is removed, with the empty parent folders it
    created (e.g. a new --out); otherwise error.txt is written beside the results. A run that diverged is a result
    (error.txt says where and what to change), even in its first epoch. A failure to write error.txt (a full disk)
    is logged: the error the user sees stays the run's own."""
    has_results = any(run_dir.file(name).exists() for name in ("metrics.json", "history.csv", "checkpoints"))
    if created and not has_results and not isinstance(error, TrainingDiverged):
        shutil.rmtree(run_dir.path, ignore_errors=True)
        for parent in created[1:]:
            try:
                parent.rmdir()  # only while empty: another run may have written beside this one meanwhile
            except OSError:
                break
    else:
        try:
            atomic_write_text(run_dir.file("error.txt"), text)
        except (OSError, DlstudyError) as exc:  # DiskFullError is an OSError
            log.warning("could not write %s: %s", run_dir.file("error.txt"), exc)
