"""Runs of a study that another live process is training (it holds the run folder's lock, dlstudy.runs.lock_run).

Two `dlstudy run` of one study into one --out (a second terminal, a re-submitted cluster job) share the work: each
run is trained by the process that takes its lock first; the other skips it ("b/seed-1: in progress in process
1234, skipped"). Before writing the study report a process waits for the runs it skipped (`settle`): a run the
other process finished or failed is read as it left it, one whose process died (the kernel released its lock)
is taken over and resumed here. With --no-wait it stops instead (StudyInProgress, exit code 1, no report).
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import Callable

from dlstudy.errors import StudyInProgress, TrainingDiverged
from dlstudy.runs import is_finished, run_holder
from dlstudy.studies.running.tasks import RunTask, TaskResult

log = logging.getLogger(__name__)

POLL_S = 2.0  # how often the locks of the runs waited for are looked at
REPORT_EVERY_S = 60.0  # a progress line at least this often while waiting


def held_result(task: RunTask, holder: str, error: str, error_type: str = "RunLocked") -> TaskResult:
    """A task skipped because `holder` ("process 1234") trains it, or (error_type "waits") a run it waits for."""
    return TaskResult(task.arm, task.seed, task.path, False, 0.0, error=error, error_type=error_type, held_by=holder)


def wait_released(held: list[TaskResult], poll_s: float = POLL_S) -> None:
    """Return once no live process holds the lock of any of `held`'s run folders; a progress line meanwhile."""
    pending, last = list(held), 0.0
    while True:
        holders = {r.path: run_holder(r.path) for r in pending}
        pending = [r for r in pending if holders[r.path]]
        if not pending:
            return
        if time.time() - last >= REPORT_EVERY_S:
            log.info("waiting for %d run(s) in progress in other processes before writing the study report: %s",
                     len(pending), ", ".join(f"{r.label} ({holders[r.path]})" for r in pending))
            last = time.time()
        time.sleep(poll_s)


def failed_elsewhere(result: TaskResult) -> TaskResult:
    """The run another process ended without finishing, as its error.txt says (the traceback's last line)."""
    lines = [line for line in (result.path / "error.txt").read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else "failed in another process"
    qualified, _, message = last.partition(": ")
    error_type = qualified.rpartition(".")[2]
    return TaskResult(result.arm, result.seed, result.path, False, 0.0, error=f"{error_type}: {message}"[:300],
                      error_type=error_type, diverged=_is_divergence(qualified))


def _is_divergence(qualified: str) -> bool:
    """Whether "module.Class" (a traceback's exception) is a TrainingDiverged, by the class hierarchy."""
    module, _, name = qualified.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, TrainingDiverged)


def settle(results: list[TaskResult], tasks: list[RunTask], rerun: Callable[[list[RunTask]], list[TaskResult]],
           wait: bool, study: str) -> list[TaskResult]:
    """`results` with every run skipped for another process replaced by how it ended: waits for their locks,
    then reads a run that process failed (error.txt) and hands the others to `rerun` (a finished one is read back
    by it, one whose process died is resumed). StudyInProgress, without waiting, when `wait` is false."""
    by_path = {r.path: r for r in results}
    task_of = {t.path: t for t in tasks}
    while held := [r for r in by_path.values() if r.held_by]:
        locked = [r for r in held if r.error_type == "RunLocked"]
        if not wait:
            raise StudyInProgress(
                f"{len(locked)} run(s) of study {study} are in progress in other processes ("
                f"{', '.join(f'{r.label} in {r.held_by}' for r in locked)}): the study report was not written; run "
                f"the same command again once they end (without --no-wait it waits for them)")
        wait_released(locked)
        again = []
        for r in held:
            if r in locked and not is_finished(r.path) and (r.path / "error.txt").is_file():
                by_path[r.path] = failed_elsewhere(r)
            else:
                again.append(task_of[r.path])
        for result in rerun(again):
            by_path[result.path] = result
    return list(by_path.values())


def filter_waits(after: dict[Path, list[tuple[Path, bool]]], tasks: list[RunTask]) -> dict:
    """`after` (task path -> the paths it waits for) reduced to the waits among `tasks` (a rerun's subset)."""
    paths = {t.path for t in tasks}
    return {p: [(d, must) for d, must in deps if d in paths] for p, deps in after.items()}
