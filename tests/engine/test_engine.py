"""Training engine: the loops, freezing, NaN stop, and what a train run writes (digits, tiny models, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from dlstudy.config import LossConfig, ModelConfig
from dlstudy.engine import train_one_epoch
from dlstudy.engine.checkpoint import load_checkpoint
from dlstudy.engine.session import Session
from dlstudy.engine.distributed import DistInfo, global_index_batches, shard_batches, shard_range
from dlstudy.errors import TrainingDiverged
from dlstudy.losses import build_objective
from dlstudy.models import build_model
from dlstudy.runs import METRIC_KEYS, RunDir
from dlstudy.io import read_csv, read_json
from dlstudy.jobs.train import epoch_output, run_train_job


def test_small_model_overfits_a_tiny_batch():
    torch.manual_seed(0)
    images, labels = torch.randn(16, 1, 8, 8), torch.arange(16) % 4
    model = build_model(ModelConfig(name="smallcnn"), 4, 1, 8)
    objective = build_objective(LossConfig(), 4, model.feature_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    stats = train_one_epoch(model, objective, optimizer, [(images, labels)] * 60)
    assert len(stats["step_losses"]) == 60 and stats["n"] == 60 * 16
    assert stats["step_losses"][-1] < 0.05 < stats["step_losses"][0]
    model.eval()
    assert (model(images)["logits"].argmax(1) == labels).all()


def test_train_one_epoch_stops_on_nan_naming_epoch_and_step():
    model = build_model(ModelConfig(name="mlp"), 3, 1, 4)
    objective = build_objective(LossConfig(), 3, model.feature_dim)
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    bad = x.clone()
    bad[0, 0, 0, 0] = math.nan
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 7 step 3 \(loss nan\); lower optim.lr "):
        train_one_epoch(model, objective, optimizer, [(x, y), (x, y), (bad, y), (x, y)], epoch=7)


def test_ddp_batch_sharding_covers_each_global_batch_once():
    global_batches = list(global_index_batches(23, 8, seed=1, epoch=2, drop_last=True))
    assert len(global_batches) == 2 and all(len(b) == 8 for b in global_batches)
    ranks = [list(shard_batches(global_batches, DistInfo(r, 2))) for r in range(2)]
    for step in range(2):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(global_batches[step])
    assert global_batches == list(global_index_batches(23, 8, seed=1, epoch=2, drop_last=True))  # reproducible
    assert [shard_range(10, DistInfo(r, 3)) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]


def test_frozen_backbone_is_unchanged_then_trains_with_its_own_lr(tmp_path, tiny_cfg):
    cfg = tiny_cfg(freeze_backbone_epochs=1, backbone_lr_mult=0.1)
    cfg.model.name = "resnet18"  # BatchNorm: running statistics must stay fixed too while frozen
    cfg.model.small_input_stem = True
    session = Session(cfg, DistInfo(), "cpu")
    backbone0 = {k: v.clone() for k, v in session.model.backbone.state_dict().items()}
    head0 = session.model.head.weight.detach().clone()
    run_dir = RunDir(tmp_path / "run")
    session.run_epoch(1, epoch_output(run_dir))
    for k, v in session.model.backbone.state_dict().items():  # weights and BN buffers
        assert torch.equal(v, backbone0[k]), k
    assert not torch.equal(session.model.head.weight, head0)
    session.run_epoch(2, epoch_output(run_dir))
    assert not torch.equal(session.model.backbone.conv1.weight, backbone0["conv1.weight"])
    rows = read_csv(run_dir.file("history.csv"))
    assert [r["backbone_frozen"] for r in rows] == ["1", "0"]
    assert float(rows[1]["backbone_lr"]) == pytest.approx(0.1 * float(rows[1]["lr"]))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, tiny_cfg):
    session = Session(tiny_cfg(epochs=3), DistInfo(), "cpu")
    forward = session.objective.forward
    calls = {"n": 0}

    def poisoned(outputs, labels):  # NaN from the 3rd training step of epoch 2 on (6 steps per epoch)
        out = forward(outputs, labels)
        if session.objective.training:
            calls["n"] += 1
            if calls["n"] >= 9:
                out["loss"] = out["loss"] * math.nan
        return out

    monkeypatch.setattr(session.objective, "forward", poisoned)
    run_dir = RunDir(tmp_path / "run")
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 2 step 3 \(loss nan\); lower optim.lr "
                                               r"\(now 0.001\) or set train.grad_clip; .*last\.pt"):
        session.fit(epoch_output(run_dir))
    assert load_checkpoint(run_dir.path / "checkpoints" / "last.pt")["epoch"] == 1
    assert len(read_csv(run_dir.file("history.csv"))) == 1


def test_train_job_writes_before_after_history_steps_and_figures(tmp_path, tiny_cfg):
    cfg = tiny_cfg(epochs=2)
    run_dir = RunDir(tmp_path / "run")
    metrics = run_train_job(cfg, run_dir)
    assert run_dir.is_done
    saved = read_json(run_dir.file("metrics.json"))
    for block in ("before", "after"):
        assert set(METRIC_KEYS) <= set(saved[block])
    assert saved["accuracy"] == saved["after"]["accuracy"] == metrics["accuracy"]
    assert saved["before"]["accuracy"] < 0.35  # new random head: about chance on 10 classes
    history = read_csv(run_dir.file("history.csv"))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    steps = read_csv(run_dir.file("steps.csv"))
    assert len(steps) == 12 and [int(s["global_step"]) for s in steps] == list(range(1, 13))
    assert all(float(a["time_s"]) < float(b["time_s"]) for a, b in zip(steps, steps[1:]))
    for fig in ("confusion_before", "confusion_after", "loss_curves", "accuracy_curves", "roc_after"):
        assert (run_dir.figures / f"{fig}.png").is_file(), fig
    table = read_csv(run_dir.tables / "before_after.csv")
    assert table[0]["metric"] == "accuracy" and len(table) == 3 + 10
    assert saved["before"]["n_samples"] == saved["after"]["n_samples"] == 60
    # "after" is the best checkpoint evaluated on test: re-evaluating best.pt gives the same accuracy
    best = load_checkpoint(run_dir.path / "checkpoints" / "best.pt")
    session = Session(cfg, DistInfo(), "cpu")
    session.model.load_state_dict(best["model"])
    again, y_score, y_true = session.evaluate(session.data.test, objective=False)
    assert again["accuracy"] == saved["accuracy"] and y_score.shape == (len(y_true), 10)


def test_train_figures_are_redrawn_byte_for_byte_from_the_run_folder(tmp_path, tiny_cfg):
    """finish_run draws the figures from metrics.json / predictions.npz / history.csv; `dlstudy report` redraws
    the same PNG bytes from the files alone."""
    import shutil

    from dlstudy.cli import main

    run_dir = RunDir(tmp_path / "run")
    run_train_job(tiny_cfg(epochs=2), run_dir)
    drawn = {p.name: p.read_bytes() for p in run_dir.figures.glob("*.png")}
    assert set(drawn) == {f"{n}.png" for n in ("loss_curves", "accuracy_curves", "confusion_before",
                                               "confusion_after", "roc_after")}
    copy = tmp_path / "copy"
    shutil.copytree(run_dir.path, copy)
    shutil.rmtree(copy / "figures")
    assert main(["report", str(copy)]) == 0
    assert {p.name: p.read_bytes() for p in (copy / "figures").glob("*.png")} == drawn


def test_grad_clip_bounds_the_update_norm():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp"), 3, 1, 4)
    objective = build_objective(LossConfig(), 3, model.feature_dim)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # plain SGD at lr 1: update = -clipped gradient
    x, y = torch.randn(8, 1, 4, 4) * 10, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    train_one_epoch(model, objective, optimizer, [(x, y)], grad_clip=0.01)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm() == pytest.approx(0.01, rel=1e-3)  # the raw gradient norm is far above 0.01


def test_a_from_scratch_airbench94_whitens_its_stem_on_the_training_split_and_keeps_it(tmp_path, tiny_cfg):
    from dlstudy.data import to_float
    from dlstudy.models import build_model

    cfg = tiny_cfg(model="airbench94", epochs=1)
    session = Session(cfg, DistInfo(), "cpu")
    stem = session.model.backbone.stem[0].weight.clone()
    oracle = build_model(cfg.model, session.data.num_classes, 1, 8).backbone
    oracle.init_from_data(to_float(session.data.train.images, session.data.mean, session.data.std))
    torch.testing.assert_close(stem, oracle.stem[0].weight)  # all 240 training images (fewer than INIT_IMAGES)
    session.run_epoch(1, epoch_output(RunDir(tmp_path / "run")))
    assert torch.equal(session.model.backbone.stem[0].weight, stem)  # fixed filters: training leaves them
    # weights from elsewhere (a run folder, a file) are kept as loaded: nothing is recomputed
    cfg.model.weights = str(tmp_path / "run")
    from dlstudy.engine.build import init_from_training_images

    before = session.model.backbone.stem[0].weight.clone()
    session.model.backbone.stem[0].weight.zero_()
    init_from_training_images(session.model, session.data, cfg)
    assert not session.model.backbone.stem[0].weight.any() and before.any()
