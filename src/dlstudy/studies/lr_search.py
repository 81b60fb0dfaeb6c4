"""The equal-effort learning-rate search of an arm with optim.lr_grid, as tasks the study schedules like its runs.

    OUT/<study>/<arm>/lr-search/lr-<lr>/     one candidate run per grid point (the seed of the arm's first run)
    OUT/<study>/<arm>/lr-search/lr_search.csv, chosen_lr.json

Every candidate is a task of its own (so a cluster trains them side by side); once all of an arm's candidates have
ended, the driver picks the lr with dlstudy.optim.select_learning_rate from their histories and the arm's seeds run
with it. One search per arm, shared by its seeds: the saved choice is reused while everything but the seed and the
lr is unchanged, so a rerun with other settings (e.g. more epochs) searches again.
"""

from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from dlstudy.config import RunConfig, to_dict
from dlstudy.errors import TrainingDiverged
from dlstudy.io import atomic_write_csv, atomic_write_json, atomic_write_text, read_json
from dlstudy.studies.tasks import RunTask, TaskResult, config_differs


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


def choose(search: LrSearch, results: dict[Path, TaskResult], first: RunTask) -> None:
    """Pick the arm's lr from its candidates' histories (all ended); sets search.lr, or search.failure (reported
    as a failure of the arm's first run, `first`, with the traceback in its error.txt)."""
    from dlstudy.optim import select_learning_rate
    from dlstudy.studies.records import load_arm_run

    def read_candidate(candidate: RunConfig):
        path = search.candidate_path(candidate.optim.lr)
        result = results.get(path)
        if result is not None and not result.ok:
            if result.error_type == TrainingDiverged.__name__:
                raise TrainingDiverged(result.error)
            raise RuntimeError(f"lr-search candidate {path.name} failed: {result.error}")
        history = load_arm_run(path).history if (path / "metrics.json").is_file() else []
        return history or (result.metrics if result is not None else {}) or {}

    grid = [float(x) for x in search.cfg.optim.lr_grid or []]
    try:
        best_lr, rows = select_learning_rate(search.cfg, grid, read_candidate)
    except Exception as exc:  # noqa: BLE001 - the arm fails, the study goes on
        try:
            atomic_write_text(first.path / "error.txt", traceback.format_exc())
        except OSError:
            pass
        search.failure = TaskResult(first.arm, first.seed, first.path, False, 0.0,
                                    error=f"lr search: {type(exc).__name__}: {exc}".splitlines()[0][:300],
                                    error_type=type(exc).__name__)
        return
    atomic_write_csv(search.path / "lr_search.csv", rows)
    atomic_write_json(search.path / "chosen_lr.json", {"lr": best_lr, "lr_grid": grid, "seed": search.cfg.seed,
                                                       "search_config": search_key(search.cfg)})
    search.lr = best_lr
