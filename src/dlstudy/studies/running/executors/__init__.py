"""Where a study's runs execute: a registry of executors, each turning RunTasks into futures of TaskResults.

    local   this machine: --jobs spawned processes (1: the driver's own process)
    ray     a Ray cluster (--address), or a local one Ray starts; each run is a Ray task with its CPUs / GPUs
    slurm   Slurm through submitit: each batch of ready runs is one job array

The study runner keeps one scheduling loop (runner.schedule) over any of them: it plans and validates first,
submits what is ready, collects results as they come, and writes the report. Ray and submitit are the optional
`cluster` extra; asking for them without it is a ConfigError that names the extra. docs/cluster.md has the commands.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from dlstudy.config import ExecutorConfig, RunConfig, from_dict, to_dict
from dlstudy.errors import ConfigError
from dlstudy.studies.running.tasks import RunTask, TaskResult

log = logging.getLogger(__name__)

EXTRA = "cluster"  # pip install 'dlstudy[cluster]' brings ray and submitit


@dataclass(frozen=True)
class ExecutorEntry:
    target: str  # "module:Class"; the class takes (ExecutorConfig, study_dir, jobs)
    needs: tuple[str, ...]  # packages it imports (from the `cluster` extra)
    help: str


EXECUTORS: dict[str, ExecutorEntry] = {
    "local": ExecutorEntry("dlstudy.studies.running.executors.local:LocalExecutor", (),
                           "this machine: --jobs processes, each with cores / jobs threads (1: this process)"),
    "ray": ExecutorEntry("dlstudy.studies.running.executors.ray:RayExecutor", ("ray",),
                         "a Ray cluster (--address; none: Ray starts a local one); one Ray task per run"),
    "slurm": ExecutorEntry("dlstudy.studies.running.executors.slurm:SlurmExecutor", ("submitit",),
                           "Slurm through submitit: one job array per batch of runs; --out must be shared"),
}


class Executor:
    """Runs tasks somewhere. `capacity`: most runs in flight at once (None: the executor queues them itself)."""

    capacity: int | None = None

    def __init__(self, cfg: ExecutorConfig, study_dir: Path, jobs: int = 1) -> None:
        self.cfg, self.study_dir, self.jobs = cfg, study_dir, jobs

    @staticmethod
    def session(cfg: ExecutorConfig) -> contextlib.AbstractContextManager:
        """Held around all studies of one command (Ray: the connection); nothing for most executors."""
        return contextlib.nullcontext()

    def describe(self) -> str:
        return self.cfg.name

    def submit(self, tasks: list[RunTask]) -> list[Future]:
        """Start the tasks (one batch); a future per task, resolving to its TaskResult."""
        raise NotImplementedError

    def running(self, in_flight: int) -> int:
        """How many of the `in_flight` submitted runs are running now (the rest wait for resources)."""
        return in_flight

    def close(self, cancel: bool = False) -> None:
        """Release the workers; `cancel`: stop runs still in flight (the driver was interrupted)."""


# ------------------------------------------------------------------------------------------------ the registry


def _entry(name: str) -> ExecutorEntry:
    if name not in EXECUTORS:
        raise ConfigError(f"executor: unknown executor {name!r}; valid executors are {sorted(EXECUTORS)}")
    return EXECUTORS[name]


def require(name: str) -> None:
    """ConfigError naming the extra to install when the executor's packages are missing (before anything runs)."""
    missing = [m for m in _entry(name).needs if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"--executor {name} needs the {' and '.join(missing)} package, which is not installed: "
                          f"pip install 'dlstudy[{EXTRA}]'")


def executor_class(name: str) -> type[Executor]:
    require(name)
    module_name, class_name = _entry(name).target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def resolve_executor(block: ExecutorConfig, flags: dict | None = None) -> ExecutorConfig:
    """The study file's `executor:` block with the command's flags (those given) over it, checked."""
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    cfg = from_dict(ExecutorConfig, {**to_dict(block), **given}, "executor")
    require(cfg.name)
    return cfg


@contextlib.contextmanager
def executor_session(cfg: ExecutorConfig) -> Iterator[None]:
    """Hold the executor's session (a Ray connection) around several studies, e.g. all of `dlstudy reproduce`."""
    with executor_class(cfg.name).session(cfg):
        yield


def open_executor(cfg: ExecutorConfig, study_dir: Path, jobs: int = 1) -> Executor:
    return executor_class(cfg.name)(cfg, study_dir, jobs)


def run_resources(cfg: ExecutorConfig, run: RunConfig, cluster_has_gpus: bool) -> tuple[int, int]:
    """(CPUs, GPUs) one run asks for: executor.cpus_per_run (default 1) and executor.gpus_per_run (default: one GPU
    for a cuda run, or for device auto where the cluster has GPUs; none otherwise)."""
    gpus = cfg.gpus_per_run
    if gpus is None:
        gpus = int(run.device.startswith("cuda") or (run.device == "auto" and cluster_has_gpus))
    return cfg.cpus_per_run or 1, gpus


def driver_env() -> dict[str, str]:
    """The driver's DLSTUDY_* variables (cache folder, data root, ...), set on the node for each of its runs."""
    return {k: v for k, v in os.environ.items() if k.startswith("DLSTUDY_")}


def failed_result(task: RunTask, error: str, error_type: str = "") -> TaskResult:
    """A task that did not return (its worker, node or job died), or that could not start."""
    return TaskResult(task.arm, task.seed, task.path, False, 0.0, error=error, error_type=error_type)


def job_of(task: RunTask) -> Any:
    """The job registered for the task (sent along, so a job registered only in the driver runs on workers)."""
    from dlstudy.jobs import JOBS

    return JOBS.get(task.cfg.task)
