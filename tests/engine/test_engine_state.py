"""The train job's typed state and registry records: TrainState in checkpoints (weights-only, old dicts resume),
the objective records the engine reads instead of loss names, frozen BN set at construction, the thread rule, and
which checkpoints a finished run keeps."""

from __future__ import annotations

import pytest
import torch

from dlstudy.config import LossConfig, ModelConfig
from dlstudy.engine.checkpoint import load_checkpoint
from dlstudy.jobs.train import run_train_job
from dlstudy.engine.state import TrainState
from dlstudy.engine.threads import SMALL_STEP_FLOPS, choose_threads, forward_flops
from dlstudy.errors import ConfigError, WeightsError
from dlstudy.io import read_csv, read_json
from dlstudy.losses import OBJECTIVES, build_objective
from dlstudy.models import build_model
from dlstudy.runs import RunDir


def tiny_state_cfg(tiny_cfg, **train):
    """conftest's tiny_cfg at the size these tests use: an mlp, one epoch of 4 steps, no before/train-eval passes."""
    size = dict(model="mlp", max_train=160, max_eval=40, epochs=1, max_steps_per_epoch=4, train_eval_subset=0,
                evaluate_before=False)
    return tiny_cfg(**{**size, **train})


def test_train_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    state = TrainState()
    stats = {"step_losses": [2.0, 1.5], "step_times": [0.1, 0.3], "time_s": 0.4}
    state.add_epoch({"epoch": 1, "images_per_s": 80.0, "time_s": 0.4}, stats)
    state.add_epoch({"epoch": 2, "images_per_s": 40.0, "time_s": 0.4}, stats)
    state.before, state.best_val_acc, state.best_epoch = {"accuracy": 0.1}, 0.5, 2
    assert [s["global_step"] for s in state.steps] == [1, 2, 3, 4]
    assert [s["time_s"] for s in state.steps] == pytest.approx([0.1, 0.3, 0.5, 0.7])  # cumulative over epochs
    assert state.elapsed_s == pytest.approx(0.8) and state.images_per_s == pytest.approx(60.0)
    torch.save({"state": state.to_dict()}, tmp_path / "c.pt")
    again = TrainState.from_dict(torch.load(tmp_path / "c.pt", weights_only=True)["state"])
    assert again == state


def test_old_untyped_state_dicts_still_load_and_unknown_keys_are_refused():
    old = {"history": [], "steps": [], "before": None, "best_val_acc": -1.0, "best_epoch": 0, "elapsed_s": 0.0}
    assert TrainState.from_dict(old) == TrainState()
    with pytest.raises(WeightsError, match="state.*'surprise'"):
        TrainState.from_dict({**old, "surprise": 1})


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objective_records_say_which_heads_get_gradients(name):
    """trains_head / uses_embedding / pk_batches checked against autograd: the engine relies on them for the
    best-epoch rule, DDP's find_unused_parameters and the batch sampler."""
    spec = OBJECTIVES[name]
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp", embedding_dim=8), 4, 1, 6)
    objective = build_objective(LossConfig(name=name, triplet_mining="all"), 4, model.feature_dim)
    labels = torch.arange(4).repeat_interleave(3)  # P x K = 4 x 3: triplets can form
    objective(model(torch.randn(12, 1, 6, 6)), labels)["loss"].backward()

    def has_grad(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert has_grad(model.head) == spec.trains_head
    assert has_grad(model.embedding) == spec.uses_embedding
    assert objective.needs_pk_sampler == spec.pk_batches == ("triplet" in spec.components)


def test_frozen_bn_is_a_constructor_argument():
    model = build_model(ModelConfig(name="resnet18", small_input_stem=True), 3, 1, 8, frozen_bn=True).train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns) and model.head.training
    default = build_model(ModelConfig(name="resnet18", small_input_stem=True), 3, 1, 8).train()
    assert all(m.training for m in default.modules())


def test_thread_rule():
    mlp = build_model(ModelConfig(name="mlp"), 10, 1, 28)
    flops = forward_flops(mlp, (1, 28, 28), batch_size=1)
    assert flops == pytest.approx(2 * (784 * 256 + 256 * 256 + 256 * 10), rel=0.01)  # multiply-adds x 2
    assert choose_threads(None, "cpu", 2, flops)[0] == 1  # batch-1 MLP: one thread
    assert choose_threads(None, "cpu", 2, 2 * SMALL_STEP_FLOPS)[0] == 2  # conv-net work: every thread
    assert choose_threads(None, "cpu", 1, flops)[0] == 1
    assert choose_threads(3, "cpu", 2, flops) == (3, "train.num_threads")  # the knob wins
    assert choose_threads(None, "cuda:0", 2, None)[0] == 2


def test_finished_run_keeps_best_pt_and_records_its_threads(tmp_path, tiny_cfg):
    torch.set_num_threads(2)  # what torch's default is on a 2-core machine (conftest restores the count)
    run_dir = RunDir(tmp_path / "run")
    run_train_job(tiny_state_cfg(tiny_cfg, batch_size=1), run_dir)
    env = read_json(run_dir.file("env.json"))
    assert env["torch_threads"] == 1 and "small steps" in env["torch_threads_rule"]
    assert torch.get_num_threads() == 2  # given back after the run
    assert run_dir.is_done and (run_dir.path / "checkpoints" / "best.pt").is_file()
    assert not (run_dir.path / "checkpoints" / "last.pt").exists()  # removed after DONE (keep_last_checkpoint)
    with pytest.raises(ConfigError, match="keep_last_checkpoint"):
        run_train_job(tiny_state_cfg(tiny_cfg, batch_size=1), run_dir, resume=True)  # would silently restart from epoch 1
    assert run_dir.is_done  # refused before anything was touched


def test_a_checkpoint_from_before_typed_state_resumes(tmp_path, tiny_cfg):
    """last.pt as older versions wrote it (no rng_ranks) resumes; keep_last_checkpoint keeps it for extension."""
    torch.set_num_threads(1)
    run_dir = RunDir(tmp_path / "run")
    run_train_job(tiny_state_cfg(tiny_cfg, keep_last_checkpoint=True), run_dir)
    last = run_dir.path / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    assert TrainState.from_dict(ckpt["state"]).best_epoch == 1 and ckpt["rng_ranks"] is None
    del ckpt["rng_ranks"]
    torch.save(ckpt, last)
    metrics = run_train_job(tiny_state_cfg(tiny_cfg, keep_last_checkpoint=True, epochs=2), run_dir, resume=True)
    assert metrics["epochs"] == 2 and [r["epoch"] for r in read_csv(run_dir.file("history.csv"))] == ["1", "2"]
    assert last.is_file()
