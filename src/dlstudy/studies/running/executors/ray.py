"""A study's runs as Ray tasks: `dlstudy run STUDY.yaml --executor ray [--address HOST:6379]`.

Each run is one task asking for executor.cpus_per_run CPUs (default 1; also its torch thread count) and
executor.gpus_per_run GPUs (default one for a cuda run); Ray places it on any node with room. A task whose worker
or node dies is retried (executor.retries) on another node; the run resumes from the folder the first attempt left
when --out is shared. Without --address Ray starts a local cluster of this machine's cores for the command.

Whether a node shares --out with the driver is checked per task (a marker file the driver writes into the study
folder); where it does not, the task runs into a scratch folder and its finished run folder comes back as a tar
through Ray's object store (tasks.remote_run / tasks.receive).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Iterator

from dlstudy.config import ExecutorConfig
from dlstudy.io import atomic_write_text
from dlstudy.studies.running.executors import Executor, driver_env, job_of, run_resources
from dlstudy.studies.running.tasks import SHARED_MARKER, RemoteOptions, RunTask, pack_folder, remote_run

log = logging.getLogger(__name__)


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connect to the cluster at `address` (None: start a local one) unless this process already is connected."""
    import ray

    if ray.is_initialized():
        yield
        return
    local = {"include_dashboard": False} if address is None else {}
    # worker output still reaches this console; Ray's own INFO lines (and its dashboard, for a local cluster) do not
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True, **local)
    try:
        yield
    finally:
        ray.shutdown()


class RayExecutor(Executor):
    capacity = None  # Ray queues the tasks until a node has the resources

    @staticmethod
    def session(cfg: ExecutorConfig) -> contextlib.AbstractContextManager:
        return ray_session(cfg.address)

    def __init__(self, cfg: ExecutorConfig, study_dir: Path, jobs: int = 1) -> None:
        import ray

        super().__init__(cfg, study_dir, jobs)
        self._own_session = None
        if not ray.is_initialized():  # run_study called from Python without a session: hold one for this study
            self._own_session = ray_session(cfg.address)
            self._own_session.__enter__()
        self.ray = ray
        self.remote = ray.remote(remote_run)
        for stale in study_dir.glob(f"{SHARED_MARKER}-*"):  # left by a driver that was killed
            stale.unlink(missing_ok=True)
        self.marker = study_dir / f"{SHARED_MARKER}-{uuid.uuid4().hex[:12]}"
        atomic_write_text(self.marker, "the study's driver is running; a node that sees this file shares --out\n")
        self.has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        self.refs: list = []

    def describe(self) -> str:
        resources = self.ray.cluster_resources()
        nodes = sum(1 for n in self.ray.nodes() if n.get("Alive"))
        return (f"Ray cluster ({nodes} node(s), {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs; "
                f"{self.cfg.cpus_per_run or 1} CPU(s) per run)")

    def options(self, task: RunTask) -> tuple[dict, RemoteOptions]:
        """(Ray's resource options, how the node runs it) for one task; gpus_per_run > 1 -> torchrun of that many."""
        cpus, gpus = run_resources(self.cfg, task.cfg, self.has_gpus)
        payload = None
        if self.cfg.shared_out is False and task.path.is_dir() and any(task.path.iterdir()):
            payload = pack_folder(task.path)  # an interrupted run resumes on the node from what it left here
        remote = RemoteOptions(threads=cpus, nproc=gpus if gpus > 1 else 1, shared=self.cfg.shared_out,
                               marker=str(self.marker), env=driver_env(), payload=payload)
        return {"num_cpus": cpus, "num_gpus": gpus, "max_retries": self.cfg.retries, "retry_exceptions": False,
                "name": f"dlstudy {task.label}"}, remote

    def submit(self, tasks: list[RunTask]) -> list[Future]:
        futures = []
        for task in tasks:
            ray_options, remote = self.options(task)
            ref = self.remote.options(**ray_options).remote(task, job_of(task), remote)
            self.refs.append(ref)
            futures.append(ref.future())
        return futures

    def running(self, in_flight: int) -> int:
        slots = int(self.ray.cluster_resources().get("CPU", 0) // (self.cfg.cpus_per_run or 1))
        return min(in_flight, slots)

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for ref in self.refs:
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref, force=True)
        self.marker.unlink(missing_ok=True)
        if self._own_session is not None:
            self._own_session.__exit__(None, None, None)
            self._own_session = None
