"""The time budget (`--minutes`): steps from seconds, shares, fixed costs, the schedule ending at zero at the
budgeted last step, the per-machine throughput cache, the measurement itself, the plan text, and a budgeted study
end to end on digits."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time

import pytest
import torch
import yaml

from dlstudy.cli import main
from dlstudy.config import RunConfig, build_run_config
from dlstudy.errors import ConfigError
from dlstudy.optim import build_optimizer, build_scheduler
from dlstudy.studies.running import budget, throughput
from dlstudy.studies.running.budget import (RunCost, SectionInput, allocate, budgeted_config, format_budget,
                                            split_steps)

# ------------------------------------------------------------------------------------------------ arithmetic


def _cost(arm="a", step_s=0.01, once_s=1.0, epoch_s=0.1, full=100, epochs=5, weight=1.0, done=False) -> RunCost:
    return RunCost(arm, step_s, once_s, epoch_s, full, epochs, done, weight)


@pytest.mark.parametrize("steps, full, epochs, expected", [
    (1000, 141, 6, (8, 125)),  # more than the study's epochs hold: as few epochs as hold the steps
    (600, 141, 6, (6, 100)),  # the study's epochs, each capped
    (10, 100, 6, (6, 1)),
    (3, 100, 6, (3, 1)),  # fewer steps than epochs: one step an epoch
    (1, 5, 1, (1, 1)),
])
def test_split_steps(steps, full, epochs, expected):
    e, per = split_steps(steps, full, epochs)
    assert (e, per) == expected
    assert per <= full and steps - e < e * per <= steps


def test_equal_training_steps_give_each_arm_the_same_training_time_with_its_evaluations_on_top():
    """An arm whose evaluation costs more (an SVM on its embeddings: once_s 100 s) trains as long as the others;
    the evaluations come out of the section's time, not out of that arm's steps."""
    runs = [_cost("head", step_s=0.5, once_s=2.0), _cost("svm", step_s=0.25, once_s=100.0),
            _cost("slow", step_s=1.0, once_s=2.0, weight=2.0)]
    steps = budget.equal_training_steps(runs, 1000.0)
    train = {r.arm: steps[r.arm] * r.step_s / r.weight for r in runs}
    assert max(train.values()) - min(train.values()) <= 1.0  # within one step of the slowest arm
    assert sum(r.seconds(steps[r.arm]) for r in runs) <= 1000.0
    more = {a: int(steps[a] * 1.02) + 1 for a in steps}  # 2% more training each would not fit
    assert sum(r.seconds(more[r.arm]) for r in runs) > 1000.0
    seeds = runs + [runs[0]] * 3  # an arm's seeds all take its steps, and count against the time
    fewer = budget.equal_training_steps(seeds, 1000.0)
    assert fewer["head"] < steps["head"] and set(fewer) == set(steps)


def test_allocate_shares_fixed_sections_and_weights():
    svm = SectionInput("svm", share=5.0, runs=[], fixed_s=300.0)  # no steps: costs what it costs
    a = SectionInput("a", share=1.0, runs=[_cost("x"), _cost("x"), _cost("y")], fixed_s=5.0)
    b = SectionInput("b", share=3.0, runs=[_cost("p", weight=2.0), _cost("q")], fixed_s=5.0)
    plans = {p.study: p for p in allocate([svm, a, b], budget_s=3600.0, spent_s=60.0)}
    assert [p for p in plans] == ["svm", "a", "b"]
    left = 3600.0 - 60.0 - 300.0
    assert plans["a"].seconds == pytest.approx(left / 4) and plans["b"].seconds == pytest.approx(3 * left / 4)
    assert plans["svm"].expected_s == 300.0
    # equal time per run within a section: x and y get the same steps (same cost model)
    assert plans["a"].steps["x"] == plans["a"].steps["y"]
    # weight 2: twice the training steps of the other arm's run (same step time)
    assert plans["b"].steps["p"] == pytest.approx(2 * plans["b"].steps["q"], abs=1)
    total = 60.0 + sum(p.expected_s for p in plans.values())
    assert total <= 3600.0 and total > 0.98 * 3600.0


def test_finished_runs_do_not_change_the_plan_but_leave_the_remaining_time():
    runs = [_cost("x"), _cost("x", done=True)]
    fresh = allocate([SectionInput("a", 1.0, [_cost("x"), _cost("x")], 5.0)], 600.0)[0]
    resumed = allocate([SectionInput("a", 1.0, runs, 5.0)], 600.0)[0]
    assert fresh.steps == resumed.steps
    assert resumed.remaining_s == pytest.approx(5.0 + resumed.per_run_s["x"])


def test_the_whole_ends_within_ten_percent_of_the_budget_on_synthetic_sections():
    """The property the --minutes claim rests on: whatever the speeds, shares and fixed costs (within what a
    budget allows), the planned total is within 10% of the budget (in fact within a step or two per run)."""
    rng = random.Random(0)
    for case in range(200):
        sections = []
        for s in range(rng.randint(1, 4)):
            if rng.random() < 0.2:
                sections.append(SectionInput(f"svm{s}", rng.uniform(1, 10), [], rng.uniform(10, 400)))
                continue
            runs = []
            for arm in range(rng.randint(1, 5)):
                cost = _cost(f"arm{arm}", step_s=10 ** rng.uniform(-4, 0.3), once_s=rng.uniform(1, 30),
                             epoch_s=rng.uniform(0, 3), full=rng.randint(1, 60000), epochs=rng.randint(1, 30),
                             weight=rng.choice([1.0, 1.0, 0.5, 2.0]))
                runs += [cost] * rng.randint(1, 6)
            sections.append(SectionInput(f"s{s}", rng.uniform(1, 20), runs, rng.uniform(0, 20)))
        budget = rng.uniform(20, 240) * 60
        try:
            plans = allocate(sections, budget, spent_s=rng.uniform(0, 120))
        except ConfigError:
            continue  # an impossible budget is an error, tested below
        spent = budget - sum(p.seconds for p in plans)
        total = spent + sum(p.expected_s for p in plans)
        assert abs(total - budget) <= 0.10 * budget, (case, total, budget)


def test_impossible_budgets_name_the_section_and_the_minimum():
    slow = SectionInput("losses-cpu", 1.0, [_cost("big", step_s=30.0, once_s=60.0)] * 3, 5.0)
    with pytest.raises(ConfigError, match=r"--minutes 2: too short for section 'losses-cpu'.*at least [\d.]+ minutes"):
        allocate([slow], 120.0)
    heavy = SectionInput("svm-cpu", 1.0, [], 600.0)
    with pytest.raises(ConfigError, match=r"'svm-cpu'.*at least 10"):
        allocate([heavy, SectionInput("a", 1.0, [_cost()], 0.0)], 300.0)
    # the minimum it names is enough
    msg = ""
    try:
        allocate([slow], 120.0)
    except ConfigError as exc:
        msg = str(exc)
    least = float(msg.split("must be at least ")[1].split(" ")[0]) * 60
    assert all(steps >= 1 for p in allocate([slow], least) for steps in p.steps.values())


# ------------------------------------------------------------------------------------------------ schedule


@pytest.mark.parametrize("schedule, budget_schedule", [("constant", "linear"), ("constant", "cosine"),
                                                       ("cosine", "linear")])
def test_budgeted_schedule_reaches_zero_at_the_budgeted_last_step(schedule, budget_schedule):
    from dlstudy.engine.build import steps_per_epoch
    from dlstudy.engine.distributed import DistInfo

    cfg = build_run_config({"train": {"epochs": 3, "schedule": schedule, "batch_size": 10,
                                      "warmup_epochs": 1.0 if schedule == "cosine" else 0.0}})
    labels = torch.arange(150) % 10  # a full epoch: 15 steps of 10
    steps = 37
    budgeted = budgeted_config(cfg, steps, full_epoch_steps=15, budget_schedule=budget_schedule)
    t = budgeted.train
    spe = steps_per_epoch(labels, budgeted, DistInfo(), needs_pk=False)
    total = t.epochs * spe
    assert (t.epochs, t.max_steps_per_epoch, spe, total) == (3, 12, 12, 36)  # 37 -> 3 epochs x 12
    assert t.schedule == (budget_schedule if schedule == "constant" else schedule)
    assert t.warmup_epochs == (1.0 if schedule == "cosine" else 0.0)  # the same fraction of 3 epochs
    opt = build_optimizer(torch.nn.Linear(2, 2).parameters(), budgeted.optim)
    sched = build_scheduler(opt, t, spe)
    assert sched.total_steps == total
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert min(lrs) > 0  # every budgeted step trains
    assert opt.param_groups[0]["lr"] == 0.0  # exactly zero once the last budgeted step is taken


def test_budgeted_config_scales_epoch_counted_settings():
    cfg = build_run_config({"train": {"epochs": 10, "schedule": "step", "step_size": 4,
                                      "freeze_backbone_epochs": 2}})
    out = budgeted_config(cfg, 5000, full_epoch_steps=250, budget_schedule="linear").train
    assert (out.epochs, out.max_steps_per_epoch) == (20, 250)
    assert (out.step_size, out.freeze_backbone_epochs, out.schedule) == (8, 4, "step")


# ------------------------------------------------------------------------------------------------ measurement


def test_observed_pace_is_real_over_planned_within_bounds():
    assert budget.observed_pace([]) == 1.0
    assert budget.observed_pace([(None, 30.0)]) == 1.0  # no plan to compare with
    assert budget.observed_pace([(100.0, 110.0), (50.0, 70.0)]) == pytest.approx(180 / 150)
    assert budget.observed_pace([(100.0, 110.0), (None, 500.0)]) == pytest.approx(1.1)
    assert budget.observed_pace([(10.0, 100.0)]) == budget.PACE_BOUNDS[1]
    assert budget.observed_pace([(100.0, 1.0)]) == budget.PACE_BOUNDS[0]


def test_a_slower_pace_gives_fewer_steps_and_the_same_section_time(tmp_path, monkeypatch):
    """Estimates x pace: a re-plan after sections that ran 1.3 x their plan gives the runs left fewer steps, and
    its expected time (at that pace) still fills the time left."""

    monkeypatch.setenv("DLSTUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(throughput, "TARGET_SECONDS", 0.2)
    planned, memo = _two_sections(tmp_path), {}
    entries = [(p[2], p[3]) for p in planned[1:]]
    now = time.time()
    on, _ = budget.plan_budgets(entries, 2.0, now, memo=memo)
    slow, text = budget.plan_budgets(entries, 2.0, now, memo=memo, pace=1.3)
    assert slow["second"].steps["sgd"] < on["second"].steps["sgd"] * 0.85
    assert slow["second"].record["pace"] == 1.3 and on["second"].record["pace"] == 1.0
    assert slow["second"].record["expected_s"] == pytest.approx(on["second"].record["expected_s"], rel=0.1)
    assert "estimates x 1.30" in text


def test_budget_min_epochs_is_a_floor_under_the_equal_split(tmp_path, monkeypatch):
    """An arm with `budget_min_epochs: 1` trains at least one full pass even where the equal split gives it less;
    the others share what is left; an unknown arm or a value <= 0 is an error naming the key."""

    runs = [_cost("batch1", step_s=0.01, full=5000), _cost("mini", step_s=0.01, full=100)]
    free = budget.equal_training_steps(runs, 40.0)
    assert free["batch1"] < 5000
    floored = budget.equal_training_steps([dataclasses.replace(runs[0], min_steps=5000), runs[1]], 70.0)
    assert floored["batch1"] == 5000 and 0 < floored["mini"] < 5000
    assert budget._least_seconds(SectionInput("s", 1.0, [dataclasses.replace(runs[0], min_steps=5000), runs[1]],
                                              0.0)) >= runs[0].seconds(5000)

    monkeypatch.setenv("DLSTUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(throughput, "TARGET_SECONDS", 0.2)
    from dlstudy.studies.running.runner import load_study, plan_study

    def plan(study_dict, minutes=5.0):
        path = tmp_path / "min.yaml"
        path.write_text(yaml.safe_dump(study_dict))
        study = load_study(path)
        return budget.plan_budgets([(study, plan_study(study, tmp_path / "o", source=str(path)))], minutes,
                                   time.time())[0]["budget-e2e"]

    floor = plan({**STUDY, "budget_min_epochs": {"sgd": 3}}, minutes=0.5)
    full_pass = floor.full_epoch_steps["sgd"]
    assert floor.steps["sgd"] >= 3 * full_pass
    with pytest.raises(ConfigError, match=r"budget_min_epochs names unknown arm\(s\) \['nope'\]"):
        plan({**STUDY, "budget_min_epochs": {"nope": 1}})
    with pytest.raises(ConfigError, match=r"study.budget_min_epochs: expected numbers > 0"):
        plan({**STUDY, "budget_min_epochs": {"sgd": 0}})


def _mlp_cfg(**train) -> RunConfig:
    return build_run_config({"data": {"name": "digits"}, "model": {"name": "mlp"},
                             "optim": {"name": "momentum", "lr": 0.1}, "train": {"batch_size": 16, **train}})


def test_measurement_on_a_tiny_model_is_real_timing():
    tp = throughput.measure(_mlp_cfg(), (1, 8, 8), 10, available=1, target_s=0.2)
    assert 0 < tp.step_s < 1.0
    assert tp.train_img_s == pytest.approx(16 / tp.step_s, rel=0.01)
    # 24 does not divide the synthetic set's default size: every timed step is still a full batch of 24
    tp24 = throughput.measure(_mlp_cfg(batch_size=24), (1, 8, 8), 10, available=1, target_s=0.2)
    assert tp24.train_img_s == pytest.approx(24 / tp24.step_s, rel=0.01)
    assert tp.eval_img_s > tp.train_img_s  # no backward pass
    assert tp.threads == 1 and not tp.needs_pk
    triplet = build_run_config({"data": {"name": "digits"}, "model": {"name": "mlp", "embedding_dim": 8},
                                "loss": {"name": "triplet+ce", "classes_per_batch": 4, "samples_per_class": 2},
                                "train": {"batch_size": 8}})
    assert throughput.measure(triplet, (1, 8, 8), 10, available=1, target_s=0.1).needs_pk


def test_the_measurement_times_the_given_training_images():
    cfg = _mlp_cfg(batch_size=24)
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    data = throughput._timing_data(cfg, (1, 8, 8), 10, images)
    n = len(data.train)
    assert n % 24 == 0 and n >= 2 * 24
    # every timed image is one of the run's own, repeated in order; labels cycle over the classes
    assert torch.equal(data.train.images, images[torch.arange(n) % 5])
    assert torch.equal(data.train.labels, torch.arange(n) % 10)
    random_ = throughput._timing_data(cfg, (1, 8, 8), 10)
    assert random_.train.images.shape == (n, 1, 8, 8) and not torch.equal(random_.train.images[:5], images)
    with pytest.raises(ValueError, match=r"timing images: expected \(M, 1, 8, 8\) uint8, got \(5, 3, 8, 8\)"):
        throughput._timing_data(cfg, (1, 8, 8), 10, torch.zeros(5, 3, 8, 8, dtype=torch.uint8))
    tp = throughput.measure(cfg, (1, 8, 8), 10, available=1, target_s=0.1, images=images)
    assert tp.train_img_s == pytest.approx(24 / tp.step_s, rel=0.01)


def test_a_plan_measures_each_arm_on_its_own_training_images(tmp_path, monkeypatch):

    from dlstudy.data import load_dataset
    from dlstudy.studies.running.runner import load_study, plan_study

    monkeypatch.setenv("DLSTUDY_CACHE", str(tmp_path / "cache"))
    seen = []

    def fake(cfg, image_shape, num_classes, available, device="cpu", target_s=None, images=None):
        seen.append(images)
        return throughput.Throughput(0.01, 3200.0, 10000.0, 1, False, "")

    monkeypatch.setattr(throughput, "measure", fake)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    study = load_study(path)
    budget.plan_budgets([(study, plan_study(study, tmp_path / "runs"))], 1.0, time.time(), memo={})
    train = load_dataset(build_run_config({"data": {"name": "digits"}}).data).train
    assert len(seen) == 2  # the two arms (different batch sizes: two cache keys)
    for images in seen:
        assert images.shape == (min(len(train), throughput.TIMING_IMAGES), 1, 8, 8)
        assert torch.equal(images[0], train.images[0]) and torch.equal(images[-1], train.images[-1])


def test_throughput_cache_hit_miss_and_remeasure(tmp_path, monkeypatch):
    calls = []
    real = throughput.measure

    def counted(*args, **kw):  # measured alone (a busy test machine's entries are measured again: tested below)
        calls.append(1)
        return dataclasses.replace(real(*args, **kw, target_s=0.1), cpu_share=1.0)

    monkeypatch.setattr(throughput, "measure", counted)
    cfg = _mlp_cfg()
    first = throughput.arm_throughput(cfg, (1, 8, 8), 10, 1, cache_dir=str(tmp_path))
    again = throughput.arm_throughput(dataclasses.replace(cfg, seed=3), (1, 8, 8), 10, 1, cache_dir=str(tmp_path))
    assert (len(calls), first.cached, again.cached) == (1, False, True)  # seed and lr do not change the cost
    assert again.step_s == pytest.approx(first.step_s, rel=1e-4) and again.key == first.key
    other = _mlp_cfg(batch_size=32)
    miss = throughput.arm_throughput(other, (1, 8, 8), 10, 1, cache_dir=str(tmp_path))
    assert (len(calls), miss.cached) == (2, False) and miss.key != first.key
    now: set = set()
    fresh = throughput.arm_throughput(cfg, (1, 8, 8), 10, 1, remeasure=True, cache_dir=str(tmp_path), measured_now=now)
    assert (len(calls), fresh.cached, fresh.key) == (3, False, first.key)
    # --remeasure measures a configuration once per plan: a second arm of the same configuration reads it back
    twin = throughput.arm_throughput(cfg, (1, 8, 8), 10, 1, remeasure=True, cache_dir=str(tmp_path), measured_now=now)
    assert (len(calls), twin.cached, twin.step_s) == (3, True, pytest.approx(fresh.step_s, rel=1e-4))
    entries = json.loads((tmp_path / throughput.CACHE_FILE).read_text())["entries"]
    assert len(entries) == 2
    entry = entries[first.key]
    assert entry["machine"]["cpu"] == throughput.cpu_model() and entry["machine"]["torch"] == torch.__version__
    assert entry["config"]["batch_size"] == 16 and entry["config"]["threads"] == 1
    (tmp_path / throughput.CACHE_FILE).write_text("{not json")  # damaged: measured again, rewritten
    assert not throughput.arm_throughput(cfg, (1, 8, 8), 10, 1, cache_dir=str(tmp_path)).cached
    assert len(calls) == 4 and json.loads((tmp_path / throughput.CACHE_FILE).read_text())["entries"]


def test_a_studys_arms_are_timed_together(tmp_path, monkeypatch):
    """Steps of equal training time come from speeds of one moment: when a study's cached speeds span more than
    TOGETHER_S, its arms are measured again, together."""
    from dlstudy.studies.running.runner import load_study, plan_study

    monkeypatch.setenv("DLSTUDY_CACHE", str(tmp_path / "cache"))
    clock, calls = [1000.0], []

    def fake(cfg, image_shape, num_classes, available, device="cpu", target_s=None, images=None):
        calls.append(cfg.train.batch_size)
        return throughput.Throughput(0.01, 1.0, 1.0, 1, False, "", cpu_share=1.0, measured_s=clock[0])

    monkeypatch.setattr(throughput, "measure", fake)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    tasks = plan_study(load_study(path), tmp_path / "runs")  # arms sgd (batch 32) and adam (batch 64)

    def timed() -> dict:
        return budget.timed_together("budget-e2e", tasks, available=1, device="cpu", remeasure=False, memo={})

    assert not any(tp.cached for tp in timed().values()) and sorted(calls) == [32, 64]
    calls.clear()
    assert all(tp.cached for tp in timed().values()) and calls == []  # one moment: read back
    # an hour later another plan measures the sgd arm's configuration again (--remeasure, another study)
    clock[0] += 3600
    throughput.arm_throughput(tasks[0].cfg, (1, 8, 8), 10, 1, remeasure=True)
    calls.clear()
    clock[0] += 60
    together = timed()
    assert sorted(calls) == [32, 64]  # both, in this plan: not only the adam arm, whose speed was of the hour before
    assert {tp.measured_s for tp in together.values()} == {clock[0]}
    # a re-plan of the same run (the same memo: measured in this plan) reads them back
    memo = {"measured now": {tp.key for tp in together.values()}}
    calls.clear()
    budget.timed_together("budget-e2e", tasks, available=1, device="cpu", remeasure=False, memo=memo)
    assert calls == []
    clock[0] += budget.TOGETHER_S / 2  # within the window: read back
    calls.clear()
    assert all(tp.cached for tp in timed().values()) and calls == []


def test_a_cached_entry_measured_beside_another_process_is_measured_again(tmp_path, monkeypatch):
    shares = iter([0.5, 0.5, 0.97])
    calls = []

    def fake(cfg, image_shape, num_classes, available, device="cpu", target_s=None, images=None):
        calls.append(1)
        return throughput.Throughput(0.01 if len(calls) < 3 else 0.007, 1.0, 1.0, 1, False, "", cpu_share=next(shares))

    monkeypatch.setattr(throughput, "measure", fake)
    cfg = _mlp_cfg()
    busy = throughput.arm_throughput(cfg, (1, 8, 8), 10, 1, cache_dir=str(tmp_path))
    assert busy.busy and not busy.cached and len(calls) == 1
    entry = next(iter(json.loads((tmp_path / throughput.CACHE_FILE).read_text())["entries"].values()))
    assert entry["cpu_share"] == 0.5
    # measured now in this plan: read back as it is (one measurement per configuration and plan)
    now = {busy.key}
    assert throughput.arm_throughput(cfg, (1, 8, 8), 10, 1, cache_dir=str(tmp_path), measured_now=now).cached
    assert len(calls) == 1
    # a later plan measures it again; still busy: measured again by the plan after that, which finds it idle
    assert not throughput.arm_throughput(cfg, (1, 8, 8), 10, 1, cache_dir=str(tmp_path)).cached
    idle = throughput.arm_throughput(cfg, (1, 8, 8), 10, 1, cache_dir=str(tmp_path))
    assert (len(calls), idle.step_s, idle.busy) == (3, 0.007, False)
    assert throughput.arm_throughput(cfg, (1, 8, 8), 10, 1, cache_dir=str(tmp_path)).cached and len(calls) == 3


def test_a_measurement_sharing_its_core_with_a_busy_process_is_marked_busy():
    import subprocess
    import sys

    cfg = _mlp_cfg()
    alone = throughput.measure(cfg, (1, 8, 8), 10, available=1, target_s=0.3)
    assert alone.threads == 1 and 0 < alone.cpu_share <= 1.2
    # two busy processes pinned to the measurement's own core: the three share it
    core = sorted(os.sched_getaffinity(0))[0] if hasattr(os, "sched_getaffinity") else None
    if core is None:
        pytest.skip("no CPU affinity on this platform")
    before = os.sched_getaffinity(0)
    spin = f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    try:
        os.sched_setaffinity(0, {core})
        time.sleep(0.3)
        shared = throughput.measure(cfg, (1, 8, 8), 10, available=1, target_s=0.5)
    finally:
        os.sched_setaffinity(0, before)
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    # (the machine running the tests may be busy itself: the share is compared with the one measured alone)
    assert shared.busy and shared.cpu_share < 0.8 * alone.cpu_share


# ------------------------------------------------------------------------------------------------ plan, end to end


def test_plan_text_names_steps_speeds_and_the_estimate():
    plans = allocate([SectionInput("opt", 1.0, [_cost("sgd"), _cost("adam")], 5.0)], 600.0, spent_s=30.0)
    details = {"opt": {arm: {"steps": plans[0].steps[arm], "epochs": 5, "steps_per_epoch": 10, "runs": 1,
                             "train_img_s": 1234.0, "eval_img_s": 5678.0, "threads": 2, "cached": arm == "sgd",
                             "run_s": plans[0].per_run_s[arm]} for arm in ("sgd", "adam")}}
    text = format_budget(600.0, 30.0, plans, details)
    assert "time budget: 10.0 min (0.5 min already spent" in text
    assert f"sgd: {details['opt']['sgd']['steps']:,} steps" in text and "train 1,234 img/s, eval 5,678 img/s" in text
    assert "(measured now)" in text.split("adam:")[1]
    assert "[opt] ~" in text and "for a 10.0 min budget" in text
    assert "busy" not in text
    details["opt"]["adam"]["cpu_share"] = 0.5  # another process held half the cores while it was measured
    details["opt"]["sgd"]["cpu_share"] = 0.97
    text = format_budget(600.0, 30.0, plans, details)
    assert "warning: measured while another process held some of the cores (CPU share below 0.8) for adam:" in text


STUDY = {"name": "budget-e2e", "kind": "optimizers", "seeds": [0],
         "base": {"task": "train", "data": {"name": "digits"}, "model": {"name": "mlp"},
                  "train": {"epochs": 2, "schedule": "constant", "evaluate_before": False, "checkpoint": False,
                            "train_eval_subset": 200}},
         "arms": [{"name": "sgd", "set": {"optim": {"name": "sgd", "lr": 0.1}, "train.batch_size": 32}},
                  {"name": "adam", "set": {"optim": {"name": "adam", "lr": 0.001}, "train.batch_size": 64}}]}


def test_run_with_minutes_end_to_end_takes_the_planned_steps(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLSTUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(throughput, "TARGET_SECONDS", 0.2)  # a short measurement: the test's machine is shared
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    out = tmp_path / "runs"
    # the smallest budget this machine allows now (a busy shared machine plans slower), from the error it gives
    assert main(["run", str(path), "--out", str(out), "--minutes", "0.01", "--plan-only"]) == 2
    least = float(capsys.readouterr().err.split("must be at least ")[1].split(" ")[0])
    minutes = str(max(0.3, round(least + 0.15, 2)))
    assert main(["run", str(path), "--out", str(out), "--minutes", minutes]) == 0
    record = json.loads((out / "budget-e2e" / "budget.json").read_text())
    assert record["minutes"] == float(minutes) and record["real_s"] > 0 and record["machine"]["cpu"]
    for arm in ("sgd", "adam"):
        planned = record["arms"][arm]
        run = out / "budget-e2e" / arm / "seed-0"
        cfg = yaml.safe_load((run / "config.yaml").read_text())["train"]
        assert (cfg["epochs"], cfg["max_steps_per_epoch"], cfg["schedule"]) == \
            (planned["epochs"], planned["steps_per_epoch"], "linear")
        steps = (run / "steps.csv").read_text().strip().splitlines()[1:]
        assert len(steps) == planned["steps"] == planned["epochs"] * planned["steps_per_epoch"]
        assert planned["train_img_s"] > 0 and planned["eval_img_s"] > 0
    # the same seconds for both arms: the faster-per-image arm takes more images, not more time
    assert record["arms"]["sgd"]["run_s"] == pytest.approx(record["arms"]["adam"]["run_s"], rel=0.1)
    # the same command again: the folder keeps its plan (this planning was quicker: cached throughput and data),
    # so the finished runs stay finished
    done = {arm: (out / "budget-e2e" / arm / "seed-0" / "DONE").stat().st_mtime for arm in ("sgd", "adam")}
    assert main(["run", str(path), "--out", str(out), "--minutes", minutes]) == 0
    again = json.loads((out / "budget-e2e" / "budget.json").read_text())
    assert {a: v["steps"] for a, v in again["arms"].items()} == {a: v["steps"] for a, v in record["arms"].items()}
    assert done == {arm: (out / "budget-e2e" / arm / "seed-0" / "DONE").stat().st_mtime for arm in done}


def test_an_impossible_budget_is_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLSTUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(throughput, "TARGET_SECONDS", 0.1)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    out = tmp_path / "runs"
    assert main(["run", str(path), "--out", str(out), "--minutes", "0.01"]) == 2
    assert "too short for section 'budget-e2e'" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "--out", str(out), "--minutes", "-1"])
    assert exc.value.code == 2 and not out.exists()


def test_reproduce_with_minutes_records_the_budget_and_reports_it(tmp_path, fake_studies, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "out"
    only = ["--only", "svm", "losses"]
    assert main(["reproduce", "--quick", "--out", str(out), "--minutes", "5", "--plan-only", *only]) == 0
    assert "time budget: 5.0 min" in caplog.text and not out.exists()  # the plan only: nothing written
    assert main(["reproduce", "--quick", "--out", str(out), "--minutes", "5", "--budget", "tiny", *only]) == 2
    assert not out.exists()
    assert main(["reproduce", "--quick", "--out", str(out), "--minutes", "5", *only]) == 1  # fake losses arm a fails
    record = json.loads((out / "reproduce.json").read_text())
    assert record["minutes"] == 5.0
    assert 0 < record["planned_s"] <= 5.0 * 60 * 1.1  # the first plan's estimate of the whole run
    budget = json.loads((out / "svm-quick" / "budget.json").read_text())
    assert budget["minutes"] == 5.0 and budget["real_s"] >= 0 and budget["arms"] == {}  # no training steps here
    report = (out / "report.md").read_text()
    assert "## Budget" in report and "Expected vs real minutes per section" in report
    page = tmp_path / "results.md"
    assert main(["results", str(out), "--out", str(page)]) == 0
    text = page.read_text()
    assert "#### Budget" in text and "--minutes 5" in text


def test_budget_block_rows_from_budget_json(tmp_path):
    from dlstudy.report import render_markdown
    from dlstudy.studies.summary.budget_block import budget_blocks

    arms = {"adam": {"steps": 1200, "epochs": 4, "steps_per_epoch": 300, "runs": 3, "train_img_s": 2500.0,
                     "eval_img_s": 9000.0, "threads": 2, "run_s": 120.0}}
    for name, real, pace in (("s1", 390.0, 1.0), ("s2", None, 1.084)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "budget.json").write_text(json.dumps(
            {"minutes": 10, "section_s": 360.0, "expected_s": 366.0, "real_s": real, "plan_s": 30.0, "pace": pace,
             "machine": {"cpu": "Test CPU", "native_bf16": False, "torch": "x", "device": "cpu"}, "arms": arms}))
    text = render_markdown(budget_blocks(10, [("Q1", tmp_path / "s1"), ("Q2", tmp_path / "s2")]), tmp_path)
    assert "Test CPU; float32 (no native bf16)" in text
    assert "| Q1 | 6.0 | 6.1 | 6.5 | 1.00 |" in text and "| Q2 | 6.0 | 6.1 | — | 1.08 |" in text
    assert "| total | 10 | 12.7 | 7.0 |  |" in text  # planning 0.5 + 6.1 + 6.1; real: 0.5 + 6.5 (Q2 unfinished)
    assert "| Q1 | adam | 1,200 (4 x 300) | 3 | 2,500 | 9,000 | 2 | 2.0 |" in text
    assert budget_blocks(None, [("Q1", tmp_path / "s1")]) == []  # no --minutes: no block
    first = render_markdown(budget_blocks(10, [("Q1", tmp_path / "s1")], planned_s=480.0), tmp_path)
    assert "estimated 8.0 min for the whole run (the total row): +14.3% against the real 7.0 min" in first
    # the total's expectation is the first plan's (8.0), not the sum of the sections' last re-plans (6.6)
    assert "| total | 10 | 8.0 | 7.0 |  |" in first  # real: 30 s planning + 390 s
    assert "The first plan" not in text
    # in report order a later section comes first: the planning row is still the first plan's (the smallest plan_s:
    # a re-plan's plan_s is the time since the command started)
    (tmp_path / "s0").mkdir()
    (tmp_path / "s0" / "budget.json").write_text(json.dumps(
        {**json.loads((tmp_path / "s1" / "budget.json").read_text()), "plan_s": 420.0}))
    order = render_markdown(budget_blocks(10, [("Q0", tmp_path / "s0"), ("Q1", tmp_path / "s1")]), tmp_path)
    assert "| planning (data, measurements) |  | 0.5 | 0.5 |  |" in order


def test_the_svm_fit_estimate_grows_with_embeddings_dims_and_classes():
    from dlstudy.studies.running.budget import SVM_FIT_MIN_S, svm_fit_seconds

    assert svm_fit_seconds(1437, 128, 10) == SVM_FIT_MIN_S  # digits: the floor
    big = svm_fit_seconds(64_800, 128, 200)  # Tiny ImageNet embeddings: measured 48-80 s per C on 2 Zen 4 cores
    assert 30 < big < 120
    assert svm_fit_seconds(2 * 64_800, 128, 200) == pytest.approx(2 * big)


def _two_sections(tmp_path):
    """`reproduce`'s planned entries for two copies of STUDY (section, path, study, tasks)."""
    from dlstudy.studies.running.runner import load_study, plan_study

    planned = []
    for name in ("first", "second"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**STUDY, "name": name}))
        study = load_study(path)
        planned.append((None, path, study, plan_study(study, tmp_path / "out", source=str(path))))
    return planned


