"""The equal-effort learning-rate search of an arm with optim.lr_grid, as tasks the study schedules like its runs.

    OUT/<study>/<arm>/lr-search/lr-<lr>/     one candidate run per grid point (the seed of the arm's first run)
    OUT/<study>/<arm>/lr-search/lr_search.csv, chosen_lr.json

Every candidate is a task of its own (so a cluster trains them side by side); once all of an arm's candidates have
ended, the driver reads their records, scores each (`candidate_row`) and picks the lr with the pure `best_lr(rows)`;
the arm's seeds run with it. One search per arm, shared by its seeds: the saved choice is reused while everything but the seed and the
lr is unchanged, so a rerun with other settings (e.g. more epochs) searches again.
"""

from __future__ import annotations

import dataclasses
import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from dlstudy.config import RunConfig, to_dict
from dlstudy.errors import ConfigError, TrainingDiverged
from dlstudy.io import atomic_write_csv, atomic_write_json, atomic_write_text, read_json
from dlstudy.studies.running.tasks import RunTask, TaskResult, config_differs


@dataclass
class LrSearch:
    """One arm's search: the candidates still to run and, once chosen, the lr its seeds use."""

    arm: str
    cfg: RunConfig  # the arm's config (lr_grid set) for the seed the search trains with
    path: Path  # OUT/<study>/<arm>/lr-search
    candidates: list[RunTask] = field(default_factory=list)
    lr: float | None = None  # None until chosen
    failure: TaskResult | None = None  # the search could not choose (every lr diverged, a candidate crashed)

    def candidate_path(self, lr: float) -> Path:
        return self.path / f"lr-{lr:g}"


def search_key(cfg: RunConfig) -> dict:
    """What must be unchanged for a saved choice to hold: the config less its seed and lr."""
    return to_dict(dataclasses.replace(cfg, seed=0, optim=dataclasses.replace(cfg.optim, lr=0.0)))


def with_lr(cfg: RunConfig, lr: float) -> RunConfig:
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=lr, lr_grid=None))


def plan_search(task: RunTask) -> LrSearch:
    """The search of `task`'s arm: the saved choice when it still holds, else the unfinished candidates to run."""
    search = LrSearch(task.arm, task.cfg, task.path.parent / "lr-search")
    chosen_path = search.path / "chosen_lr.json"
    if chosen_path.is_file():
        chosen = read_json(chosen_path)
        if chosen.get("search_config") == search_key(task.cfg):
            search.lr = chosen["lr"]
            return search
    for lr in dict.fromkeys(float(x) for x in task.cfg.optim.lr_grid or []):
        candidate = RunTask(task.arm, task.seed, with_lr(task.cfg, lr), search.candidate_path(lr))
        if not candidate.done or config_differs(candidate.path, candidate.cfg):  # finished candidates are reused
            search.candidates.append(candidate)
    return search


# ------------------------------------------------------------------------------------------------ the choice (pure)


def validate_grid(lr_grid: Iterable[float]) -> list[float]:
    """The grid as floats, in order; ConfigError when it is empty or holds a non-positive / non-finite lr."""
    grid = [float(lr) for lr in lr_grid]
    if not grid:
        raise ConfigError("optim.lr_grid: expected a non-empty list of learning rates, e.g. [0.001, 0.01, 0.1]")
    bad = [lr for lr in grid if not (lr > 0 and math.isfinite(lr))]
    if bad:
        raise ConfigError(f"optim.lr_grid: learning rates must be positive and finite, got {bad}")
    return grid


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return -math.inf


def _val_score(record: Any, lr: float) -> tuple[float, float]:
    """(val accuracy, val loss or nan) of a finished candidate: its history rows (best val epoch) or a metrics dict."""
    if isinstance(record, (list, tuple)):
        if not record:
            raise ConfigError(f"lr search: the run at lr={lr} returned an empty history")
        # the best-validation epoch: the weights an arm reports are chosen the same way
        record = max(record, key=lambda row: _as_float(row.get("val_accuracy", row.get("val_acc"))))
    if not isinstance(record, dict):
        raise ConfigError(f"lr search: a candidate's record must be a dict or history rows, "
                          f"got {type(record).__name__}")
    acc = record.get("val_accuracy", record.get("val_acc"))
    if acc is None:
        raise ConfigError(f"lr search: the run at lr={lr} reported no val_accuracy/val_acc "
                          f"(keys: {sorted(record)}); the choice is made on validation, never test")
    loss = record.get("val_loss")
    return float(acc), float(loss) if loss is not None else math.nan


