"""A time budget instead of epochs: `dlstudy reproduce --minutes M` / `dlstudy run FILE --minutes M`.

    costs = run_costs(study, tasks, out, ...)      # one RunCost per run: measured step time + fixed seconds
    plan = allocate(sections, budget_s)            # pure arithmetic: steps per arm, expected seconds
    tasks = plan_section.apply(tasks)               # train.epochs / max_steps_per_epoch / schedule per arm

How the budget is split (docs/studies.md, "Time budget"):
1. Sections without training steps (an SVM study) cost what their measured `minutes` say, scaled by this machine's
   calibration; they are taken off the budget first, with the time the plan itself took (data decoding,
   measurements) and an estimate of each study's report.
2. The rest goes to the other sections in proportion to their `budget_share` (default: the study file's `minutes`).
3. Within a section every run (each arm x seed, and each learning-rate candidate of an arm with `optim.lr_grid`,
   which must train exactly like the arm's seeds) gets equal *training* time, times `budget_weights[arm]`
   (default 1), with its fixed costs on top (equal_training_steps), and never fewer steps than
   `budget_min_epochs[arm]` full passes.
4. A run's time = steps x measured step time + its fixed costs (evaluations before, per epoch and after at the
   measured evaluation speed, SVM fits on embeddings, start-up): the steps are the most that fit.
5. The steps become `train.epochs` x `train.max_steps_per_epoch` (the study's epochs when each still holds at least
   one step and no more than a full pass, else as few epochs as hold them), so the schedule's total_steps is the
   budgeted count; a `constant` schedule becomes `budget_schedule` (linear decay to 0: Li et al., ICLR 2020).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

from dlstudy.config import RunConfig, check_ranges
from dlstudy.errors import ConfigError

log = logging.getLogger(__name__)

# Fixed costs that are not measured, from a digits study on 2 cores (docs/studies.md, "Time budget")
RUN_START_S = 2.0  # per run besides loading its data: job start, config/env files, predictions, figures
STUDY_REPORT_S = 5.0  # per study: summary, statistics (bootstrap) and the report's figures
# An SVM fitted on a run's embeddings (eval.classifier: svm), per C value: seconds per train embedding x dimension x
# class, measured on 2 Zen 4 cores (48 and 80 s for C = 0.1 and 1 on 64,800 x 128 x 200 Tiny ImageNet embeddings),
# with a floor for small sets (start-up, the Newton iterations' fixed costs)
SVM_FIT_S_PER_UNIT = 3.5e-8
SVM_FIT_MIN_S = 2.0
SVM_EMBEDDING_DIM = 512  # the embedding size assumed when model.embedding_dim is not set (a backbone's features)


@dataclass(frozen=True)
class RunCost:
    """What one run costs as a function of its optimizer steps: step_s x steps + once_s + epoch_s x epochs."""

    arm: str
    step_s: float
    once_s: float  # start-up, data loading, evaluation before and after training, embedding SVM fits
    epoch_s: float  # after every epoch: the val split and the train subset, at the measured eval speed
    full_epoch_steps: int  # steps of one uncapped pass over the training split
    epochs: int  # the study's epochs (kept while each epoch holds at least one step and at most a full pass)
    done: bool = False
    weight: float = 1.0
    min_steps: int = 1  # budget_min_epochs x full_epoch_steps: the equal split never gives it fewer

    def layout(self, steps: int) -> tuple[int, int]:
        return split_steps(steps, self.full_epoch_steps, self.epochs)

    def seconds(self, steps: int) -> float:
        epochs, per_epoch = self.layout(steps)
        return epochs * per_epoch * self.step_s + self.once_s + epochs * self.epoch_s


def split_steps(steps: int, full_epoch_steps: int, epochs: int) -> tuple[int, int]:
    """(epochs, steps per epoch) for a total of `steps`: the study's epochs where they fit, else as few as hold
    the steps (an epoch never exceeds a full pass). epochs x per epoch <= steps (short by less than epochs)."""
    steps = max(int(steps), 1)
    e = max(min(epochs, steps), math.ceil(steps / max(full_epoch_steps, 1)))
    return e, steps // e


@dataclass
class SectionInput:
    study: str
    share: float  # budget_share
    runs: list[RunCost]  # every run of the study, finished ones too (the plan does not depend on what is done)
    fixed_s: float  # per section: its report; a section without runs: its whole cost


@dataclass
class SectionPlan:
    study: str
    seconds: float  # the section's part of the budget
    steps: dict[str, int] = field(default_factory=dict)  # arm -> steps of each of its runs (before split_steps)
    expected_s: float = 0.0  # every run + fixed
    remaining_s: float = 0.0  # runs not finished yet + fixed
    fixed_s: float = 0.0
    per_run_s: dict[str, float] = field(default_factory=dict)  # arm -> expected seconds of one run


def allocate(sections: list[SectionInput], budget_s: float, spent_s: float = 0.0) -> list[SectionPlan]:
    """Steps per arm of every section so the whole ends at `budget_s` (`spent_s` already gone to the plan itself).

    ConfigError naming the section and the minimum minutes when a run cannot take even one step, or the fixed
    costs alone exceed the budget."""
    fixed_only = [s for s in sections if not s.runs]
    scalable = [s for s in sections if s.runs]
    left = budget_s - spent_s - sum(s.fixed_s for s in fixed_only)
    total_share = sum(s.share for s in scalable)
    need = [(s, _least_seconds(s)) for s in scalable]
    least_total = spent_s + sum(s.fixed_s for s in fixed_only) + max(
        [least * total_share / s.share for s, least in need], default=0.0)
    plans = [SectionPlan(s.study, s.fixed_s, expected_s=s.fixed_s, remaining_s=s.fixed_s, fixed_s=s.fixed_s)
             for s in fixed_only]
    short = [s for s, least in need if least > left * s.share / total_share]
    if left < 0 or short:
        if left < 0 and fixed_only:  # the sections without steps (and the plan) alone take more than the budget
            worst = max(fixed_only, key=lambda s: s.fixed_s).study
        else:
            worst = max(need, key=lambda p: p[1] * total_share / p[0].share)[0].study
        least_min = math.ceil(least_total / 6) / 10  # rounded up to 0.1 min
        raise ConfigError(f"--minutes {budget_s / 60:g}: too short for section {worst!r} (fixed costs and at least "
                          f"one training step per run); the budget must be at least {least_min:g} minutes here")
    for s in scalable:
        seconds = left * s.share / total_share
        plan = SectionPlan(s.study, seconds, fixed_s=s.fixed_s, expected_s=s.fixed_s, remaining_s=s.fixed_s)
        plan.steps = equal_training_steps(s.runs, seconds - s.fixed_s)
        for run in s.runs:
            if run.arm not in plan.per_run_s:
                plan.per_run_s[run.arm] = run.seconds(plan.steps[run.arm])
            plan.expected_s += plan.per_run_s[run.arm]
            plan.remaining_s += 0.0 if run.done else plan.per_run_s[run.arm]
        plans.append(plan)
    order = {s.study: i for i, s in enumerate(sections)}
    return sorted(plans, key=lambda p: order[p.study])


def equal_training_steps(runs: list[RunCost], seconds: float) -> dict[str, int]:
    """arm -> steps so that every run trains for the same seconds (times its weight) and all of them, with their
    evaluations, start-up and embedding-SVM fits on top, fit in `seconds`.

    Equal *training* time, not equal total time: an arm whose evaluation costs more (an SVM fitted on its
    embeddings) is not left fewer steps for it, so arms differ in their objective, not in what they trained."""
    arms = {r.arm: r for r in runs}  # every run of an arm has the same cost model

    def steps_at(t: float) -> dict[str, int]:  # t: training seconds per unit of weight
        return {a: max(r.min_steps, int(t * r.weight / max(r.step_s, 1e-12))) for a, r in arms.items()}

    def total(steps: dict[str, int]) -> float:
        return sum(r.seconds(steps[r.arm]) for r in runs)

    lo, hi = 0.0, max(seconds, 0.0) / min(r.weight for r in runs) + max(r.step_s for r in runs)
    for _ in range(60):  # bisection on t: total(steps_at(t)) grows with t
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(steps_at(mid)) <= seconds else (lo, mid)
    return steps_at(lo)


def _least_seconds(section: SectionInput) -> float:
    """The smallest section time in which every run gets one step (times its weight) and its minimum steps."""
    total_weight = sum(r.weight for r in section.runs)
    return section.fixed_s + max(max(r.seconds(1) / r.weight * total_weight for r in section.runs),
                                 sum(r.seconds(r.min_steps) for r in section.runs))


# ------------------------------------------------------------------------------------------------ configs


def budgeted_config(cfg: RunConfig, steps: int, full_epoch_steps: int, budget_schedule: str) -> RunConfig:
    """`cfg` training exactly `steps` optimizer steps (epochs x max_steps_per_epoch), its epoch-counted settings
    (warm-up, frozen-backbone epochs, step decay) scaled to keep their fraction of training, and a constant
    schedule replaced by `budget_schedule`."""
    t = cfg.train
    epochs, per_epoch = split_steps(steps, full_epoch_steps, t.epochs)
    ratio = epochs / t.epochs
    schedule = budget_schedule if t.schedule == "constant" else t.schedule
    train = dataclasses.replace(
        t, epochs=epochs, max_steps_per_epoch=per_epoch, schedule=schedule,
        warmup_epochs=t.warmup_epochs * ratio,
        freeze_backbone_epochs=min(round(t.freeze_backbone_epochs * ratio), epochs - 1) if t.freeze_backbone_epochs
        else 0,
        step_size=max(1, round(t.step_size * ratio)))
    return check_ranges(dataclasses.replace(cfg, train=train), "budgeted config")


@dataclass
class StudyBudget:
    """What run_study needs of the plan: each arm's steps and the record written to <study>/budget.json."""

    steps: dict[str, int]  # arm -> optimizer steps of each run, before split_steps lays them out in epochs
    full_epoch_steps: dict[str, int]
    budget_schedule: str
    record: dict  # budget.json: budget, machine, per arm throughput / steps / expected seconds

    def apply(self, tasks: list) -> list:
        out = []
        for task in tasks:
            if task.arm in self.steps and task.cfg.task == "train":
                cfg = budgeted_config(task.cfg, self.steps[task.arm], self.full_epoch_steps[task.arm],
                                      self.budget_schedule)
                task = dataclasses.replace(task, cfg=cfg)
            out.append(task)
        return out

    def write(self, study_dir) -> None:
        from dlstudy.io import atomic_write_json

        atomic_write_json(study_dir / "budget.json", self.record)

    def finish(self, study_dir, seconds: float) -> None:
        """Record the real wall time of the study beside the plan."""
        self.record["real_s"] = round(seconds, 1)
        self.write(study_dir)


