"""`dlstudy reproduce`: the four studies of the reference report, run in its order, into one combined report.

    OUT/<study>/...              one study folder each (see runner.py), resumable like `dlstudy run`
    OUT/reproduce.json           which studies, mode, budget, data root, timings (what `dlstudy report OUT` needs)
    OUT/report.md, report.html   Q1 SVM, Q1 bonus fine-tuning, Q2 losses, Q3 optimizers

Three tiers of the same four studies, study files in the package (`dlstudy/studies/files/`), so an installed
wheel carries them; the repository's top-level `studies/` is a link to that folder. `study_file()` finds them:

    quick   <name>-quick.yaml   the embedded digits data, CPU minutes (make demo)
    cpu     <name>-cpu.yaml     the real data (CIFAR-10, Tiny ImageNet, MNIST), sized for one hour on 2 CPU cores
    full    <name>.yaml         the real data at the reference report's scale (a GPU job)
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Callable

from dlstudy.config import ExecutorConfig, deep_merge
from dlstudy.errors import ConfigError, DlstudyError
from dlstudy.io import atomic_write_json
from dlstudy.runs import check_output_folder, environment_info, resolve_device
from dlstudy.studies.running.budget import observed_pace
from dlstudy.studies.running.executors import executor_session, resolve_executor
from dlstudy.studies.running.plan import (REFERENCE_CALIBRATION_S, calibration_seconds, format_plan,
                                          last_section_seconds, plan_section)
from dlstudy.studies.running.runner import load_study, plan_study, referenced_studies, run_study
from dlstudy.studies.summary.reproduce_report import write_reproduce_report
from dlstudy.studies.summary.sections import ONLY_CHOICES, SECTIONS, section_of, study_file

log = logging.getLogger(__name__)

# Budget presets: --set layers applied over every arm of every study (after the study file), plus the seeds.
BUDGETS: dict[str, dict] = {
    "tiny": {  # CI's end-to-end check: every code path once, numbers meaningless
        "seeds": [0],
        # warm-up 0: a study's warm-up epoch would leave the one epoch no cosine decay (an invalid config)
        "overrides": {"train": {"epochs": 1, "warmup_epochs": 0.0, "max_steps_per_epoch": 4, "train_eval_subset": 64,
                                "eval_batch_size": 256},
                      "data": {"max_train": 240, "max_eval": 120},
                      "svm": {"C": [1.0], "max_iter": 100, "n_components": 200}},
    },
}


def _plan(sections, tier: str, overrides: dict, seeds: list[int] | None, out: Path, yes: bool = False) -> list[tuple]:
    """Resolve and validate every study before anything runs (a typo in Q3 fails now, not after Q1 ran)."""
    planned, needs, names = [], {}, {}
    for section in sections:
        path = study_file(section.study, tier)
        study = load_study(path, yes=yes, seeds=seeds)
        if seeds:
            study.seeds = list(seeds)
        tasks = plan_study(study, out, overrides, source=str(path))
        check_output_folder(Path(out) / study.name, "study folder")
        planned.append((section, path, study, tasks))
        needs[section.study], names[study.name] = referenced_studies(study), section.study
    for section, path, *_ in planned:
        missing = [n for n in needs[section.study] if n not in names and not (Path(out) / n).is_dir()]
        if missing:
            raise ConfigError(f"{path}: takes weights from study {missing[0]!r}, which is neither in this "
                              f"reproduce run nor in {out}; run it first or drop --only")
    # a study that takes weights from another one's arms (`@study/arm`) runs after it; the report keeps
    # the reference report's order
    ready, ordered = set(), []
    while len(ordered) < len(planned):
        for entry in planned:
            section = entry[0]
            deps = {names[n] for n in needs[section.study] if n in names}
            if section.study not in ready and deps <= ready:
                ordered.append(entry)
                ready.add(section.study)
                break
        else:
            raise ConfigError(f"studies take weights from each other in a cycle: {sorted(needs)}")
    return ordered


def run_reproduce(out: str | Path, tier: str = "full", data_root: str | None = None, budget: str | None = None,
                  jobs: int = 1, only: list[str] | None = None, overrides: dict | None = None,
                  executor: dict | None = None, minutes: float | None = None, remeasure: bool = False,
                  plan_only: bool = False, started: float | None = None, wait: bool = True,
                  yes: bool = False, as_part_of: float | None = None) -> tuple[Path | None, list]:
    """Run the studies in the reference report's order and write OUT/report.md / .html; returns (html, failures).

    `executor`: executor flags (dlstudy run's) for every study; one session (e.g. Ray connection) serves them all.
    `minutes`: a time budget for the whole run (studies/running/budget.py), counted from `started` (default: now).
    `plan_only`: log the plan and return (None, []) without running or writing anything. `wait`, `yes`: as
    `dlstudy run --no-wait / --yes` for every study (a study whose runs are held elsewhere fails, the others go on).
    `as_part_of`: with `only`, plan the whole tier for that many minutes and run the `only` studies on the minutes
    they get in that plan (one section's accuracy at a larger budget, without running the others).
    """
    started = time.time() if started is None else started
    if minutes is not None and budget is not None:
        raise ConfigError(f"--minutes and --budget {budget} both set the training length; give one of them")
    out = Path(out)
    # one entry per study file: a section with several (Q3: two protocols x two datasets) runs each in order;
    # --only names sections (all their files) or single study files (e.g. optimizers-cifar10-defaults)
    every = [part for s in SECTIONS for part in s.parts()]
    sections = [p for p in every if not only or p.study in only or section_of(p.study).study in only]
    unknown = sorted(set(only or []) - set(ONLY_CHOICES))
    if unknown:
        raise ConfigError(f"--only: unknown study {unknown}; valid ones are {list(ONLY_CHOICES)}")
    if as_part_of is not None and (minutes is not None or not only):
        raise ConfigError("--as-part-of M plans the whole tier for M minutes and runs the --only studies on their "
                          "share of it: give --only, and no --minutes")
    if budget is not None and budget not in BUDGETS:
        raise ConfigError(f"--budget: unknown budget {budget!r}; valid budgets are {sorted(BUDGETS)}")
    layer: dict = {}
    if data_root and tier != "quick":
        layer = deep_merge(layer, {"data": {"root": str(data_root)}})
    if budget:
        layer = deep_merge(layer, BUDGETS[budget]["overrides"])
    layer = deep_merge(layer, overrides or {})
    seeds = BUDGETS[budget]["seeds"] if budget else None
    session = resolve_executor(ExecutorConfig(), executor)  # a missing extra fails before anything runs
    check_output_folder(out)
    planned = _plan(sections, tier, layer, seeds, out, yes)
    memo: dict = {}  # data facts of the plan, kept for its re-plans
    if as_part_of is not None:
        minutes = _share_of_tier(every, planned, tier, layer, seeds, out, as_part_of, started, jobs, remeasure, memo)
    estimates, budgets = _announce(planned, out, tier, budget, minutes, started, jobs, remeasure, memo)
    if plan_only:
        return None, []
    replan = None if minutes is None else partial(_replan, planned, minutes, started, jobs, memo)
    record = {"tier": tier, "budget": budget, "minutes": minutes, "as_part_of": as_part_of, "data_root": data_root,
              "overrides": layer, "planned_s": _first_plan_seconds(budgets),
              "env": environment_info(resolve_device("auto")), "sections": [], "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with executor_session(session):
        failures = _run_sections(planned, estimates, out, layer, jobs, seeds, executor, record, budgets, replan,
                                 wait=wait, yes=yes)
    _, html_path = write_reproduce_report(out)
    return html_path, failures


def _first_plan_seconds(budgets: dict) -> float | None:
    """The first plan's estimate of the whole run (planning + every section), the number --minutes is judged by."""
    if not budgets:
        return None
    first = next(iter(budgets.values())).record
    return round(first["plan_s"] + sum(b.record["expected_s"] for b in budgets.values()), 1)


def _run_sections(planned: list[tuple], estimates: list, out: Path, layer: dict, jobs: int, seeds: list[int] | None,
                  executor: dict | None, record: dict, budgets: dict | None = None,
                  replan: Callable[[int, float], dict | None] | None = None, wait: bool = True,
                  yes: bool = False) -> list[str]:
    """Each planned study in turn (run_study), recorded in OUT/reproduce.json as it ends; returns the failures.

    `replan(i, pace)`: under --minutes, the budgets of sections i.. for the time really left (before each section
    but the first), their estimates times the pace the sections before them went (budget.observed_pace), so an
    estimate that was off for one section is made up by the ones after it."""
    failures, ran = [], []  # ran: (planned, real) seconds of each section run
    for i, (section, path, *_) in enumerate(planned):
        fresh = replan(i, observed_pace(ran)) if replan and i else None
        if fresh:
            budgets = {**(budgets or {}), **fresh}
            estimates[i:] = [fresh[p[2].name].record["remaining_s"] for p in planned[i:]]
        left = estimates[i:]
        eta = "" if None in left else \
            f"; estimated {left[0] / 60:.1f} min, whole run done at ~{time.strftime('%H:%M', time.localtime(time.time() + sum(left)))}"
        log.info("== %s (%s)%s", section.title, path.name, eta)
        start = time.time()
        try:
            study_dir, results = run_study(path, out, layer, jobs=jobs, seeds=seeds, executor=executor,
                                           budget=(budgets or {}).get(planned[i][2].name), wait=wait, yes=yes)
            failed = [f"{r.arm}/seed-{r.seed}: {r.error}" for r in results if not r.ok]
        except DlstudyError as exc:  # e.g. a summary that cannot be built; the other studies still run
            study_dir, failed = out / load_study(path).name, [f"study failed: {exc}"]
        failures += [f"{section.study}: {f}" for f in failed]
        ran.append((estimates[i], time.time() - start))
        record["sections"].append({"study": section.study, "file": str(path), "dir": study_dir.name,
                                   "seconds": round(time.time() - start, 1), "failed": failed})
        record["end_time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_json(out / "reproduce.json", record)
    return failures


PART_PLAN_S = 3.0  # --as-part-of: the studies' own plan after the whole tier's (data and throughput already known)


def _share_of_tier(every: list, planned: list[tuple], tier: str, layer: dict, seeds: list[int] | None, out: Path,
                   tier_minutes: float, started: float, jobs: int, remeasure: bool, memo: dict) -> float:
    """The minutes the `planned` studies get in a plan of the whole tier for `tier_minutes` (their sections'
    shares, plus what planning took so far): what `--as-part-of` gives them."""
    from dlstudy.studies.running.budget import plan_budgets

    names = {p[2].name for p in planned}
    whole = [(p[2], p[3]) for p in _plan(every, tier, layer, seeds, out)]
    budgets, _ = plan_budgets(whole, tier_minutes, started, jobs=jobs, remeasure=remeasure,
                              device=resolve_device("auto"), memo=memo)
    share = sum(b.record["section_s"] for name, b in budgets.items() if name in names) / 60
    minutes = (time.time() - started + PART_PLAN_S) / 60 + share
    log.info("--as-part-of %g: in a %g-min plan of the whole %s tier, %s get %.1f min: planned for %.1f min (with "
             "the %.1f min planning took)", tier_minutes, tier_minutes, tier, ", ".join(sorted(names)), share, minutes,
             minutes - share)
    return minutes


def _replan(planned: list[tuple], minutes: float, started: float, jobs: int, memo: dict, i: int,
            pace: float = 1.0) -> dict | None:
    """The budgets of sections i.. (not run yet) for the time left (throughput from the cache, data facts from the
    first plan, estimates times `pace`); None, with a warning, when that time cannot give each remaining run one
    step (they keep the steps of the first plan)."""
    from dlstudy.studies.running.budget import plan_budgets

    rest = planned[i:]
    try:
        budgets, text = plan_budgets([(study, tasks) for _, _, study, tasks in rest], minutes, started, jobs=jobs,
                                     device=resolve_device("auto"), memo=memo, pace=pace)
    except ConfigError as exc:
        log.warning("--minutes %g: the %d section(s) left keep the first plan's steps (%s)", minutes, len(rest), exc)
        return None
    spent = (time.time() - started) / 60
    log.info("re-planned the %d section(s) left for the %.1f min left of the %g-min budget:\n%s", len(rest),
             minutes - spent, minutes, text.split("\n", 1)[1])
    return budgets


def _announce(planned: list[tuple], out: Path, tier: str, budget: str | None, minutes: float | None = None,
              started: float = 0.0, jobs: int = 1, remeasure: bool = False,
              memo: dict | None = None) -> tuple[list[float | None], dict]:
    """Log the plan (sections, arms x seeds, data sizes, estimated time); returns (the estimate per section,
    {study name: budget.StudyBudget} when `minutes` is given, else {}).

    Loads every dataset first, so a missing one fails here, before any run, naming the folders searched. With
    `minutes`, measures every arm's throughput (cached) and sets its steps; an impossible budget is a ConfigError.
    """
    last = {} if budget or minutes is not None else last_section_seconds(out, tier)
    factor = None
    if not budget and minutes is None and any(study.minutes for _, _, study, _ in planned):
        factor = calibration_seconds() / REFERENCE_CALIBRATION_S
    plans = [plan_section(section.title, study, tasks, last.get(section.study), factor)
             for section, _, study, tasks in planned]
    budgets, text = {}, ""
    if minutes is not None:
        from dlstudy.studies.running.budget import plan_budgets

        budgets, text = plan_budgets([(study, tasks) for _, _, study, tasks in planned], minutes, started,
                                     jobs=jobs, remeasure=remeasure, device=resolve_device("auto"), memo=memo)
        for p in plans:
            if p.runs_left:
                p.estimate_s, p.estimate_from = budgets[p.study].record["remaining_s"], "budget"
    log.info("%s", format_plan(plans, factor))
    if text:
        log.info("%s", text)
    return [p.estimate_s for p in plans], budgets
