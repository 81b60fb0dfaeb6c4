"""The optimizer study: seed aggregation, step-loss binning, time-to-target, the summary on fake run folders,
seed determinism of a tiny training, and the study files."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dlstudy.config import OptimConfig, StudyConfig, TrainConfig, build_run_config, dump_yaml, from_dict
from dlstudy.errors import ConfigError
from dlstudy.optim import build_optimizer, build_scheduler
from dlstudy.report.blocks import Figure, Table
from dlstudy.io import atomic_write_csv, atomic_write_json, atomic_write_text
from dlstudy.studies.kinds.optimizers import (aggregate_curves, bin_step_losses, config_differences,
                                             default_target, summarize, time_to_target, with_wall_clock)
from dlstudy.studies.summary.records import load_arm_run

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ aggregation


def test_aggregate_curves_mean_and_sample_std_by_hand():
    h1 = [{"epoch": 1, "val_loss": 1.0, "time_s": 2.0}, {"epoch": 2, "val_loss": 0.5, "time_s": 4.0}]
    h2 = [{"epoch": 1, "val_loss": 3.0, "time_s": 4.0}, {"epoch": 2, "val_loss": 0.7, "time_s": 8.0},
          {"epoch": 3, "val_loss": 0.1, "time_s": 9.0}]  # a longer seed is cut to the common length
    h3 = [{"epoch": 1, "val_loss": 2.0, "time_s": 3.0}, {"epoch": 2, "val_loss": 0.9, "time_s": 6.0}]
    x, mean, std = aggregate_curves([h1, h2, h3], "val_loss")
    np.testing.assert_allclose(x, [1, 2])
    np.testing.assert_allclose(mean, [2.0, 0.7])
    np.testing.assert_allclose(std, [statistics.stdev([1, 3, 2]), statistics.stdev([0.5, 0.7, 0.9])])
    x_time, _, _ = aggregate_curves([h1, h2, h3], "val_loss", x_key="time_s")
    np.testing.assert_allclose(x_time, [3.0, 6.0])


def test_aggregate_curves_missing_cells_single_seed_and_empty():
    h1 = [{"epoch": 1, "acc": "0.5"}, {"epoch": 2, "acc": None}]
    h2 = [{"epoch": 1, "acc": 0.7}, {"epoch": 2, "acc": 0.8}]
    _, mean, std = aggregate_curves([h1, h2], "acc")
    np.testing.assert_allclose(mean, [0.6, 0.8])
    np.testing.assert_allclose(std, [statistics.stdev([0.5, 0.7]), 0.0])
    _, mean, std = aggregate_curves([h2], "acc")
    np.testing.assert_allclose(std, [0.0, 0.0])
    x, mean, std = aggregate_curves([[], []], "acc")
    assert x.size == mean.size == std.size == 0
    _, mean, std = aggregate_curves([h1, h2], "missing")
    assert np.isnan(mean).all() and np.isnan(std).all()


def test_aggregate_curves_is_invariant_to_seed_order():
    rng = np.random.default_rng(0)
    hs = [[{"epoch": e, "v": float(rng.normal())} for e in range(5)] for _ in range(4)]
    a = aggregate_curves(hs, "v")
    b = aggregate_curves(hs[::-1], "v")
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v)
    np.testing.assert_allclose(a[2], np.std([[r["v"] for r in h] for h in hs], axis=0, ddof=1))


def test_bin_step_losses_by_hand():
    steps = [{"step": i + 1, "loss": float(i)} for i in range(100)]
    x, y = bin_step_losses(steps, epochs=2, bins_per_epoch=5)  # 10 bins of 10 steps
    np.testing.assert_allclose(x, np.arange(1, 11) / 10 * 2)
    np.testing.assert_allclose(y, [np.mean(np.arange(10 * b, 10 * b + 10)) for b in range(10)])
    x, y = bin_step_losses([{"loss": 1.0}, {"loss": 3.0}], epochs=1, bins_per_epoch=4, min_steps_per_bin=1)
    np.testing.assert_allclose(y, [1.0, 3.0])  # never more bins than steps, so never an empty bin
    np.testing.assert_allclose(x, [0.5, 1.0])
    x, y = bin_step_losses(steps, epochs=2, bins_per_epoch=50, min_steps_per_bin=20)  # 100 steps: 5 bins, not 100
    np.testing.assert_allclose(y, [np.mean(np.arange(20 * b, 20 * b + 20)) for b in range(5)])
    np.testing.assert_allclose(x, [0.4, 0.8, 1.2, 1.6, 2.0])
    x, y = bin_step_losses([], epochs=1)
    assert x.size == 0


def test_time_to_target_and_default_target(tmp_path):
    h = [{"epoch": 1, "val_acc": 0.5, "time_s": 10}, {"epoch": 2, "val_acc": 0.9, "time_s": 11},
         {"epoch": 3, "val_acc": 0.95, "time_s": 9}]  # time_s: that epoch's training seconds
    assert [r["wall_s"] for r in with_wall_clock(h)] == [10, 21, 30]
    assert time_to_target(h, 0.9) == 21
    assert time_to_target(h, 0.5) == 10
    assert time_to_target(h, 0.99) is None
    from dlstudy.studies.summary.records import ArmRun

    def run(arm, seed, accs):
        return ArmRun(arm, seed, tmp_path, history=[{"val_acc": a} for a in accs])

    groups = {"a": [run("a", 0, [0.5, 0.8]), run("a", 1, [0.6, 0.7])], "b": [run("b", 0, [0.9, 0.95])]}
    assert default_target(groups) == pytest.approx(0.75)


# ------------------------------------------------------------------------------------------------ summary on fake runs


def _fake_run(root: Path, arm: str, seed: int, optimizer: str, batch_size: int, lr: float, quality: float,
              epochs: int = 3, steps_per_epoch: int = 40) -> Path:
    path = root / arm / f"seed-{seed}"
    cfg = build_run_config({"seed": seed, "optim": {"name": optimizer, "lr": lr},
                            "train": {"batch_size": batch_size, "epochs": epochs}, "model": {"name": "mlp"}})
    atomic_write_text(path / "config.yaml", dump_yaml(cfg))
    rng = np.random.default_rng(seed)
    history = []  # the engine's history.csv columns; time_s is that epoch's training seconds
    for e in range(1, epochs + 1):
        acc = quality * (1 - 0.5 ** e) + 0.01 * rng.normal()
        history.append({"epoch": e, "train_loss": 1 / e, "train_acc": acc, "val_loss": 1.1 / e, "val_acc": acc,
                        "train_eval_loss": 0.9 / e, "train_eval_acc": acc + 0.02, "lr": lr,
                        "time_s": 2.0 * batch_size ** -0.5})
    atomic_write_csv(path / "history.csv", history)
    steps = [{"epoch": s // steps_per_epoch + 1, "step": s % steps_per_epoch + 1, "global_step": s + 1,
              "loss": 2.0 / (1 + s / 10) + 0.1 * rng.random(), "time_s": 0.01 * s}
             for s in range(epochs * steps_per_epoch)]
    atomic_write_csv(path / "steps.csv", steps)
    atomic_write_json(path / "metrics.json", {"accuracy": quality - 0.01 * seed, "after": {"accuracy": 0.0},
                                              "best_epoch": epochs - 1,
                                              "train_time_s": 2.0 * epochs * batch_size ** -0.5})
    atomic_write_text(path / "DONE", "x\n")
    return path


def _study(**reference) -> StudyConfig:
    return from_dict(StudyConfig, {"name": "opt", "kind": "optimizers", "seeds": [0, 1], "reference": reference})


def test_summary_writes_figures_table_and_rows(tmp_path):
    runs = []
    for arm, opt, bs, lr, q in [("vanilla-sgd", "sgd", 1, 0.01, 0.8), ("mb-adam", "adam", 64, 1e-3, 0.9)]:
        for seed in (0, 1):
            runs.append(load_arm_run(_fake_run(tmp_path, arm, seed, opt, bs, lr, q, steps_per_epoch=400 // bs + 3)))
    atomic_write_csv(tmp_path / "mb-adam" / "lr-search" / "lr_search.csv",
                     [{"lr": 1e-3, "val_accuracy": 0.9, "val_loss": 0.3, "diverged": False}])
    study = _study(arms={"vanilla-sgd": {"label": "vanilla sgd", "test_accuracy": 0.684, "train_accuracy": 0.953}})
    blocks, rows = summarize(tmp_path, study, runs)

    figures = [b for b in blocks if isinstance(b, Figure)]
    assert len(figures) == 4
    for fig in figures:
        png = tmp_path / fig.path
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert [r["arm"] for r in rows] == ["vanilla-sgd", "mb-adam"]
    assert len({tuple(r) for r in rows}) == 1  # same keys in every row (summary.csv)
    sgd = rows[0]
    assert sgd["optimizer"] == "sgd" and sgd["batch_size"] == 1 and sgd["seeds"] == 2
    assert sgd["test_accuracy_mean"] == pytest.approx(np.mean([0.8, 0.79]))
    assert sgd["test_accuracy_std"] == pytest.approx(statistics.stdev([0.8, 0.79]))
    assert sgd["test_accuracy"] == f"{np.mean([0.8, 0.79]):.3f} ± {statistics.stdev([0.8, 0.79]):.3f}"
    best_epoch_train = [r.history[-2]["train_eval_acc"] for r in runs[:2]]  # the best-val epoch's weights
    assert sgd["train_accuracy_mean"] == pytest.approx(np.mean(best_epoch_train))
    assert sgd["time_s_mean"] == pytest.approx(6.0)
    assert sgd["reference_test_accuracy"] == 0.684 and rows[1]["reference_test_accuracy"] is None
    assert sgd["label"] == "vanilla sgd"
    # default target = the lowest arm's mean best val accuracy, so every arm's mean reaches it
    assert sgd["target_accuracy"] == pytest.approx(default_target({"a": runs[:2], "b": runs[2:]}))

    tables = [b for b in blocks if isinstance(b, Table)]
    assert tables[0].columns[:5] == ["Optimizer", "batch size", "lr", "test_accuracy", "train_accuracy"]
    assert "reference test" in tables[0].columns and tables[0].rows[0][0] == "vanilla sgd"
    assert tables[1].columns[0] == "arm" and tables[1].rows[0][0] == "mb-adam"

    from dlstudy.report import render_html, render_markdown

    assert "vanilla sgd" in render_markdown(blocks, tmp_path)
    assert "data:image/png;base64" in render_html(blocks, tmp_path)


def test_summary_with_target_from_study_and_missing_steps(tmp_path):
    runs = []
    for seed in (0, 1, 2):
        path = _fake_run(tmp_path, "mb-sgd", seed, "sgd", 32, 0.1, 0.8)
        (path / "steps.csv").unlink()
        atomic_write_json(path / "metrics.json", {"accuracy": 0.8})  # no best_epoch / train_time_s
        runs.append(load_arm_run(path))
    blocks, rows = summarize(tmp_path, _study(target_accuracy=0.99), runs)
    assert rows[0]["target_accuracy"] == 0.99
    assert rows[0]["target_reached"] == "0/3" and "(0/3 seeds)" in rows[0]["time_to_target"]
    assert rows[0]["time_s_mean"] == pytest.approx(3 * 2.0 * 32 ** -0.5)  # the sum of per-epoch times
    assert rows[0]["train_accuracy_mean"] == pytest.approx(np.mean([r.history[-1]["train_eval_acc"] for r in runs]))
    assert len([b for b in blocks if isinstance(b, Figure)]) == 3  # no steps.csv: no step-loss figure
    assert summarize(tmp_path, _study(), [])[1] == []
    assert "differ only in optimizer" in blocks[1].text


def test_config_differences_flag_unequal_budgets(tmp_path):
    a = load_arm_run(_fake_run(tmp_path, "a", 0, "sgd", 1, 0.01, 0.8, epochs=3))
    b = load_arm_run(_fake_run(tmp_path, "b", 0, "adam", 64, 0.001, 0.9, epochs=3))
    c = load_arm_run(_fake_run(tmp_path, "c", 1, "adam", 64, 0.001, 0.9, epochs=4))
    assert config_differences({"a": [a], "b": [b]}) == []  # optimizer, lr, batch size and seed may differ
    assert config_differences({"a": [a], "c": [c]}) == ["train.epochs"]
    blocks, _ = summarize(tmp_path, _study(), [a, c])
    assert "WARNING" in blocks[1].text and "train.epochs" in blocks[1].text


# ------------------------------------------------------------------------------------------------ seeds


def _tiny_training(seed: int, name: str = "momentum", batch_size: int = 8) -> list[float]:
    """Per-step losses of a tiny MLP trained 2 epochs with a cosine schedule, everything seeded by `seed`."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 10, generator=gen)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = build_optimizer(model.parameters(), OptimConfig(name=name, lr=0.05))
    sched = build_scheduler(opt, TrainConfig(epochs=2, schedule="cosine", warmup_epochs=0.5), 64 // batch_size)
    losses = []
    for _ in range(2):
        order = torch.randperm(64, generator=gen)
        for idx in order.split(batch_size):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_same_seed_gives_identical_curves_on_cpu(name):
    a, b = _tiny_training(3, name), _tiny_training(3, name)
    assert a == b  # bit-identical, not approximately equal
    assert _tiny_training(4, name) != a


# ------------------------------------------------------------------------------------------------ study files


@pytest.mark.parametrize("file", ["optimizers.yaml", "optimizers-quick.yaml"])
def test_study_files_resolve_to_the_reference_four_arms(file):
    from dlstudy.config import load_yaml_mapping

    study = from_dict(StudyConfig, load_yaml_mapping(REPO / "studies" / file), "study")
    assert study.kind == "optimizers" and len(study.seeds) >= 2
    cfgs = {arm.name: build_run_config(study.base, arm.set) for arm in study.arms}
    pairs = [(c.optim.name, c.train.batch_size > 1) for c in cfgs.values()]
    assert pairs == [("sgd", False), ("sgd", True), ("momentum", True), ("adam", True)]
    epochs = {c.train.epochs for c in cfgs.values()}
    schedules = {(c.train.schedule, c.train.warmup_epochs) for c in cfgs.values()}
    assert len(epochs) == 1 and len(schedules) == 1  # the same budget and schedule for every arm
    assert {c.model.name for c in cfgs.values()} <= {"mlp", "smallcnn"}  # no BatchNorm at batch size 1
    assert set(study.reference["arms"]) == set(cfgs)
    grids = {len(c.optim.lr_grid or []) for c in cfgs.values()}
    assert len(grids) == 1  # equal tuning effort: the same number of learning rates per arm (or none)


# ------------------------------------------------------------------------------------------------ through the engine


def _engine_run(tmp_path: Path, name: str, **train) -> Path:
    from dlstudy.jobs import run_job
    from dlstudy.runs import RunDir

    cfg = build_run_config({"seed": 5, "device": "cpu", "data": {"name": "digits", "max_train": 160},
                            "model": {"name": "mlp"}, "optim": {"name": "momentum", "lr": 0.01},
                            "train": {"epochs": 2, "batch_size": 8, "evaluate_before": False, "checkpoint": False,
                                      "train_eval_subset": 50, **train}})
    run_job(cfg, RunDir(tmp_path / name))
    return tmp_path / name


def test_same_seed_gives_identical_curves_through_the_engine(tmp_path):
    from dlstudy.io import read_csv

    a, b = _engine_run(tmp_path, "a"), _engine_run(tmp_path, "b")
    curve_keys = ("train_loss", "train_acc", "val_loss", "val_acc", "train_eval_loss", "lr")
    hist_a, hist_b = read_csv(a / "history.csv"), read_csv(b / "history.csv")
    assert len(hist_a) == 2
    assert [[r[k] for k in curve_keys] for r in hist_a] == [[r[k] for k in curve_keys] for r in hist_b]
    assert [r["loss"] for r in read_csv(a / "steps.csv")] == [r["loss"] for r in read_csv(b / "steps.csv")]


def test_batchnorm_model_at_batch_one_is_refused_by_the_train_job(tmp_path):
    from dlstudy.jobs import run_job
    from dlstudy.models import MODELS
    from dlstudy.runs import RunDir

    bn_models = sorted(name for name, spec in MODELS.items() if spec.has_batchnorm)
    assert bn_models, "no BatchNorm model registered"
    cfg = build_run_config({"device": "cpu", "data": {"name": "digits", "max_train": 50},
                            "model": {"name": "resnet18" if "resnet18" in bn_models else bn_models[0]},
                            "optim": {"name": "sgd"},
                            "train": {"epochs": 1, "batch_size": 1, "evaluate_before": False}})
    with pytest.raises(ConfigError, match="batch_size=1.*frozen_bn"):
        run_job(cfg, RunDir(tmp_path / "bn"))


def test_quick_study_end_to_end(tmp_path):
    """The whole quick study through the runner (14 s on 2 idle cores): report and table. Not marked slow: CI skips
    nothing but tests whose data is absent."""
    from dlstudy.io import read_csv
    from dlstudy.studies.running.runner import run_study

    study_dir, results = run_study(REPO / "studies" / "optimizers-quick.yaml", tmp_path)
    assert results and all(r.ok for r in results)
    rows = read_csv(study_dir / "summary.csv")
    assert [r["arm"] for r in rows] == ["vanilla-sgd", "minibatch-sgd", "minibatch-sgd-momentum", "minibatch-adam"]
    assert all(0.5 < float(r["test_accuracy_mean"]) <= 1 for r in rows)
    for name in ("optim_loss_epochs", "optim_loss_time", "optim_accuracy", "optim_step_loss"):
        assert (study_dir / "figures" / f"{name}.png").is_file()
    assert "differ only in optimizer" in (study_dir / "report.md").read_text()


def test_protocol_is_read_from_the_folder_and_tabled_per_study(tmp_path):
    """Q3 under two protocols: a study whose arms searched lrs is "tuned", else "fixed lrs"; the protocol table has
    one column per study, the reference beside them, and the lr each arm's seeds trained with."""
    from dlstudy.studies.summary.protocols import block_label, protocol_table
    from dlstudy.studies.summary.records import protocol_of

    blocks = []
    for name, lr in (("tuned", 3e-3), ("defaults", 1e-3)):
        root = tmp_path / name
        runs = [load_arm_run(_fake_run(root, "minibatch-adam", seed, "adam", 32, lr, 0.9)) for seed in (0, 1)]
        if name == "tuned":
            atomic_write_json(root / "minibatch-adam" / "lr-search" / "chosen_lr.json",
                              {"lr": lr, "lr_grid": [1e-3, 3e-3, 1e-2], "seed": 0})
        blocks.append((block_label(root, {"minibatch-adam": runs}), {"minibatch-adam": runs}))
    assert protocol_of(tmp_path / "tuned", ["minibatch-adam"])[0] == "tuned (3 lrs/arm)"
    assert protocol_of(tmp_path / "defaults", ["minibatch-adam"])[0] == "fixed lrs"
    assert [label for label, _ in blocks] == ["digits · mlp · tuned (3 lrs/arm), 2 seeds",
                                              "digits · mlp · fixed lrs, 2 seeds"]
    table = protocol_table(blocks, {"minibatch-adam": {"label": "minibatch + adam", "test_accuracy": 0.885}})
    assert table.columns == ["arm", "measure", "reference"] + [label for label, _ in blocks]
    test = f"{np.mean([0.9, 0.89]):.3f} ± {statistics.stdev([0.9, 0.89]):.3f}"
    assert table.rows[0] == ["minibatch + adam", "test accuracy", 0.885, test, test]
    assert table.rows[1][:3] == ["minibatch + adam", "train accuracy", "—"]
    assert table.rows[2] == ["minibatch + adam", "lr", "—", "0.003", "0.001"]
