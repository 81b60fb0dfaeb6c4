"""A study's runs on Slurm through submitit: `dlstudy run STUDY.yaml --executor slurm --partition gpu --time 120`.

Every batch of runs the study hands over at once (all of them, for a study without learning-rate searches or arms
that take another arm's weights) is one job array: one array element per run, each asking for
executor.cpus_per_run CPUs and executor.gpus_per_run GPUs (a run asking for several GPUs is one torchrun job of
that many processes on its node) for executor.time_min minutes. submitit pickles each run into
OUT/<study>/.submitit/, so --out must be a folder every node sees. `sbatch_text` renders the script it submits
(docs/cluster.md shows one). Tests use submitit's local executor (the same pickles, processes on this machine).
"""

from __future__ import annotations

import logging
import shlex
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

from dlstudy.config import ExecutorConfig
from dlstudy.studies.running.executors import Executor, driver_env, job_of, run_resources
from dlstudy.studies.running.tasks import RemoteOptions, RunTask, remote_run

log = logging.getLogger(__name__)

SUBMITIT_CLUSTER = "slurm"  # "local" in the tests: submitit's LocalExecutor (no Slurm on these machines)
POLL_S = {"slurm": 15.0, "local": 0.5}  # how often job states are read (submitit caches sacct between reads)


def slurm_parameters(cfg: ExecutorConfig, job_name: str, cpus: int, gpus: int) -> dict:
    """submitit's SlurmExecutor parameters (its names for the sbatch options) for one array of runs."""
    params = {"job_name": job_name, "time": cfg.time_min, "cpus_per_task": cpus, "ntasks_per_node": 1,
              "array_parallelism": cfg.array_parallelism, "additional_parameters": dict(cfg.slurm)}
    if cfg.partition:
        params["partition"] = cfg.partition
    if gpus:
        params["gpus_per_node"] = gpus
    return params


def sbatch_text(cfg: ExecutorConfig, folder: Path, runs: int, job_name: str = "dlstudy") -> str:
    """The sbatch script submitit writes for an array of `runs` runs (what `sbatch` receives), with the CPUs and GPUs
    the executor block asks for per run (docs/cluster.md shows one)."""
    from submitit.slurm.slurm import _make_sbatch_string

    cpus, gpus = cfg.cpus_per_run or 1, cfg.gpus_per_run or 0
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=runs,
                               **slurm_parameters(cfg, job_name, cpus, gpus))


class SlurmExecutor(Executor):
    capacity = None  # Slurm queues the array elements

    def __init__(self, cfg: ExecutorConfig, study_dir: Path, jobs: int = 1) -> None:
        super().__init__(cfg, study_dir, jobs)
        self.folder = study_dir / ".submitit"
        self.cluster = SUBMITIT_CLUSTER
        self.pending: dict = {}  # submitit job -> its future
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.poller = threading.Thread(target=self._poll, name="dlstudy-slurm-poll", daemon=True)
        self.poller.start()

    def describe(self) -> str:
        where = f"partition {self.cfg.partition}" if self.cfg.partition else "the default partition"
        return f"Slurm ({where}, {self.cfg.time_min} min per run; job files in {self.folder})"

    def _executor(self, cpus: int, gpus: int):
        import submitit

        params = slurm_parameters(self.cfg, f"dlstudy-{self.study_dir.name}", cpus, gpus)
        if self.cluster == "slurm":
            executor = submitit.SlurmExecutor(folder=self.folder)
            executor.update_parameters(**params)
        else:
            executor = submitit.LocalExecutor(folder=self.folder)
            executor.update_parameters(timeout_min=params["time"], gpus_per_node=gpus)
        return executor

    def submit(self, tasks: list[RunTask]) -> list[Future]:
        groups: dict[tuple[int, int], list[int]] = {}  # one array per resource shape (usually one)
        for i, task in enumerate(tasks):
            groups.setdefault(run_resources(self.cfg, task.cfg, cluster_has_gpus=False), []).append(i)
        futures: list[Future | None] = [None] * len(tasks)
        for (cpus, gpus), indices in groups.items():
            executor = self._executor(cpus, gpus)
            options = RemoteOptions(threads=cpus, nproc=gpus if gpus > 1 else 1, shared=True, env=driver_env())
            with executor.batch():
                jobs = [executor.submit(remote_run, tasks[i], job_of(tasks[i]), options) for i in indices]
            if jobs:
                log.info("  submitted %d run(s) as job array %s (%s)", len(jobs), jobs[0].job_id.split("_")[0],
                         jobs[0].paths.submission_file if self.cluster == "slurm" else "local processes")
            with self.lock:
                for i, job in zip(indices, jobs):
                    futures[i] = Future()
                    self.pending[job] = futures[i]
        return futures  # type: ignore[return-value]

    def _poll(self) -> None:
        """Resolve each future once its job has ended (result or exception: a killed or timed-out job)."""
        while not self.stop.wait(POLL_S.get(self.cluster, 15.0)):
            with self.lock:
                items = list(self.pending.items())
            for job, future in items:
                try:
                    if not job.done():
                        continue
                except Exception:  # noqa: BLE001 - sacct did not answer this time; ask again at the next poll
                    continue
                try:
                    future.set_result(job.result())
                except Exception as exc:  # noqa: BLE001 - the job died; the runner reports the run as failed
                    future.set_exception(exc)
                with self.lock:
                    self.pending.pop(job, None)

    def running(self, in_flight: int) -> int:
        with self.lock:
            jobs = list(self.pending)
        try:
            return sum(1 for job in jobs if job.state in ("RUNNING", "COMPLETING"))
        except Exception:  # noqa: BLE001 - sacct unavailable for a moment: say all submitted runs are running
            return in_flight

    def close(self, cancel: bool = False) -> None:
        if cancel:
            with self.lock:
                jobs = list(self.pending)
            for job in jobs:
                try:
                    job.cancel(check=False)
                except Exception:  # noqa: BLE001 - already ended
                    pass
        self.stop.set()
        self.poller.join(timeout=5)
