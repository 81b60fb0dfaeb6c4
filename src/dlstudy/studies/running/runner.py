"""`dlstudy run`: a study file -> arms x seeds run folders, resumable, in parallel processes or on a cluster.

    OUT/<study>/study.yaml            the study as run (seeds after --seeds), for `dlstudy report` to rebuild from
    OUT/<study>/env.json              versions, git commit, command, --set overrides
    OUT/<study>/<arm>/seed-<s>/       one run folder per arm x seed (dlstudy.runs contract; DONE when finished)
    OUT/<study>/<arm>/lr-search/      the equal-effort learning-rate search of arms with optim.lr_grid
    OUT/<study>/summary.csv, report.md, report.html

Every arm's RunConfig (base ⊕ arm.set ⊕ --set ⊕ seed) is validated before anything runs, so a typo in the last
arm fails in a second, not after an hour. A failed run is reported and the others still run. Where the runs
execute (this process, --jobs processes, a Ray cluster, Slurm) is the executor's business (executors.py); the one
scheduling loop here hands each run over once the runs it waits for have ended (the arm whose weights it takes,
its arm's learning-rate candidates).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path
from typing import Callable

import yaml

from dlstudy.config import RunConfig, StudyConfig, build_run_config, from_dict, load_yaml_mapping, to_dict
from dlstudy.errors import ConfigError
from dlstudy.io import atomic_write_json, atomic_write_text
from dlstudy.runs import check_folder_name, check_output_folder, environment_info, resolve_device
from dlstudy.studies.summary.arms import expand_arms
from dlstudy.studies.running.executors import (EXECUTORS, Executor, executor_session, failed_result, open_executor,
                                       resolve_executor)
from dlstudy.studies.running.held import filter_waits, held_result, settle
from dlstudy.studies.running.lr_search import LrSearch, choose, plan_search, with_lr
from dlstudy.studies.running.tasks import RunTask, TaskResult, config_differs, receive
from dlstudy.tracking import require as require_trackers

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ study files


def load_study(path: str | Path, yes: bool = False, seeds: list[int] | None = None) -> StudyConfig:
    """Read and type-check a study YAML file; errors name the file, the key and what was expected. A study of
    more than MAX_RUNS runs (with `seeds` instead of its own, when given) must be confirmed first (`yes`, or the
    file's `confirm_runs`)."""
    path = Path(path)
    data = load_yaml_mapping(path)
    try:
        study = from_dict(StudyConfig, data, "study")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    check_run_count(study, path, yes, seeds)  # before expanding and validating every arm
    from dlstudy.studies import KINDS

    if study.kind not in KINDS:
        raise ConfigError(f"{path}: study.kind: unknown kind {study.kind!r}; valid kinds are {sorted(KINDS)}")
    if not study.seeds:
        raise ConfigError(f"{path}: study.seeds is empty; give at least one seed, e.g. seeds: [0]")
    if study.executor.name not in EXECUTORS:
        raise ConfigError(f"{path}: study.executor.name: unknown executor {study.executor.name!r}; valid executors "
                          f"are {sorted(EXECUTORS)}")
    try:
        check_folder_name(study.name, "study.name")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    _check_claims(study, path)
    return study


MAX_RUNS = 1000  # a study above this many runs is a likely typo in a grid: it waits for --yes / confirm_runs


def check_run_count(study: StudyConfig, path: Path, yes: bool = False, seeds: list[int] | None = None) -> int:
    """The study's arms x grid x seeds, counted without expanding them; ConfigError above MAX_RUNS unless `yes` or
    the file's `confirm_runs` is at least the count."""
    arms = max(1, len(study.arms)) * math.prod(len(v) if isinstance(v, list) else 1 for v in study.grid.values())
    n_seeds = len(seeds or study.seeds)
    count = arms * n_seeds
    if count > MAX_RUNS and not yes and (study.confirm_runs or 0) < count:
        raise ConfigError(f"{path}: the study expands to {count:,} runs ({arms:,} arm(s) x {n_seeds} seed(s)), more "
                          f"than {MAX_RUNS:,}: check its arms and grid, then confirm with --yes or `confirm_runs: "
                          f"{count}` in the study file")
    if count > MAX_RUNS:
        log.info("%s: %d runs (%d arm(s) x %d seed(s)); validating every arm first", path, count, arms, n_seeds)
    return count


def _check_claims(study: StudyConfig, path: Path) -> None:
    """reference.claims is no longer read: the reference report's claims live in one registry (CLAIMS)."""
    if isinstance(study.reference, dict) and "claims" in study.reference:
        raise ConfigError(f"{path}: reference.claims is not read any more: the reference report's claims are defined "
                          f"once, in dlstudy.studies.summary.claims.CLAIMS (checked against every study of their "
                          f"kind by `dlstudy reproduce` / `dlstudy results`); remove the key")


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
            if key == "model.name":  # ours, tv: and timm: names: the close matches, not ~1,500 names
                from dlstudy.models.backbones import unknown_model_message

                raise ConfigError(f"{where}: {unknown_model_message(value, key)}")
            raise ConfigError(f"{where}: {key}: unknown name {value!r}; valid names are {sorted(registry)}")


def plan_study(study: StudyConfig, out: str | Path, overrides: dict | None = None,
               source: str = "study") -> list[RunTask]:
    """Every arm x seed with its validated RunConfig, in study order (arms outer, seeds inner)."""
    if not study.seeds:
        raise ConfigError(f"{source}: study.seeds is empty; give at least one seed, e.g. seeds: [0]")
    study_dir = Path(out) / study.name
    tasks = []
    arms = expand_arms(study)
    arm_names = {a.name for a in arms}
    for arm in arms:
        for seed in study.seeds:
            where = f"{source}: arm {arm.name!r}"
            try:
                cfg = build_run_config(study.base, arm.set, overrides, {"seed": seed}, where="config")
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            _check_registries(cfg, where)
            cfg = resolve_arm_weights(cfg, Path(out), study.name, arm_names, where)
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

PROGRESS_EVERY_S = 60.0  # a progress line at least this often while runs are in flight


def _diverged_candidate(result: TaskResult) -> bool:
    """A learning-rate candidate that diverged: a row of its arm's search, not a failure."""
    return result.path.parent.name == "lr-search" and result.diverged


def _log_result(result: TaskResult) -> None:
    search = "lr-search/" if result.path.parent.name == "lr-search" else ""
    where = f"{result.arm}/{search}{result.path.name}"
    if result.held_by:  # another live process trains it (or a run it waits for): skipped here, waited for later
        reason = "in progress" if result.error_type == "RunLocked" else result.error.split(",")[0]
        log.info("  %s: %s in %s, skipped", where, reason, result.held_by)
    elif _diverged_candidate(result):
        log.info("  diverged %s (%s): a row of the lr search", where, result.error)
    elif result.ok:
        acc = (result.metrics or {}).get("accuracy")
        acc_text = f" accuracy {acc:.4f}" if isinstance(acc, (int, float)) else ""
        log.info("  done   %s%s (%.1f s)", where, acc_text, result.seconds)
    else:
        log.error("  FAILED %s: %s (traceback in %s)", where, result.error, result.path / "error.txt")


class Progress:
    """Console lines as runs end: how many are done, running and failed, and the time left at the pace so far."""

    def __init__(self, total: int, executor: Executor) -> None:
        self.total, self.executor = total, executor
        self.start = self.last = time.time()
        self.done = self.failed = 0

    def ended(self, result: TaskResult, in_flight: int) -> None:
        _log_result(result)
        self.done += 1
        self.failed += not result.ok and not _diverged_candidate(result) and not result.held_by
        self.report(in_flight)

    def report(self, in_flight: int) -> None:
        self.last = time.time()
        if self.done >= self.total:
            return
        eta = f"; ETA ~{(self.last - self.start) / self.done * (self.total - self.done) / 60:.1f} min" \
            if self.done else ""
        log.info("  %d/%d run(s) done, %d running, %d failed%s", self.done, self.total,
                 self.executor.running(in_flight), self.failed, eta)


def _dependencies(tasks: list[RunTask]) -> dict[Path, list[tuple[Path, bool]]]:
    """task path -> [(path of a task of this list it waits for, whether that one must succeed)]: the runs whose
    folders it takes weights from (`@arm`), which must have finished well."""
    paths = {t.path for t in tasks}
    needs = {}
    for task in tasks:
        values = [getattr(getattr(task.cfg, section), key) for section, key in WEIGHT_KEYS]
        needs[task.path] = [(Path(v), True) for v in values if isinstance(v, str) and Path(v) in paths
                            and Path(v) != task.path]
    return needs


def _record_failure(result: TaskResult) -> TaskResult:
    """A failure the driver noticed (a dead worker, a failed dependency): said in the run's error.txt too."""
    try:
        if not (result.path / "error.txt").is_file():
            atomic_write_text(result.path / "error.txt", result.error + "\n")
    except OSError:
        pass
    return result


def schedule(tasks: list[RunTask], executor: Executor, after: dict[Path, list[tuple[Path, bool]]] | None = None,
             prepare: Callable[[RunTask], RunTask | TaskResult | None] | None = None,
             on_result: Callable[[TaskResult], None] | None = None) -> list[TaskResult]:
    """Run `tasks` on `executor`, each once the tasks it waits for have ended; results in the order they end.

    The one scheduling loop of every executor. `after`: more waits (path -> [(path, must succeed)]), on top of
    the weight references. `prepare(task)` runs on the driver just before a task is handed over: it returns the
    task to run (e.g. with the lr its search chose), a TaskResult (the task fails without running) or None (it is
    dropped). A run whose worker died counts as failed; a run waiting for one that failed fails too.
    """
    needs = _dependencies(tasks)
    for path, extra in (after or {}).items():
        needs.setdefault(path, []).extend(extra)
    ended: dict[Path, bool] = {}
    held: dict[Path, TaskResult] = {}  # skipped: another live process trains them (held.settle waits for them)
    waiting, in_flight, results = list(tasks), {}, []
    progress = Progress(len(tasks), executor)

    def end(result: TaskResult) -> None:
        if result.held_by:
            held[result.path] = result
        else:
            ended[result.path] = result.ok
        results.append(receive(result))
        progress.ended(result, len(in_flight))
        if on_result and not result.held_by:
            on_result(result)

    try:
        while waiting or in_flight:
            batch, still = [], []
            room = None if executor.capacity is None else executor.capacity - len(in_flight)
            for task in waiting:
                deps = needs.get(task.path, [])
                failed = [d for d, must in deps if must and ended.get(d) is False]
                waits = [held[d] for d, _ in deps if d in held]
                if waits:
                    end(held_result(task, waits[0].held_by, f"waits for {waits[0].label}, in progress",
                                    "waits"))
                elif failed:
                    end(_record_failure(failed_result(task, f"waits for {failed[0]}, which failed")))
                elif any(d not in ended for d, _ in deps) or (room is not None and len(batch) >= room):
                    still.append(task)
                else:
                    prepared = prepare(task) if prepare else task
                    if isinstance(prepared, TaskResult):
                        end(prepared)
                    elif prepared is not None:
                        batch.append(prepared)
            waiting = still
            if batch:
                try:
                    in_flight.update(zip(executor.submit(batch), batch))
                except Exception as exc:  # noqa: BLE001 - e.g. sbatch refused the array: these runs fail, not all
                    for task in batch:
                        end(_record_failure(failed_result(task, f"could not submit: {exc!r}".splitlines()[0][:300],
                                                          type(exc).__name__)))
            if not in_flight:
                for task in waiting:  # nothing runs and nothing can start: they wait for each other
                    end(_record_failure(failed_result(task, "waits for runs that cannot finish")))
                break
            done, _ = wait(in_flight, timeout=PROGRESS_EVERY_S, return_when=FIRST_COMPLETED)
            for future in done:
                task = in_flight.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker or node died (retries spent): this run only
                    result = _record_failure(failed_result(task, f"worker died: {exc!r}".splitlines()[0][:300],
                                                           type(exc).__name__))
                end(result)
            if not done and time.time() - progress.last >= PROGRESS_EVERY_S:
                progress.report(len(in_flight))
    except KeyboardInterrupt:
        executor.close(cancel=True)
        raise
    return results


def _plan_searches(todo: list[RunTask]) -> tuple[dict[str, LrSearch], list[RunTask], dict]:
    """The lr searches of the arms with optim.lr_grid: ({arm: search}, candidate tasks to run, waits of the seeds)."""
    searches: dict[str, LrSearch] = {}
    for task in todo:  # the arm's first unfinished seed searches
        if task.cfg.optim.lr_grid and task.arm not in searches:
            searches[task.arm] = plan_search(task)
    candidates = [c for s in searches.values() for c in s.candidates]
    after = {t.path: [(c.path, False) for c in searches[t.arm].candidates] for t in todo if t.arm in searches}
    return searches, candidates, after


def run_study(study_path: str | Path, out: str | Path, overrides: dict | None = None, jobs: int = 1,
              seeds: list[int] | None = None, executor: dict | None = None,
              budget=None, wait: bool = True, yes: bool = False) -> tuple[Path, list[TaskResult]]:
    """Validate, run the unfinished arm x seed folders, then write summary.csv and the study report.

    `executor`: the command's executor flags (name, address, cpus_per_run, ...) over the study's `executor:`
    block. `budget`: a budget.StudyBudget (`--minutes`): each arm's step count, written to budget.json with the
    real minutes at the end. Returns (study_dir, results of the runs done now); finished folders (DONE) are skipped.
    """
    started = time.time()
    study = load_study(study_path, yes=yes, seeds=seeds)  # yes: more than MAX_RUNS runs confirmed
    if seeds:
        study.seeds = list(seeds)
    executor_cfg = resolve_executor(study.executor, executor)  # a missing extra fails before anything is written
    tasks = plan_study(study, out, overrides, source=str(study_path))  # validates every arm before running
    trackers = list(dict.fromkeys(n for t in tasks for n in t.cfg.train.log))  # --log / train.log of the arms
    require_trackers(trackers)  # a missing `tracking` extra fails before anything is written
    study_dir = check_output_folder(check_output_folder(out) / study.name, "study folder")  # before any run
    write_study_files(study_dir, study, overrides)
    if trackers:  # the MLflow experiment made before any run: the runs' processes only add to it
        from dlstudy.tracking.study import prepare_study

        prepare_study(study_dir, trackers, study.description)
    if budget is not None:  # each arm's budgeted steps (train.epochs x max_steps_per_epoch); budget.json beside
        tasks = budget.apply(tasks)
        budget.write(study_dir)
    todo = [t for t in tasks if not t.done]
    for t in tasks:
        if t.done and not t.cfg.optim.lr_grid and config_differs(t.path, t.cfg):
            log.warning("  %s/seed-%d is finished but its config.yaml differs from the study's; kept (delete the "
                        "folder to rerun it)", t.arm, t.seed)
    searches, candidates, after = _plan_searches(todo)
    if candidates:
        log.info("learning-rate search for arm(s) %s: %d candidate run(s)", sorted(searches), len(candidates))
    results_by_path: dict[Path, TaskResult] = {}

    def prepare(task: RunTask) -> RunTask | TaskResult | None:
        search = searches.get(task.arm)
        if search is None or task.path.parent.name == "lr-search":
            return task
        if search.lr is None and search.failure is None:  # the arm's first seed to start: its candidates ended
            choose(search, results_by_path, task)
            if search.failure:
                return search.failure  # reported once, for this seed; the arm's other seeds are dropped
        return None if search.failure else dataclasses.replace(task, cfg=with_lr(task.cfg, search.lr))

    if jobs > 1 and executor_cfg.name != "local":
        log.warning("--jobs %d is ignored with --executor %s (the cluster's resources decide)", jobs, executor_cfg.name)
    with executor_session(executor_cfg):
        runner = open_executor(executor_cfg, study_dir, jobs)
        log.info("study %s: %d run(s), %d finished, %d to run (%s)", study.name, len(tasks), len(tasks) - len(todo),
                 len(todo), runner.describe())
        try:
            on_result = lambda r: results_by_path.__setitem__(r.path, r)  # noqa: E731
            results = schedule(candidates + todo, runner, after, prepare, on_result)
            # runs another live process trains: wait for them (or StudyInProgress with wait=False), then read them
            results = settle(results, candidates + todo, lambda again: schedule(
                again, runner, filter_waits(after, again), prepare, on_result), wait, study.name)
        finally:
            runner.close()
    results = [r for r in results if r.path.parent.name != "lr-search"]  # candidates are the search's, not runs
    from dlstudy.studies.summary.study_report import write_study_report

    write_study_report(study_dir)
    if trackers:  # HParams of every run; runs finished earlier or logged nowhere exported from their folders
        from dlstudy.tracking.study import log_study

        log_study(study_dir, trackers, study.description)
    if budget is not None:
        budget.finish(study_dir, time.time() - started)
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