# ------------------------------------------------------------------------------------------------ text


def format_budget(budget_s: float, spent_s: float, plans: list[SectionPlan], details: dict[str, dict],
                  pace: float = 1.0) -> str:
    """The plan's lines: per arm steps, measured img/s, expected minutes; per section and in all vs the budget."""
    lines = [f"time budget: {budget_s / 60:.1f} min ({spent_s / 60:.1f} min already spent planning: data, "
             f"measurements)"]
    if pace != 1.0:
        lines.append(f"  estimates x {pace:.2f}: the sections run so far took {pace:.2f} x their planned time "
                     f"(bounded to {PACE_BOUNDS[0]}-{PACE_BOUNDS[1]})")
    for plan in plans:
        lines.append(f"  [{plan.study}] ~{plan.expected_s / 60:.1f} min of its {plan.seconds / 60:.1f} min "
                     f"(fixed {plan.fixed_s / 60:.1f} min)")
        for arm, info in details.get(plan.study, {}).items():
            lines.append(f"    {arm}: {info['steps']:,} steps ({info['epochs']} x {info['steps_per_epoch']:,}) "
                         f"x {info['runs']} run(s), train {info['train_img_s']:,.0f} img/s, eval "
                         f"{info['eval_img_s']:,.0f} img/s, {info['threads']} thread(s), ~{info['run_s'] / 60:.2f} "
                         f"min a run{' (measured now)' if not info['cached'] else ''}")
    from dlstudy.studies.running.throughput import BUSY_SHARE

    busy = sorted({arm for arms in details.values() for arm, info in arms.items()
                   if info.get("cpu_share") is not None and info["cpu_share"] < BUSY_SHARE})
    if busy:
        lines.append(f"  warning: measured while another process held some of the cores (CPU share below "
                     f"{BUSY_SHARE}) for {', '.join(busy)}: the steps are too few for an idle machine; the next "
                     "plan measures these again")
    if not any(p.steps for p in plans):
        lines.append("  no training runs to scale here: the run takes what its fixed costs take")
    expected = spent_s + sum(p.expected_s for p in plans)
    lines.append(f"  total: ~{expected / 60:.1f} min estimated for a {budget_s / 60:.1f} min budget "
                 f"({(expected / budget_s - 1) * 100:+.1f}%)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ measuring a study


def _data_facts(cfg: RunConfig, memo: dict) -> dict:
    """Sizes, train labels, the seconds a run spends loading `cfg.data` (from the decoded cache) and up to
    TIMING_IMAGES of its training images spread over the split (what the throughput is measured on), once per data
    config: the first load decodes into the cache, the timed second one is what every run pays."""
    import time

    import torch

    from dlstudy.config import to_dict
    from dlstudy.data import load_dataset
    from dlstudy.studies.running.throughput import TIMING_IMAGES

    key = repr(sorted(to_dict(cfg.data).items()))
    if key not in memo:
        load_dataset(cfg.data)
        start = time.perf_counter()
        d = load_dataset(cfg.data)
        memo[key] = {"load_s": time.perf_counter() - start, "labels": d.train.labels, "shape": d.image_shape,
                     "classes": d.num_classes, "n_train": len(d.train), "n_val": len(d.val), "n_test": len(d.test),
                     "images": d.train.images[torch.linspace(0, max(len(d.train) - 1, 0),
                                                             min(len(d.train), TIMING_IMAGES)).long()].clone()}
    return memo[key]


def _full_epoch_steps(cfg: RunConfig, labels, needs_pk: bool) -> int:
    from dlstudy.engine.build import steps_per_epoch
    from dlstudy.engine.distributed import DistInfo

    uncapped = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps_per_epoch=None))
    return steps_per_epoch(labels, uncapped, DistInfo(), needs_pk)


