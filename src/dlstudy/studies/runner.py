"""`dlstudy run`: a study file -> arms x seeds run folders, resumable, optionally in parallel processes.

    OUT/<study>/study.yaml            the study as run (seeds after --seeds), for `dlstudy report` to rebuild from
    OUT/<study>/env.json              versions, git commit, command, --set overrides
    OUT/<study>/<arm>/seed-<s>/       one run folder per arm x seed (dlstudy.runs contract; DONE when finished)
    OUT/<study>/<arm>/lr-search/      the equal-effort learning-rate search of arms with optim.lr_grid
    OUT/<study>/summary.csv, report.md, report.html

Every arm's RunConfig (base ⊕ arm.set ⊕ --set ⊕ seed) is validated before anything runs, so a typo in the last
arm fails in a second, not after an hour. A failed run is reported and the others still run.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from dlstudy.config import (RunConfig, StudyConfig, build_run_config, dump_yaml, from_dict,
                            load_yaml_mapping, to_dict)
from dlstudy.errors import ConfigError
from dlstudy.studies.arms import expand_arms
from dlstudy.runs import RunDir, check_folder_name, check_output_folder, environment_info, is_finished, resolve_device
from dlstudy.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class RunTask:
    """One arm x seed of a study: its resolved config and folder."""

    arm: str
    seed: int
    cfg: RunConfig
    path: Path

    @property
    def done(self) -> bool:
        return is_finished(self.path)


@dataclass
class TaskResult:
    arm: str
    seed: int
    path: Path
    ok: bool
    seconds: float
    error: str = ""  # one line for the console; the traceback is in <run>/error.txt
    metrics: dict | None = None


# ------------------------------------------------------------------------------------------------ study files


def load_study(path: str | Path) -> StudyConfig:
    """Read and type-check a study YAML file; errors name the file, the key and what was expected."""
    path = Path(path)
    data = load_yaml_mapping(path)
    try:
        study = from_dict(StudyConfig, data, "study")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    from dlstudy.studies import KINDS

    if study.kind not in KINDS:
        raise ConfigError(f"{path}: study.kind: unknown kind {study.kind!r}; valid kinds are {sorted(KINDS)}")
    if not study.seeds:
        raise ConfigError(f"{path}: study.seeds is empty; give at least one seed, e.g. seeds: [0]")
    try:
        check_folder_name(study.name, "study.name")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    _check_claims(study, path)
    return study


def _check_claims(study: StudyConfig, path: Path) -> None:
    """reference.claims: each {text, better: ARM, worse: ARM} or {text, overfits: ARM}, naming arms of the study."""
    claims = study.reference.get("claims", []) if isinstance(study.reference, dict) else []
    arms = {a.name for a in expand_arms(study)}
    for i, claim in enumerate(claims if isinstance(claims, list) else [claims]):
        where = f"{path}: reference.claims[{i}]"
        if not isinstance(claim, dict) or not ({"better", "worse"} <= set(claim) or "overfits" in claim):
            raise ConfigError(f"{where}: expected {{text, better: ARM, worse: ARM}} or {{text, overfits: ARM}}, "
                              f"got {claim!r}")
        unknown = [claim[k] for k in ("better", "worse", "overfits") if k in claim and claim[k] not in arms]
        if unknown:
            raise ConfigError(f"{where}: arm {unknown[0]!r} is not an arm of the study ({sorted(arms)})")


def _check_registries(cfg: RunConfig, where: str) -> None:
    """Names that must exist in the registries (those present now); a missing registry module is skipped."""
    from dlstudy.jobs import JOBS

    if cfg.task not in JOBS:
        raise ConfigError(f"{where}: task: unknown task {cfg.task!r}; valid tasks are {sorted(JOBS)}")
    checks = [("dlstudy.data", "DATASETS", "data.name", cfg.data.name),
              ("dlstudy.models", "MODELS", "model.name", cfg.model.name),
              ("dlstudy.optim", "OPTIMIZERS", "optim.name", cfg.optim.name)]
    if cfg.task == "svm":
        checks = checks[:1]
    for module_name, attr, key, value in checks:
        try:
            registry = getattr(__import__(module_name, fromlist=[attr]), attr)
        except (ImportError, AttributeError):
            continue
        if value not in registry:
            raise ConfigError(f"{where}: {key}: unknown name {value!r}; valid names are {sorted(registry)}")


def plan_study(study: StudyConfig, out: str | Path, overrides: dict | None = None,
               source: str = "study") -> list[RunTask]:
    """Every arm x seed with its validated RunConfig, in study order (arms outer, seeds inner)."""
    if not study.seeds:
        raise ConfigError(f"{source}: study.seeds is empty; give at least one seed, e.g. seeds: [0]")
    study_dir = Path(out) / study.name
    tasks = []
    for arm in expand_arms(study):
        for seed in study.seeds:
            where = f"{source}: arm {arm.name!r}"
            try:
                cfg = build_run_config(study.base, arm.set, overrides, {"seed": seed}, where="config")
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            _check_registries(cfg, where)
            cfg = resolve_arm_weights(cfg, Path(out), study.name, {a.name for a in expand_arms(study)}, where)
            tasks.append(RunTask(arm.name, seed, cfg, study_dir / arm.name / f"seed-{seed}"))
    return tasks


WEIGHT_KEYS = (("model", "weights"), ("svm", "weights"))


def arm_reference(value: str) -> tuple[str | None, str] | None:
    """`@arm` (an arm of this study) or `@study/arm` (an arm of another study in the same OUT) -> (study, arm)."""
    if not isinstance(value, str) or not value.startswith("@"):
        return None
    study, _, arm = value[1:].rpartition("/")
    return (study or None, arm)


def resolve_arm_weights(cfg: RunConfig, out: Path, study_name: str, arms: set[str], where: str) -> RunConfig:
    """model.weights / svm.weights given as `@arm` or `@study/arm` -> that arm's run folder with the same seed.

    This chains runs inside a study (pretrain on a source task, then fine-tune its weights) and across studies
    (an SVM on the features of a backbone another study trained). The referenced run must have finished first:
    the study runs arms in file order and `dlstudy reproduce` runs a referenced study before the one using it.
    """
    import dataclasses

    for section, key in WEIGHT_KEYS:
        ref = arm_reference(getattr(getattr(cfg, section), key))
        if ref is None:
            continue
        study, arm = ref
        if study is None and arm not in arms:
            raise ConfigError(f"{where}: {section}.{key}: '@{arm}' names no arm of study {study_name!r}; its arms "
                              f"are {sorted(arms)}")
        path = out / (study or study_name) / arm / f"seed-{cfg.seed}"
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{key: str(path)})})
    return cfg


def referenced_studies(study: StudyConfig) -> set[str]:
    """Names of the other studies whose arms `study` takes weights from (`@study/arm`)."""
    found = set()
    for arm in [study.base, *(a.set for a in study.arms)]:
        for (section, key) in WEIGHT_KEYS:
            value = arm.get(f"{section}.{key}", (arm.get(section) or {}).get(key) if isinstance(arm.get(section),
                                                                                                 dict) else None)
            ref = arm_reference(value)
            if ref and ref[0]:
                found.add(ref[0])
    return found


# ------------------------------------------------------------------------------------------------ running


def _init_worker(threads: int) -> None:
    """Spawned worker: split the cores between workers (torch would otherwise take all of them in each).

    torch is not imported here (a worker of a light job should not pay for it): OMP_NUM_THREADS is read by torch
    when the job imports it, and `run_one` sets the thread count again if torch is already loaded.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(max(1, threads))
    os.environ["DLSTUDY_WORKER_THREADS"] = str(max(1, threads))
    os.environ.setdefault("DLSTUDY_NO_PROGRESS", "1")


