"""TensorBoard and MLflow logs of runs and studies, made from the files a run writes (docs/tracking.md).

    TRACKERS                 name -> TrackerEntry (its class, the packages it needs from the `tracking` extra)
    parse_names("tensorboard,mlflow") -> ["tensorboard", "mlflow"]      (--log, --to; unknown names: ConfigError)
    require(names)           ConfigError naming `pip install 'dlstudy[tracking]'` when a package is missing
    run_log(names, run_dir, enabled) -> RunLog      the job's handle, a context manager:
        .epochs(history, steps)   after the job writes history.csv / steps.csv (the same rows)
        .finish()                 after finish_run: metrics.json, figures, artifacts; the MLflow run FINISHED
    export_run(run_dir, names)    a finished folder replayed through the same RunLog (`dlstudy export-logs`)
    log_study(study_dir, names)   after a study: runs not logged yet are exported, then the HParams sessions and
                                  the MLflow experiment's description

Jobs call run_log; nothing here is imported unless a tracker is asked for (tensorboard, mlflow are optional).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dlstudy.errors import ConfigError, DlstudyError
from dlstudy.tracking.files import flat_config, read_env, read_metrics, read_rows, run_context

log = logging.getLogger(__name__)

EXTRA = "tracking"  # pip install 'dlstudy[tracking]' brings tensorboard and mlflow


@dataclass(frozen=True)
class TrackerEntry:
    target: str  # "module:Class", constructed as Class(RunContext, uri)
    needs: tuple[str, ...]  # packages it imports
    help: str


TRACKERS: dict[str, TrackerEntry] = {
    "tensorboard": TrackerEntry("dlstudy.tracking.tensorboard_log:TensorBoardTracker", ("tensorboard",),
                                "event files in each run folder (RUN/tensorboard/), HParams of a study"),
    "mlflow": TrackerEntry("dlstudy.tracking.mlflow_log:MlflowTracker", ("mlflow",),
                           "one MLflow run per run, one experiment per study (local store OUT/mlflow.db, or "
                           "--mlflow-uri)"),
}


def parse_names(text: str | list[str] | None, flag: str = "--log") -> list[str]:
    """"tensorboard,mlflow" (or a list) -> known tracker names, in order, once each."""
    items = text if isinstance(text, list) else (text or "").split(",")
    names = []
    for item in (i.strip() for i in items):
        if item and item not in names:
            if item not in TRACKERS:
                raise ConfigError(f"{flag}: unknown tracker {item!r}; valid trackers are {sorted(TRACKERS)}")
            names.append(item)
    return names


def require(names: list[str]) -> None:
    """ConfigError naming the extra when a tracker's package is missing (checked before anything runs)."""
    for name in names:
        for package in TRACKERS[name].needs:
            try:
                importlib.import_module(package)
            except ImportError:
                raise ConfigError(f"logging to {name} needs the {package} package, which is not installed: "
                                  f"pip install 'dlstudy[{EXTRA}]'") from None


def _tracker(name: str, run_dir: Path, uri: str | None):
    module_name, class_name = TRACKERS[name].target.split(":")
    return getattr(importlib.import_module(module_name), class_name)(run_context(run_dir), uri)


class RunLog:
    """The trackers of one run; hands them the rows they have not seen yet, so a job may pass its whole history."""

    def __init__(self, names: list[str], run_dir: Path, uri: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.trackers = []
        self.n_history = self.n_steps = 0
        if not names:
            return
        require(names)
        config, env = flat_config(self.run_dir), read_env(self.run_dir)
        try:
            for name in names:
                self.trackers.append(_tracker(name, self.run_dir, uri))
                self.trackers[-1].start(config, env)
        except BaseException:
            self.close(failed=True)
            raise

    def epochs(self, history: list[dict], steps: list[dict]) -> None:
        """The rows of history.csv / steps.csv past those already logged."""
        new_history, new_steps = history[self.n_history:], steps[self.n_steps:]
        if not self.trackers or not (new_history or new_steps):
            return
        for tracker in self.trackers:
            tracker.log_epochs(new_history, new_steps)
        self.n_history, self.n_steps = len(history), len(steps)

    def finish(self) -> None:
        """The folder's files as they are at the end: rows not handed over yet (all of them for an export, none for
        a live run), then metrics.json, the figures and the artifacts."""
        if not self.trackers:
            return
        self.epochs(read_rows(self.run_dir, "history.csv"), read_rows(self.run_dir, "steps.csv"))
        metrics = read_metrics(self.run_dir)
        for tracker in self.trackers:
            tracker.finish(self.run_dir, metrics)

    def close(self, failed: bool = False) -> None:
        for tracker in self.trackers:
            tracker.close(failed)


NO_LOG = RunLog([], Path("."))  # a run that logs nowhere: every call does nothing


@contextlib.contextmanager
def run_log(names: list[str], run_dir, enabled: bool = True, uri: str | None = None) -> Iterator[RunLog]:
    """The job's RunLog for `run_dir` (a RunDir or path; config.yaml and env.json written); NO_LOG when `names`
    is empty or not `enabled` (ranks other than 0). A failure inside marks the MLflow run FAILED."""
    if not names or not enabled:
        yield NO_LOG
        return
    run_log_ = RunLog(names, Path(getattr(run_dir, "path", run_dir)), uri)
    try:
        yield run_log_
    except BaseException:
        run_log_.close(failed=True)
        raise
    run_log_.close()


def export_run(run_dir: str | Path, names: list[str], uri: str | None = None) -> None:
    """A finished run folder logged from its files, as a live run would have been."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file() or not (run_dir / "DONE").is_file():
        raise DlstudyError(f"{run_dir}: not a finished run folder (no DONE / metrics.json)")
    with run_log(names, run_dir, uri=uri) as run:
        run.finish()  # from the files alone: the same calls a live run ends with