def arm_cost(cfg: RunConfig, arm: str, facts: dict, tp, done: bool, weight: float) -> RunCost:
    """A run's cost model from the measured throughput and its data sizes."""
    t, e = cfg.train, cfg.eval
    once = RUN_START_S + facts["load_s"]
    if t.evaluate_before:
        once += facts["n_test"] / tp.eval_img_s
    if e.classifier == "head":
        once += (facts["n_test"] + facts["n_val"]) / tp.eval_img_s  # test, then val scores of the best weights
    else:
        once += (facts["n_train"] + facts["n_val"] + facts["n_test"]) / tp.eval_img_s
        if e.classifier == "svm":
            dims = cfg.model.embedding_dim or SVM_EMBEDDING_DIM
            once += len(cfg.svm.C) * svm_fit_seconds(facts["n_train"], dims, facts["classes"])
    epoch = (facts["n_val"] + min(t.train_eval_subset, facts["n_train"])) / tp.eval_img_s
    return RunCost(arm, tp.step_s, once, epoch, _full_epoch_steps(cfg, facts["labels"], tp.needs_pk), t.epochs,
                   done, weight)


def svm_fit_seconds(n_train: int, dims: int, classes: int) -> float:
    """Expected seconds of one LinearSVM fit (one C) on `n_train` embeddings of `dims` values, `classes` classes."""
    return max(SVM_FIT_MIN_S, SVM_FIT_S_PER_UNIT * n_train * dims * classes)