def _apply_worker_threads() -> None:
    if os.environ.get("DLSTUDY_WORKER_THREADS") and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["DLSTUDY_WORKER_THREADS"]))


def _ensure_job(task: str, job: Any) -> None:
    """A job registered in the parent process (e.g. by a test) is registered in this worker too."""
    from dlstudy.jobs import JOBS

    if job is not None:
        JOBS.setdefault(task, job)


def _config_differs(path: Path, cfg: RunConfig) -> bool:
    saved = path / "config.yaml"
    return saved.is_file() and yaml.safe_load(saved.read_text()) != yaml.safe_load(dump_yaml(cfg))


def run_one(task: RunTask, job: Any = None, search_only: bool = False) -> TaskResult:
    """Run one arm x seed (lr search first when optim.lr_grid is set); never raises, failures are returned.

    `search_only`: run (or read back) the arm's learning-rate search and stop; the study does this once per arm
    before its seeds run, so seeds running in parallel never search at the same time.
    """
    from dlstudy.jobs import run_job

    _ensure_job(task.cfg.task, job)
    _apply_worker_threads()
    start = time.time()
    try:
        cfg = task.cfg
        if cfg.optim.lr_grid:
            cfg = apply_lr_search(cfg, task.path.parent / "lr-search")
        if search_only:
            return TaskResult(task.arm, task.seed, task.path, True, time.time() - start, metrics={"lr": cfg.optim.lr})
        # A folder left by an interrupted run resumes when its config is the same (the job decides how);
        # otherwise it starts from scratch.
        resume = task.path.is_dir() and any(task.path.iterdir()) and not _config_differs(task.path, cfg)
        if task.path.is_dir() and not resume:
            shutil.rmtree(task.path)  # stale files of another config must not mix into this run's folder
        (task.path / "error.txt").unlink(missing_ok=True)
        metrics = run_job(cfg, RunDir(task.path), resume=resume)  # the job's finish_run() writes its report
        return TaskResult(task.arm, task.seed, task.path, True, time.time() - start, metrics=metrics)
    except Exception as exc:  # noqa: BLE001 - one failed arm must not stop the study
        text = traceback.format_exc()
        try:
            atomic_write_text(task.path / "error.txt", text)
        except OSError:
            pass
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return TaskResult(task.arm, task.seed, task.path, False, time.time() - start, error=message)


