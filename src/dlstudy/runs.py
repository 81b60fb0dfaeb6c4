"""The run-folder contract shared by every job.

    OUT/<run>/config.yaml   resolved RunConfig
              env.json      versions, device, git commit, seed, start/end time, command
              metrics.json  the metric keys of `METRIC_KEYS` (or `before`/`after` blocks of them)
              history.csv   one row per epoch when there is training
              tables/*.csv  extra tables the report shows
              figures/*.png
              report.md, report.html

Every file is written atomically by dlstudy.io (temp file in the same folder + os.replace), so a crash never
leaves a half-written result: a reader sees the previous complete file or the new one. The run report is the
report layer's (dlstudy.report.finish_run writes it between `stamp_end()` and `mark_done()`).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dlstudy.config import RunConfig, dump_yaml
from dlstudy.errors import ConfigError, DlstudyError, RunLocked
from dlstudy.io import (atomic_write_csv, atomic_write_json, atomic_write_text, lock_holder, read_json, try_lock,
                        unlock)
from dlstudy.metrics.table import metric_keys

METRIC_KEYS = metric_keys()  # the keys of every metrics.json block, a view of dlstudy.metrics.table.METRICS
DONE_MARKER = "DONE"  # written last: a run folder with it is complete (studies skip such arms)
LOCK_FILE = ".lock"  # "PID HOST" of the process training the run, flock-ed by it while it does; removed on release
MODEL_CARD = "model.json"  # what `dlstudy.load_run` needs to rebuild the classifier and its preprocessing


# ------------------------------------------------------------------------------------------------ environment


def git_commit(start: Path | None = None) -> str:
    """Commit of the dlstudy source tree (with '+dirty' for local changes), or 'unknown' outside a checkout."""
    where = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        if not commit:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo), e.g. 'Intel(R) Xeon(R) Platinum 8480+'; None elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def environment_info(device: str = "cpu", seed: int | None = None) -> dict:
    import numpy
    import torch
    import torchvision

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model() or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "git_commit": git_commit(),
        "seed": seed,
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    }
    return info


# ------------------------------------------------------------------------------------------------ run folders


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "run"


def check_folder_name(name: str, what: str) -> str:
    """`name` when it is one folder that stays inside its parent: letters, digits and . _ + - only, and not `.` or
    `..` (OUT/.. would write beside OUT). ConfigError naming `what` (e.g. "study.name") otherwise."""
    inside = os.path.normpath(os.path.join("parent", name)).startswith("parent" + os.sep)  # "." and ".." are not
    if slug(name) != name or not inside:
        raise ConfigError(f"{what} {name!r} is used as a folder name: use letters, digits and . _ + - only, and "
                          f"not '.' or '..' (e.g. {slug(name).strip('.') or 'run'!r})")
    return name


def check_output_folder(path: str | Path, what: str = "--out") -> Path:
    """`path` when results can be written there (it is a folder, or can be created as one); ConfigError before any
    work starts otherwise, so a long run does not fail at its end. Nothing is created."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:  # the nearest part of the path already there
        existing = existing.parent
    if not existing.is_dir():
        problem = "is a file, not a folder" if existing == path else f"cannot be created: {existing} is a file"
        raise ConfigError(f"{what} {path}: {problem}; give a folder to write results in")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" (inside {existing})"
        raise ConfigError(f"{what} {path}: cannot write there{where}: permission denied or a read-only file "
                          f"system; give a writable folder")
    return path


def default_run_name(cfg: RunConfig) -> str:
    if cfg.name:
        return check_folder_name(slug(cfg.name), "--name / name")
    if cfg.task == "svm":
        return slug(f"svm-{cfg.data.name}-{cfg.svm.features}-{cfg.svm.multi_class}")
    return slug(f"{cfg.task}-{cfg.data.name}-{cfg.model.name}-{cfg.loss.name}-{cfg.optim.name}")