# A study's arms are timed within this many seconds of each other: a shared machine's speed drifts by a third over
# tens of minutes (2 Zen 4 cores: resnet10 measured at 1,874 img/s, then 1,312 half an hour later), and an arm
# read from an older cache entry got 1.5x the training seconds of its sibling measured in the plan (60-min tier).
TOGETHER_S = 600.0


def timed_together(study_name: str, tasks: list, *, available: int, device: str, remeasure: bool,
                   memo: dict) -> dict:
    """{arm: Throughput} of every train arm of one study (cached or measured), all measured within TOGETHER_S:
    equal training time means steps from speeds of one moment. When the cached ones span more, every arm not
    measured in this plan is measured again."""
    from dlstudy.studies.running.throughput import arm_throughput

    first = {}
    for task in tasks:
        if task.cfg.task == "train":
            first.setdefault(task.arm, task)

    def speed(task, again: bool):
        facts = _data_facts(task.cfg, memo)
        return arm_throughput(task.cfg, facts["shape"], facts["classes"], available, device, remeasure or again,
                              measured_now=memo.setdefault("measured now", set()), images=facts["images"])

    found = {arm: speed(task, False) for arm, task in first.items()}
    stamps = [tp.measured_s for tp in found.values()]
    if not stamps or max(stamps) - min(stamps) <= TOGETHER_S:
        return found
    # every arm not measured in this plan: re-measuring only the oldest would leave the rest as far from them
    log.info("study %s: its arms' cached speeds are from different times (a shared machine's speed drifts): "
             "measuring them together", study_name)
    return {arm: speed(task, True) for arm, task in first.items()}