def apply_lr_search(cfg: RunConfig, search_dir: Path) -> RunConfig:
    """Pick optim.lr by the equal-effort search of dlstudy.optim.select_learning_rate (candidates in search_dir)."""
    import dataclasses

    from dlstudy.optim import select_learning_rate

    from dlstudy.config import to_dict
    from dlstudy.io import read_json

    # One search per arm, shared by its seeds: the saved choice is reused only while everything but the seed and
    # the lr is unchanged, so a rerun with other settings (e.g. more epochs) searches again.
    chosen_path = search_dir / "chosen_lr.json"
    grid = [float(x) for x in cfg.optim.lr_grid or []]
    search_key = to_dict(dataclasses.replace(cfg, seed=0, optim=dataclasses.replace(cfg.optim, lr=0.0)))
    if chosen_path.is_file():
        chosen = read_json(chosen_path)
        if chosen.get("search_config") == search_key:
            return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=chosen["lr"], lr_grid=None))

    def run_candidate(candidate: RunConfig) -> Any:
        from dlstudy.jobs import run_job
        from dlstudy.studies.records import load_arm_run

        path = search_dir / f"lr-{candidate.optim.lr:g}"
        metrics = {}
        if not is_finished(path) or _config_differs(path, candidate):  # finished candidates are reused
            metrics = run_job(candidate, RunDir(path), resume=False)
        history = load_arm_run(path).history if (path / "metrics.json").is_file() else []
        return history or metrics

    best_lr, rows = select_learning_rate(cfg, grid, run_candidate)
    from dlstudy.io import atomic_write_csv

    atomic_write_csv(search_dir / "lr_search.csv", rows)
    atomic_write_json(chosen_path, {"lr": best_lr, "lr_grid": grid, "seed": cfg.seed, "search_config": search_key})
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=best_lr, lr_grid=None))