@dataclass
class RunDir:
    """A run folder being written. `start()` saves config and env; `stamp_end()` and `mark_done()` close it
    (dlstudy.report.finish_run does both around the run report)."""

    path: Path

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def tables(self) -> Path:
        return self.path / "tables"

    def file(self, name: str) -> Path:
        return self.path / name

    def start(self, cfg: RunConfig, device: str) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / DONE_MARKER).unlink(missing_ok=True)
        atomic_write_text(self.path / "config.yaml", dump_yaml(cfg))
        env = environment_info(device, cfg.seed)
        env["start_time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        env["end_time"] = None
        atomic_write_json(self.path / "env.json", env)
        return self

    def write_metrics(self, metrics: dict) -> Path:
        return atomic_write_json(self.path / "metrics.json", metrics)

    def write_model_card(self, kind: str, class_names: list[str], inputs: dict, **files: str) -> Path:
        """model.json: kind ('network' | 'svm'), class names, the inputs' preprocessing as trained (image size,
        channels, per-channel mean / std on [0, 1]; for an svm, which features) and the model files' names."""
        card = {"format": 1, "kind": kind, "class_names": list(class_names), "inputs": inputs, "files": files}
        return atomic_write_json(self.path / MODEL_CARD, card)

    def write_table(self, name: str, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
        return atomic_write_csv(self.tables / f"{name}.csv", rows, fieldnames)

    def update_env(self, **values) -> None:
        """Add or replace keys of env.json (e.g. the torch thread count a job chose after start())."""
        env_path = self.path / "env.json"
        env = read_json(env_path) if env_path.exists() else {}
        atomic_write_json(env_path, {**env, **values})

    def stamp_end(self) -> str:
        """Record the end time in env.json; returns it."""
        env_path = self.path / "env.json"
        env = read_json(env_path) if env_path.exists() else {}
        env["end_time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_json(env_path, env)
        return env["end_time"]

    def mark_done(self) -> None:
        """Write DONE, the last file of a finished run (every other file, the report included, is already there),
        so a run that failed before this point is redone by the next `dlstudy run` instead of skipped."""
        (self.path / "error.txt").unlink(missing_ok=True)  # the error of an earlier attempt (now resumed) is stale
        atomic_write_text(self.path / DONE_MARKER, time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")

    @property
    def is_done(self) -> bool:
        return is_finished(self.path)


def is_finished(path: str | Path) -> bool:
    """A complete run folder: DONE (written last) and a readable metrics.json. A run whose metrics.json was damaged
    after it finished is not complete: a study runs it again instead of skipping it."""
    path = Path(path)
    if not (path / DONE_MARKER).is_file() or not (path / "metrics.json").is_file():
        return False
    try:
        return isinstance(read_json(path / "metrics.json"), dict)
    except (DlstudyError, OSError):
        return False


# ------------------------------------------------------------------------------------------------ run locks


def describe_holder(content: str) -> str:
    """A lock file's "PID HOST" as the console says it: "process 1234" (this machine) or "process 1234 on HOST"."""
    import socket

    pid, _, host = content.partition(" ")
    if not pid.isdigit():
        return "another process"
    return f"process {pid}" if host in ("", socket.gethostname()) else f"process {pid} on {host}"


class RunLock:
    """The lock of a run folder held by this process (`lock_run`); `release()` (or leaving the `with` block)
    removes LOCK_FILE and releases it. The kernel releases it if the process dies first (kill -9 included)."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    def release(self) -> None:
        if self._fd is not None:
            unlock(self.path, self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run(folder: str | Path) -> RunLock:
    """Take the run folder's lock (creating the folder), so no other process trains it meanwhile; RunLocked naming
    the live process that holds it. A lock file left by a process that is gone is taken over."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, holder = try_lock(folder / LOCK_FILE)
    if fd is None:
        who = describe_holder(holder)
        raise RunLocked(f"{folder}: in progress in {who} (it holds {folder / LOCK_FILE}); wait for it to end, or "
                        f"stop it, then run again", holder=who)
    return RunLock(folder / LOCK_FILE, fd)


def run_holder(folder: str | Path) -> str | None:
    """Who holds the run folder's lock ("process 1234"), or None when no live process does."""
    content = lock_holder(Path(folder) / LOCK_FILE)
    return None if content is None else describe_holder(content)


def new_run_dir(out: str | Path, cfg: RunConfig, exist_ok: bool = False) -> RunDir:
    """OUT/<run-name>; when that folder already holds files (finished or not), a numbered sibling unless exist_ok.

    ConfigError, before anything is written, when OUT or the run folder cannot be written (check_output_folder)."""
    out = check_output_folder(out)
    base = default_run_name(cfg)
    path = out / base
    n = 1
    while not exist_ok and path.exists() and (not path.is_dir() or any(path.iterdir())):
        if not path.is_dir() and path.name == base:
            raise ConfigError(f"--name {base}: {path} is a file, not a run folder; choose another --name")
        n += 1
        path = out / f"{base}-{n}"
    return RunDir(check_output_folder(path, "run folder"))


def resolve_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        from dlstudy.errors import ConfigError

        raise ConfigError(f"device={name!r} asked for, but CUDA is not available on this machine; use device=cpu")
    return name
