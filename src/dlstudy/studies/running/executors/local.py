"""The local executor: this machine, --jobs 1 in the driver's own process or --jobs N spawned processes."""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from dlstudy.config import ExecutorConfig
from dlstudy.studies.running.executors import Executor, job_of
from dlstudy.studies.running.tasks import RunTask, run_one


def _init_worker() -> None:
    """A spawned local worker logs like the driver and draws no progress bars (runs print over each other)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("DLSTUDY_NO_PROGRESS", "1")


class LocalExecutor(Executor):
    """--jobs 1: each run in this process, one at a time; --jobs N: N spawned processes, each with cores / N torch
    threads (executor.cpus_per_run, when set, is the thread count of every run, here as on a cluster)."""

    def __init__(self, cfg: ExecutorConfig, study_dir: Path, jobs: int = 1) -> None:
        super().__init__(cfg, study_dir, jobs)
        self.capacity = max(1, jobs)
        self.pool = None
        if jobs > 1:
            self.threads = cfg.cpus_per_run or max(1, (os.cpu_count() or 1) // jobs)
            self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker)
        else:
            self.threads = cfg.cpus_per_run

    def describe(self) -> str:
        return f"{self.jobs} at a time" if self.pool else "in this process"

    def submit(self, tasks: list[RunTask]) -> list[Future]:
        if self.pool is not None:
            return [self.pool.submit(run_one, t, job_of(t), self.threads) for t in tasks]
        futures = []
        for task in tasks:  # capacity 1: the loop hands over one task at a time and logs it before the next
            future: Future = Future()
            future.set_result(run_one(task, threads=self.threads))
            futures.append(future)
        return futures

    def close(self, cancel: bool = False) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=not cancel, cancel_futures=cancel)