def execute(tasks: list[RunTask], jobs: int = 1, on_result: Callable[[TaskResult], None] | None = None,
            search_only: bool = False) -> list[TaskResult]:
    """Run the tasks, `jobs` at a time in spawned processes (1: in this process); results in completion order."""
    from dlstudy.jobs import JOBS

    results = []
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            results.append(run_one(task, search_only=search_only))
            if on_result:
                on_result(results[-1])
        return results
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(run_one, t, JOBS.get(t.cfg.task), search_only): t for t in tasks}
        try:
            for future in as_completed(futures):
                try:
                    results.append(future.result())
                except Exception as exc:  # noqa: BLE001 - a worker killed (e.g. out of memory) fails its run only
                    t = futures[future]
                    results.append(TaskResult(t.arm, t.seed, t.path, False, 0.0, error=f"worker died: {exc!r}"))
                if on_result:
                    on_result(results[-1])
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results


def _log_result(result: TaskResult) -> None:
    where = f"{result.arm}/seed-{result.seed}"
    if result.ok:
        acc = (result.metrics or {}).get("accuracy")
        acc_text = f" accuracy {acc:.4f}" if isinstance(acc, (int, float)) else ""
        log.info("  done   %s%s (%.1f s)", where, acc_text, result.seconds)
    else:
        log.error("  FAILED %s: %s (traceback in %s)", where, result.error, result.path / "error.txt")


def _eta_logger(total: int) -> Callable[[TaskResult], None]:
    """on_result callback: the run's line, then how many are done and the time left at the mean pace so far."""
    start, done = time.time(), [0]

    def on_result(result: TaskResult) -> None:
        _log_result(result)
        done[0] += 1
        if done[0] < total:
            left = (time.time() - start) / done[0] * (total - done[0])
            log.info("  %d/%d run(s) done; ETA ~%.1f min for this study", done[0], total, left / 60)
    return on_result


def run_study(study_path: str | Path, out: str | Path, overrides: dict | None = None, jobs: int = 1,
              seeds: list[int] | None = None) -> tuple[Path, list[TaskResult]]:
    """Validate, run the unfinished arm x seed folders, then write summary.csv and the study report.

    Returns (study_dir, results of the runs done now); finished folders (DONE) are skipped.
    """
    study = load_study(study_path)
    if seeds:
        study.seeds = list(seeds)
    tasks = plan_study(study, out, overrides, source=str(study_path))  # validates every arm before running
    study_dir = check_output_folder(check_output_folder(out) / study.name, "study folder")  # before any run
    write_study_files(study_dir, study, overrides)
    todo = [t for t in tasks if not t.done]
    for t in tasks:
        if t.done and not t.cfg.optim.lr_grid and _config_differs(t.path, t.cfg):
            log.warning("  %s/seed-%d is finished but its config.yaml differs from the study's; kept (delete the "
                        "folder to rerun it)", t.arm, t.seed)
    log.info("study %s: %d run(s), %d finished, %d to run%s", study.name, len(tasks), len(tasks) - len(todo),
             len(todo), f" ({jobs} at a time)" if jobs > 1 and len(todo) > 1 else "")
    results = []
    searches = {t.arm: t for t in reversed(todo) if t.cfg.optim.lr_grid}  # first unfinished seed of each arm
    if searches:
        log.info("learning-rate search for arm(s) %s", sorted(searches))
        failed = [r for r in execute(list(searches.values()), jobs, search_only=True) if not r.ok]
        for r in failed:
            _log_result(r)
        results += failed
        todo = [t for t in todo if t.arm not in {r.arm for r in failed}]
    results += execute(todo, jobs, on_result=_eta_logger(len(todo)))
    from dlstudy.studies.study_report import write_study_report

    write_study_report(study_dir)
    return study_dir, results


def write_study_files(study_dir: Path, study: StudyConfig, overrides: dict | None) -> None:
    """study.yaml and env.json: what `dlstudy report` needs to rebuild the study report from the folder."""
    study_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study_dir / "study.yaml", yaml.safe_dump(to_dict(study), sort_keys=False))
    env = environment_info(resolve_device("auto"))
    env.pop("seed", None)
    env["overrides"] = overrides or {}
    env["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(study_dir / "env.json", env)