def candidate_row(lr: float, record: Any, diverged: bool = False) -> dict:
    """One row of lr_search.csv: {"lr", "val_accuracy", "val_loss", "diverged"} from a finished candidate's record
    (history rows, or a dict with val_accuracy / val_acc and optionally val_loss); `diverged`: the run raised
    TrainingDiverged (its record is not read). A non-finite val accuracy counts as diverged too."""
    if diverged:
        return {"lr": lr, "val_accuracy": math.nan, "val_loss": math.nan, "diverged": True}
    acc, loss = _val_score(record, lr)
    return {"lr": lr, "val_accuracy": acc, "val_loss": loss, "diverged": not math.isfinite(acc)}


def best_lr(rows: list[dict], optimizer: str = "") -> float:
    """The lr of the best candidate row: highest val accuracy, ties to the lower val loss, then the smaller lr.

    Every row had the same config (epochs, schedule, seed, data split) but optim.lr, so arms sharing a grid
    length get the same tuning budget; the choice never looks at test. TrainingDiverged when every row diverged.
    """
    usable = [r for r in rows if not r["diverged"]]
    if not usable:
        grid = [r["lr"] for r in rows]
        raise TrainingDiverged(f"lr search for optimizer {optimizer!r}: every learning rate of {grid} diverged")
    best = min(usable, key=lambda r: (-r["val_accuracy"],
                                      r["val_loss"] if math.isfinite(r["val_loss"]) else math.inf, r["lr"]))
    return best["lr"]


# ------------------------------------------------------------------------------------------------ the driver's side


def _candidate_row(search: LrSearch, lr: float, results: dict[Path, TaskResult]) -> dict:
    """Read one ended candidate from disk (or its task result) and score it; a crashed candidate fails the search."""
    from dlstudy.studies.summary.records import load_arm_run

    path = search.candidate_path(lr)
    result = results.get(path)
    if result is not None and not result.ok:
        if result.diverged:  # TrainingDiverged or a subclass (ScoresNotFinite), raised where the run ran
            return candidate_row(lr, None, diverged=True)
        raise RuntimeError(f"lr-search candidate {path.name} failed: {result.error}")
    history = load_arm_run(path).history if (path / "metrics.json").is_file() else []
    return candidate_row(lr, history or (result.metrics if result is not None else {}) or {})


def choose(search: LrSearch, results: dict[Path, TaskResult], first: RunTask) -> None:
    """Pick the arm's lr from its candidates' records (all ended); sets search.lr, or search.failure (reported
    as a failure of the arm's first run, `first`, with the traceback in its error.txt)."""
    try:
        grid = validate_grid(search.cfg.optim.lr_grid or [])
        rows = [_candidate_row(search, lr, results) for lr in grid]
        lr = best_lr(rows, search.cfg.optim.name)
    except Exception as exc:  # noqa: BLE001 - the arm fails, the study goes on
        try:
            atomic_write_text(first.path / "error.txt", traceback.format_exc())
        except OSError:
            pass
        search.failure = TaskResult(first.arm, first.seed, first.path, False, 0.0,
                                    error=f"lr search: {type(exc).__name__}: {exc}".splitlines()[0][:300],
                                    error_type=type(exc).__name__, diverged=isinstance(exc, TrainingDiverged))
        return
    atomic_write_csv(search.path / "lr_search.csv", rows)
    atomic_write_json(search.path / "chosen_lr.json", {"lr": lr, "lr_grid": grid, "seed": search.cfg.seed,
                                                       "search_config": search_key(search.cfg)})
    search.lr = lr