def study_costs(study, tasks: list, *, available: int, device: str, remeasure: bool, memo: dict,
                svm_seconds: float | None) -> tuple[SectionInput, dict]:
    """(SectionInput of `study`, {arm: details}) with every train arm's throughput measured (or cached), timed
    together (timed_together)."""
    runs, details, fixed = [], {}, STUDY_REPORT_S
    svm_tasks = [t for t in tasks if t.cfg.task != "train"]
    if svm_tasks and svm_seconds is not None:
        fixed += svm_seconds * len(svm_tasks) / len(tasks)
    weights, min_epochs = dict(study.budget_weights), dict(study.budget_min_epochs)
    for key, given in (("budget_weights", weights), ("budget_min_epochs", min_epochs)):
        unknown = sorted(set(given) - {t.arm for t in tasks})
        if unknown:
            raise ConfigError(f"study {study.name!r}: {key} names unknown arm(s) {unknown}; its arms are "
                              f"{sorted({t.arm for t in tasks})}")
    speeds = timed_together(study.name, tasks, available=available, device=device, remeasure=remeasure, memo=memo)
    for task in tasks:
        if task.cfg.task != "train":
            continue
        facts = _data_facts(task.cfg, memo)
        if task.arm not in details:
            tp = speeds[task.arm]
            cost = arm_cost(task.cfg, task.arm, facts, tp, False, weights.get(task.arm, 1.0))
            if task.arm in min_epochs:
                cost = dataclasses.replace(cost, min_steps=math.ceil(min_epochs[task.arm] * cost.full_epoch_steps))
            candidates = len(dict.fromkeys(task.cfg.optim.lr_grid or []))
            runs += [cost] * candidates  # the arm's lr search: runs of the same budget
            details[task.arm] = {"cost": cost, "tp": tp, "runs": candidates}
        runs.append(dataclasses.replace(details[task.arm]["cost"], done=task.done))
        details[task.arm]["runs"] += 1
    return SectionInput(study.name, study.budget_share or study.minutes or 1.0, runs, fixed), details


