"""One run of a study as a unit of work: what it is (RunTask), what comes back (TaskResult), and the function every
executor calls to run it (`run_one` in this process or a local worker, `remote_run` on a Ray or Slurm node).

`remote_run` adds what a remote node needs: the driver's DLSTUDY_* environment, the run's CPU thread count, and,
when --out is not the same folder on that node, a scratch folder whose result travels back to the driver as a tar
(TaskResult.archive; the driver unpacks it with `receive`). A run asking for several GPUs is launched as one
torchrun job of that many processes on the node (`torchrun_command`; this module is the entry torchrun starts).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import yaml

from dlstudy.config import RunConfig, build_run_config, drop_retired_keys, dump_yaml, load_yaml_mapping
from dlstudy.errors import DlstudyError, RunLocked, TrainingDiverged
from dlstudy.io import atomic_write_text, read_json
from dlstudy.runs import LOCK_FILE, RunDir, is_finished, lock_run

log = logging.getLogger(__name__)

SHARED_MARKER = ".dlstudy-driver"  # written by the driver into the study folder; a node that sees it shares --out


@dataclass
class RunTask:
    """One arm x seed of a study (or one learning-rate candidate of an arm): its resolved config and folder."""

    arm: str
    seed: int
    cfg: RunConfig
    path: Path

    @property
    def done(self) -> bool:
        return is_finished(self.path)

    @property
    def label(self) -> str:
        """arm/seed-0, or arm/lr-search/lr-0.1 for a search candidate (what the console and error lines say)."""
        return f"{self.arm}/{self.path.name}" if self.path.parent.name == self.arm else \
            f"{self.arm}/{self.path.parent.name}/{self.path.name}"


@dataclass
class TaskResult:
    arm: str
    seed: int
    path: Path
    ok: bool
    seconds: float
    error: str = ""  # one line for the console; the traceback is in <run>/error.txt
    metrics: dict | None = None
    error_type: str = ""  # the exception's class name
    diverged: bool = False  # the run raised a TrainingDiverged (or a subclass): a failed lr candidate, not a bug
    held_by: str = ""  # skipped: another live process holds the run's lock ("process 1234"), or a run it waits for
    node: str = ""  # where the run executed: host name (and Ray node id)
    archive: bytes | None = field(default=None, repr=False)  # the run folder as a tar when --out is not shared

    @property
    def label(self) -> str:
        """arm/seed-0, or arm/lr-search/lr-0.1 (as RunTask.label)."""
        return f"{self.arm}/{self.path.name}" if self.path.parent.name == self.arm else \
            f"{self.arm}/{self.path.parent.name}/{self.path.name}"


@dataclass(frozen=True)
class RemoteOptions:
    """How `remote_run` runs one task on a node (the executor fills it in per task)."""

    threads: int = 1  # torch / OpenMP threads: the CPUs the task was given
    nproc: int = 1  # processes of the run (GPUs per run above 1: one DDP job under torchrun)
    shared: bool | None = None  # --out shared with the driver? None: look for the driver's marker
    marker: str = ""  # the marker file's path (shared=None)
    env: dict = field(default_factory=dict)  # the driver's DLSTUDY_* variables
    payload: bytes | None = None  # a partial run folder to resume from, when --out is not shared


# ------------------------------------------------------------------------------------------------ this process


def _ensure_job(task: str, job: Any) -> None:
    """A job registered in the driver (e.g. by a test) is registered in this worker too."""
    from dlstudy.jobs import JOBS

    if job is not None:
        JOBS.setdefault(task, job)


def config_differs(path: Path, cfg: RunConfig) -> bool:
    """The run folder holds a config.yaml other than `cfg` (keys retired since it was written do not count)."""
    saved = path / "config.yaml"
    if not saved.is_file():
        return False
    return drop_retired_keys(yaml.safe_load(saved.read_text()) or {}) != yaml.safe_load(dump_yaml(cfg))


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch (if loaded) and later-imported OpenMP libraries use `threads` inside the block; None: unchanged."""
    if not threads:
        yield
        return
    before_env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch = sys.modules.get("torch")
        if torch:
            torch.set_num_threads(before or (os.cpu_count() or 1))
        for key, value in before_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_one(task: RunTask, job: Any = None, threads: int | None = None, nproc: int = 1) -> TaskResult:
    """Run one task into its folder; never raises, failures are returned (with <run>/error.txt).

    The run folder's lock is held throughout (dlstudy.runs.lock_run): a run another live process holds comes
    back at once with `held_by` set. A finished folder with the same config is not run again (a retried task
    whose first attempt finished, or a run another driver finished meanwhile). A folder left by an interrupted
    run resumes when its config is the same (the job decides how); otherwise it starts from scratch. `threads`:
    torch threads for this run (None: as the process has). `nproc` > 1: a DistributedDataParallel run of that
    many processes (torchrun).
    """
    _ensure_job(task.cfg.task, job)
    start, node = time.time(), socket.gethostname()
    try:
        lock = lock_run(task.path)  # held while this process trains the run; another live holder: skipped
    except RunLocked as exc:
        return TaskResult(task.arm, task.seed, task.path, False, 0.0, error=str(exc), error_type="RunLocked",
                          held_by=exc.holder, node=node)
    except OSError as exc:  # e.g. a read-only --out: the run fails, the study goes on
        return TaskResult(task.arm, task.seed, task.path, False, 0.0, error=f"{type(exc).__name__}: {exc}"[:300],
                          error_type=type(exc).__name__, node=node)
    with lock:
        return _run_locked(task, threads, nproc, start, node)