def test_a_replan_gives_the_sections_left_the_time_really_left(tmp_path, monkeypatch, caplog):
    """An earlier section that ran over its plan takes its overrun out of the later sections' steps (and one that
    finished early gives its time to them), so the whole ends at the budget; a budget already spent keeps the
    first plan's steps, with a warning."""

    from dlstudy.studies.running.budget import plan_budgets
    from dlstudy.studies.running.reproduce import _replan

    caplog.set_level("INFO")
    monkeypatch.setenv("DLSTUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(throughput, "TARGET_SECONDS", 0.2)
    planned, memo = _two_sections(tmp_path), {}
    now = time.time()
    first, _ = plan_budgets([(p[2], p[3]) for p in planned], 2.0, now, memo=memo)
    assert memo  # the data facts are kept for the re-plans
    on_plan = first["second"].record["section_s"]
    steps = {}
    # the first plan took its own planning (throughput measuring) off the budget before the sections' shares;
    # "on plan" is that plus the first section's estimate, "over" and "under" are relative to it
    on_plan_s = first["first"].record["plan_s"] + first["first"].record["expected_s"]
    for label, spent in (("on plan", on_plan_s), ("over", on_plan_s + 30.0), ("under", on_plan_s - 30.0)):
        caplog.clear()
        fresh = _replan(planned, 2.0, time.time() - spent, 1, memo, 1)
        assert set(fresh) == {"second"} and "re-planned the 1 section(s) left" in caplog.text
        steps[label] = fresh["second"].steps["sgd"]
        assert fresh["second"].record["section_s"] == pytest.approx(120.0 - spent, abs=2.0)
    assert steps["over"] < steps["on plan"] < steps["under"]
    assert first["second"].steps["sgd"] == pytest.approx(steps["on plan"], rel=0.05, abs=2)
    assert on_plan < 120.0
    with caplog.at_level("WARNING"):
        assert _replan(planned, 2.0, time.time() - 119.9, 1, memo, 1) is None
    assert "the 1 section(s) left keep the first plan's steps" in caplog.text


def test_each_section_after_the_first_runs_with_its_replanned_budget(tmp_path, monkeypatch):
    from dlstudy.studies.running import reproduce

    seen, asked = [], []
    monkeypatch.setattr(reproduce, "run_study", lambda path, out, layer, **kw: (
        seen.append((path.name, kw["budget"])) or (out / path.stem, [])))

    def replan(i, pace):
        asked.append((i, pace))
        return {p[2].name: dataclasses.replace(budgets[p[2].name], steps={"sgd": 100 * i}) for p in planned[i:]}

    planned = [(type("S", (), {"study": n, "title": n}), tmp_path / f"{n}.yaml", type("T", (), {"name": n}), [])
               for n in ("a", "b", "c")]
    from dlstudy.studies.running.budget import StudyBudget

    budgets = {n: StudyBudget({"sgd": 1}, {"sgd": 10}, "linear", {"remaining_s": 60.0}) for n in ("a", "b", "c")}
    estimates = [60.0, 60.0, 60.0]
    record = {"sections": []}
    assert reproduce._run_sections(planned, estimates, tmp_path, {}, 1, None, None, record, budgets, replan) == []
    # before each section but the first, at the pace the sections before went (instant here: the lowest pace)
    assert asked == [(1, budget.PACE_BOUNDS[0]), (2, budget.PACE_BOUNDS[0])]
    assert [(name, b.steps["sgd"]) for name, b in seen] == [("a.yaml", 1), ("b.yaml", 100), ("c.yaml", 200)]
    assert [s["study"] for s in record["sections"]] == ["a", "b", "c"]