def plan_budgets(entries: list[tuple], minutes: float, started: float, *, jobs: int = 1, remeasure: bool = False,
                 device: str = "cpu", memo: dict | None = None, pace: float = 1.0) -> tuple[dict, str]:
    """`entries`: [(study, tasks)] in the order they run. Returns ({study name: StudyBudget}, the plan's text).

    `started`: time.time() when the command started; what was spent so far (planning, measuring, and for a re-plan
    the sections already run) is taken off the budget. `memo`: data facts and the calibration kept between a plan
    and its re-plans.
    `pace`: every estimate times this (a re-plan's observed real / planned seconds of the sections run so far).
    ConfigError (exit 2) when the budget is impossible."""
    import time

    import torch

    from dlstudy.studies.running.plan import REFERENCE_CALIBRATION_S, calibration_seconds
    from dlstudy.studies.running.throughput import machine_info

    if not (minutes > 0 and math.isfinite(minutes)):
        raise ConfigError(f"--minutes: expected a positive number of minutes, got {minutes:g}")
    available = max(1, torch.get_num_threads() // max(jobs, 1))
    memo = {} if memo is None else memo
    svm_seconds = {}
    if any(study.minutes and any(t.cfg.task != "train" for t in tasks) for study, tasks in entries):
        if "calibration" not in memo:  # measured once: re-plans reuse it
            memo["calibration"] = calibration_seconds() / REFERENCE_CALIBRATION_S
        svm_seconds = {study.name: study.minutes * 60 * memo["calibration"] for study, _ in entries if study.minutes}
    inputs, details = [], {}
    for study, tasks in entries:
        section, details[study.name] = study_costs(study, tasks, available=available, device=device,
                                                   remeasure=remeasure, memo=memo,
                                                   svm_seconds=svm_seconds.get(study.name))
        if jobs > 1:  # runs side by side: each run may take `jobs` times its share of the wall time
            section.runs = [dataclasses.replace(r, weight=r.weight / jobs) for r in section.runs]
        inputs.append(at_pace(section, pace))
    budget_s, spent = minutes * 60, time.time() - started
    plans = allocate(inputs, budget_s, spent)
    machine = machine_info(device)
    budgets, text_details = {}, {}
    for (study, tasks), plan, section in zip(entries, plans, inputs):
        keep_plan(plan, section, tasks, minutes, machine)
        arms = {}
        for arm, d in details[study.name].items():
            steps = plan.steps[arm]
            epochs, per_epoch = d["cost"].layout(steps)
            tp = d["tp"]
            arms[arm] = {"steps": epochs * per_epoch, "planned_steps": steps, "epochs": epochs, "steps_per_epoch": per_epoch, "runs": d["runs"],
                         "step_s": round(tp.step_s, 6), "train_img_s": round(tp.train_img_s, 1),
                         "eval_img_s": round(tp.eval_img_s, 1), "threads": tp.threads, "cached": tp.cached,
                         "cpu_share": tp.cpu_share,
                         "run_s": round(plan.per_run_s[arm], 1),
                         "expected_s": round(plan.per_run_s[arm] * d["runs"], 1)}
        text_details[study.name] = arms
        record = {"minutes": minutes, "section_s": round(plan.seconds, 1), "expected_s": round(plan.expected_s, 1),
                  "remaining_s": round(plan.remaining_s, 1), "fixed_s": round(plan.fixed_s, 1),
                  "plan_s": round(spent, 1), "pace": round(pace, 3), "machine": machine, "jobs": jobs, "arms": arms,
                  "budget_schedule": study.budget_schedule, "real_s": None}
        budgets[study.name] = StudyBudget(dict(plan.steps), {a: d["cost"].full_epoch_steps
                                                             for a, d in details[study.name].items()},
                                          study.budget_schedule, record)
    return budgets, format_budget(budget_s, spent, plans, text_details, pace)


# Bounds of a re-plan's pace: one odd section (a busy moment, a run that failed early) must not halve or double the
# steps of every section after it
PACE_BOUNDS = (0.67, 1.5)


def observed_pace(sections: list[tuple[float | None, float]]) -> float:
    """Real over planned seconds of the sections run so far ([(planned or None, real)]), within PACE_BOUNDS; 1.0
    before any planned section ran. The throughput measurement takes a few seconds on random data; a long run on
    real data can go slower (measured: DenseNet 10-25% on 2 shared Zen 4 cores) or faster, and the sections left
    are planned at the pace the ones before them really went."""
    planned = [(p, real) for p, real in sections if p]
    if not planned:
        return 1.0
    ratio = sum(real for _, real in planned) / sum(p for p, _ in planned)
    return min(max(ratio, PACE_BOUNDS[0]), PACE_BOUNDS[1])


def at_pace(section: SectionInput, pace: float) -> SectionInput:
    """`section` with every cost times `pace`."""
    if pace == 1.0:
        return section
    runs = [dataclasses.replace(r, step_s=r.step_s * pace, once_s=r.once_s * pace, epoch_s=r.epoch_s * pace)
            for r in section.runs]
    return dataclasses.replace(section, runs=runs, fixed_s=section.fixed_s * pace)


def keep_plan(plan: SectionPlan, section: SectionInput, tasks: list, minutes: float, machine: dict) -> None:
    """A rerun into a folder planned with the same budget on the same machine keeps that plan's steps (its own
    planning took another time, which would move every count a little): finished runs stay valid, and an lr search
    is not run again for a changed step count."""
    from dlstudy.studies.summary.budget_block import read_budget

    if not tasks or not plan.steps:
        return
    old = read_budget(tasks[0].path.parent.parent)  # OUT/<study>/<arm>/seed-<s> -> OUT/<study>
    arms = (old or {}).get("arms") or {}
    if not old or old.get("minutes") != minutes or old.get("machine") != machine or set(arms) != set(plan.steps) \
            or not all(isinstance(a.get("planned_steps"), int) and a["planned_steps"] > 0 for a in arms.values()):
        return
    plan.steps = {arm: arms[arm]["planned_steps"] for arm in plan.steps}
    plan.expected_s = plan.remaining_s = plan.fixed_s
    for run in section.runs:
        plan.per_run_s[run.arm] = run.seconds(plan.steps[run.arm])
        plan.expected_s += plan.per_run_s[run.arm]
        plan.remaining_s += 0.0 if run.done else plan.per_run_s[run.arm]


def plan_study_budget(study_path, out, overrides: dict | None, minutes: float, started: float, *,
                      seeds: list[int] | None = None, jobs: int = 1,
                      remeasure: bool = False) -> tuple[StudyBudget, str]:
    """`dlstudy run FILE --minutes M`: the one study's budget and the plan's text (nothing written)."""
    from dlstudy.runs import resolve_device
    from dlstudy.studies.running.runner import load_study, plan_study

    study = load_study(study_path)
    if seeds:
        study.seeds = list(seeds)
    tasks = plan_study(study, out, overrides, source=str(study_path))
    device = resolve_device(tasks[0].cfg.device) if tasks else "cpu"
    budgets, text = plan_budgets([(study, tasks)], minutes, started, jobs=jobs, remeasure=remeasure, device=device)
    return budgets[study.name], text