def _run_locked(task: RunTask, threads: int | None, nproc: int, start: float, node: str) -> TaskResult:
    try:
        if is_finished(task.path) and not config_differs(task.path, task.cfg):
            return TaskResult(task.arm, task.seed, task.path, True, 0.0, metrics=read_json(task.path / "metrics.json"),
                              node=node)
        left = [p for p in task.path.iterdir() if p.name not in ("error.txt", LOCK_FILE)]
        resume = bool(left) and not config_differs(task.path, task.cfg)
        if not resume:  # stale files of another config must not mix into this run's folder (the lock stays)
            for stale in left:
                shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
        (task.path / "error.txt").unlink(missing_ok=True)
        with cpu_threads(threads):
            metrics = _launch(task.cfg, task.path, resume, nproc)  # the job's finish_run() writes its report
        return TaskResult(task.arm, task.seed, task.path, True, time.time() - start, metrics=metrics, node=node)
    except Exception as exc:  # noqa: BLE001 - one failed arm must not stop the study
        text = traceback.format_exc()
        try:
            atomic_write_text(task.path / "error.txt", text)
        except (OSError, DlstudyError):
            pass
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return TaskResult(task.arm, task.seed, task.path, False, time.time() - start, error=message,
                          error_type=type(exc).__name__, diverged=isinstance(exc, TrainingDiverged), node=node)


def _launch(cfg: RunConfig, path: Path, resume: bool, nproc: int) -> dict:
    from dlstudy.jobs import run_job

    if nproc <= 1:
        return run_job(cfg, RunDir(path), resume=resume)
    with tempfile.TemporaryDirectory(prefix="dlstudy-launch-") as tmp:
        cfg_file = Path(tmp) / "config.yaml"
        cfg_file.write_text(dump_yaml(cfg))
        done = subprocess.run(torchrun_command(cfg_file, path, resume, nproc), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        error = path / "error.txt"
        detail = error.read_text() if error.is_file() else done.stdout[-4000:]
        raise RuntimeError(f"torchrun ({nproc} processes) exited with {done.returncode}:\n{detail}")
    return read_json(path / "metrics.json")


def torchrun_command(cfg_file: str | Path, path: str | Path, resume: bool, nproc: int) -> list[str]:
    """One run as a DDP job of `nproc` processes on this node: torchrun starts this module once per process."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={nproc}",
            "-m", __name__, str(cfg_file), str(path), *(["--resume"] if resume else [])]


def main(argv: list[str] | None = None) -> int:
    """torchrun's entry: python -m dlstudy.studies.running.tasks CONFIG.yaml RUN_DIR [--resume] (every rank)."""
    from dlstudy.jobs import run_job

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = build_run_config(load_yaml_mapping(argv[0]), where=argv[0])
    run_job(cfg, RunDir(Path(argv[1])), resume="--resume" in argv[2:])
    return 0


# ------------------------------------------------------------------------------------------------ a remote node


def remote_run(task: RunTask, job: Any, options: RemoteOptions) -> TaskResult:
    """`run_one` on a Ray or Slurm node: the driver's environment and thread count, and a scratch folder whose
    tar comes back in the result when this node does not share --out with the driver."""
    saved = {k: os.environ.get(k) for k in options.env}
    os.environ.update(options.env)
    os.environ.setdefault("DLSTUDY_NO_PROGRESS", "1")
    try:
        shared = options.shared if options.shared is not None else Path(options.marker).is_file()
        if shared:
            result = run_one(task, job, options.threads, options.nproc)
        else:
            result = _run_in_scratch(task, job, options)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    result.node = _node_name()
    return result


def _run_in_scratch(task: RunTask, job: Any, options: RemoteOptions) -> TaskResult:
    with tempfile.TemporaryDirectory(prefix="dlstudy-run-") as scratch:
        local = Path(scratch).joinpath(*task.path.parts[-3:])  # study/arm/seed-0: the same names as on the driver
        if options.payload:
            unpack_folder(options.payload, local)
        result = run_one(replace(task, path=local), job, options.threads, options.nproc)
        result.path = task.path
        result.archive = pack_folder(local) if local.is_dir() else None
    return result


def _node_name() -> str:
    host = socket.gethostname()
    try:
        import ray

        if ray.is_initialized():
            return f"{host}/{ray.get_runtime_context().get_node_id()[:12]}"
    except ImportError:
        pass
    return host


# ------------------------------------------------------------------------------------------------ folders as bytes


def pack_folder(path: Path) -> bytes:
    """The folder's files as an uncompressed tar (run folders hold compressed PNGs, npz and checkpoints)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:  # a run's lock file is this machine's, never sent
        tar.add(path, arcname=".", filter=lambda info: None if Path(info.name).name == LOCK_FILE else info)
    return buffer.getvalue()


def unpack_folder(data: bytes, path: Path) -> None:
    """Replace `path` with the folder `data` holds (pack_folder); the old folder goes only once the new is whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            # the "data" filter refuses absolute paths, links out of the folder and devices (Python >= 3.10.12)
            tar.extractall(staging, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def receive(result: TaskResult) -> TaskResult:
    """On the driver: a run folder that came back as a tar is written to its place in the study folder."""
    if result.archive is not None:
        unpack_folder(result.archive, result.path)
        result.archive = None
    return result


if __name__ == "__main__":
    raise SystemExit(main())
