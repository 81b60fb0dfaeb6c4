"""Optimizer registry, schedules (against torch's own schedulers and hand formulas), BN guard."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dlstudy.config import OptimConfig, TrainConfig
from dlstudy.errors import ConfigError
from dlstudy.models.batchnorm import check_batchnorm_batch_size, freeze_batchnorm
from dlstudy.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler, schedule_factor


def _tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> float:
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1])
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


# ------------------------------------------------------------------------------------------------ registry


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_builds_and_takes_a_step(name):
    spec = OPTIMIZERS[name]
    model = _tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(model.parameters(), OptimConfig(name=name, lr=spec.default_lr))
    assert isinstance(opt, spec.cls)
    assert opt.param_groups[0]["lr"] == spec.default_lr
    for key, value in spec.defaults.items():
        assert opt.param_groups[0][key] == value
    _step(model, opt)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert spec.name == name and spec.description and "lr" in spec.tunable


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_lowers_the_loss_on_a_fixed_batch(name):
    model = _tiny_model()
    opt = build_optimizer(model.parameters(), OptimConfig(name=name, lr=OPTIMIZERS[name].default_lr))
    losses = [_step(model, opt) for _ in range(30)]
    assert losses[-1] < losses[0]


def test_registry_entries_match_their_names():
    assert OPTIMIZERS["sgd"].defaults["momentum"] == 0.0
    assert OPTIMIZERS["momentum"].defaults == {"momentum": 0.9, "nesterov": False}
    assert OPTIMIZERS["nesterov"].defaults["nesterov"] is True
    assert OPTIMIZERS["adamw"].cls is torch.optim.AdamW


def test_sgd_step_is_w_minus_lr_grad():
    model = _tiny_model()
    opt = build_optimizer(model.parameters(), OptimConfig(name="sgd", lr=0.1))
    x = torch.randn(5, 4)
    loss = model(x).pow(2).mean()
    loss.backward()
    expected = [p.detach() - 0.1 * p.grad for p in model.parameters()]
    opt.step()
    for e, p in zip(expected, model.parameters()):
        torch.testing.assert_close(p.detach(), e)


def test_unknown_optimizer_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown optimizer 'lbfgs'.*adam"):
        build_optimizer(_tiny_model().parameters(), OptimConfig(name="lbfgs"))


def test_none_fields_take_registry_defaults_and_set_fields_override():
    params = list(_tiny_model().parameters())
    opt = build_optimizer(params, OptimConfig(name="momentum", lr=0.05, momentum=None))
    assert opt.param_groups[0]["momentum"] == 0.9
    opt = build_optimizer(params, OptimConfig(name="momentum", lr=0.05, momentum=0.5))
    assert opt.param_groups[0]["momentum"] == 0.5
    opt = build_optimizer(params, OptimConfig(name="adam", betas=[0.8, 0.99], eps=1e-6, weight_decay=0.01))
    assert opt.param_groups[0]["betas"] == (0.8, 0.99) and opt.param_groups[0]["eps"] == 1e-6
    assert opt.param_groups[0]["weight_decay"] == 0.01


@pytest.mark.parametrize("cfg, match", [
    (OptimConfig(name="sgd", momentum=0.9), "does not apply to optimizer 'sgd'.*momentum"),
    (OptimConfig(name="momentum", betas=[0.9, 0.99]), "optim.betas"),
    (OptimConfig(name="adam", betas=[0.9]), "two numbers"),
    (OptimConfig(name="adam", lr=0.0), "optim.lr"),
    (OptimConfig(name="adam", lr=float("nan")), "optim.lr"),
    (OptimConfig(name="adam", weight_decay=-1.0), "weight_decay"),
])
def test_bad_optim_configs_are_config_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_optimizer(_tiny_model().parameters(), cfg)


def test_param_groups_with_lr_mult_and_empty_params():
    model = _tiny_model()
    groups = [{"params": model[0].parameters(), "lr_mult": 0.1}, {"params": model[2].parameters()}]
    opt = build_optimizer(groups, OptimConfig(name="sgd", lr=0.5))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.5])
    assert [g["lr_mult"] for g in opt.param_groups] == [0.1, 1.0]
    with pytest.raises(ConfigError, match="lr_mult"):
        build_optimizer([{"params": model[0].parameters(), "lr_mult": -1}], OptimConfig(name="sgd"))
    with pytest.raises(ConfigError, match="no parameters"):
        build_optimizer([], OptimConfig(name="sgd"))


# ------------------------------------------------------------------------------------------------ schedules


def _lrs(train_cfg: TrainConfig, steps_per_epoch: int, lr: float = 0.1, lr_mult: float = 1.0) -> list[float]:
    """lr used by each optimizer step of a whole run."""
    model = _tiny_model()
    opt = build_optimizer([{"params": model.parameters(), "lr_mult": lr_mult}], OptimConfig(name="sgd", lr=lr))
    sched = build_scheduler(opt, train_cfg, steps_per_epoch)
    out = []
    for _ in range(train_cfg.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant_with_linear_warmup_by_hand():
    lrs = _lrs(TrainConfig(epochs=3, schedule="constant", warmup_epochs=0.5), steps_per_epoch=4)
    assert lrs == pytest.approx([0.05, 0.1] + [0.1] * 10)


def test_step_schedule_by_hand_and_against_torch_steplr():
    cfg = TrainConfig(epochs=5, schedule="step", step_size=2, gamma=0.5)
    lrs = _lrs(cfg, steps_per_epoch=3)
    assert lrs == pytest.approx([0.1 * 0.5 ** (s // 6) for s in range(15)])
    opt = torch.optim.SGD(_tiny_model().parameters(), lr=0.1)
    ref = torch.optim.lr_scheduler.StepLR(opt, step_size=6, gamma=0.5)
    expected = []
    for _ in range(15):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert lrs == pytest.approx(expected)


def test_cosine_by_hand_with_warmup_and_against_torch():
    lrs = _lrs(TrainConfig(epochs=4, schedule="cosine", warmup_epochs=1), steps_per_epoch=5)
    assert lrs[:5] == pytest.approx([0.1 * (s + 1) / 5 for s in range(5)])
    assert lrs[5:] == pytest.approx([0.05 * (1 + math.cos(math.pi * u / 15)) for u in range(15)])
    plain = _lrs(TrainConfig(epochs=4, schedule="cosine"), steps_per_epoch=5)
    opt = torch.optim.SGD(_tiny_model().parameters(), lr=0.1)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    expected = []
    for _ in range(20):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert plain == pytest.approx(expected)


@pytest.mark.parametrize("epochs, spe", [(3, 7), (2, 1), (10, 3)])
def test_onecycle_matches_torch_onecycle_without_momentum_cycling(epochs, spe):
    lrs = _lrs(TrainConfig(epochs=epochs, schedule="onecycle"), steps_per_epoch=spe)
    opt = torch.optim.SGD(_tiny_model().parameters(), lr=0.1)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=epochs * spe, cycle_momentum=False)
    expected = []
    for _ in range(epochs * spe):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert lrs == pytest.approx(expected)
    if epochs * spe >= 10:  # the peak step is fractional (30% of the steps), so lr gets near, not to, max
        assert 0.09 < max(lrs) <= 0.1 + 1e-12


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_group_ratio_is_kept(schedule):
    cfg = TrainConfig(epochs=2, schedule=schedule, step_size=1)
    full, scaled = _lrs(cfg, 4), _lrs(cfg, 4, lr_mult=0.1)
    assert scaled == pytest.approx([0.1 * v for v in full])


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_scheduler_resume_from_state_dict_is_exact(schedule):
    cfg = TrainConfig(epochs=3, schedule=schedule, step_size=1, warmup_epochs=0 if schedule == "onecycle" else 1)
    uninterrupted = _lrs(cfg, 5)
    model = _tiny_model()
    opt = build_optimizer(model.parameters(), OptimConfig(name="momentum", lr=0.1))
    sched = build_scheduler(opt, cfg, 5)
    seen = []
    for _ in range(7):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ckpt = {"opt": opt.state_dict(), "sched": sched.state_dict()}
    opt2 = build_optimizer(model.parameters(), OptimConfig(name="momentum", lr=0.1))
    opt2.load_state_dict(ckpt["opt"])
    sched2 = build_scheduler(opt2, cfg, 5)
    sched2.load_state_dict(ckpt["sched"])
    for _ in range(8):
        seen.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert seen == pytest.approx(uninterrupted)


@pytest.mark.parametrize("cfg, spe, match", [
    (TrainConfig(schedule="exponential"), 3, "unknown schedule 'exponential'"),
    (TrainConfig(schedule="onecycle", warmup_epochs=1), 3, "own warm-up"),
    (TrainConfig(schedule="cosine", epochs=2, warmup_epochs=2), 3, "no steps"),
    (TrainConfig(schedule="step", step_size=0), 3, "step_size"),
    (TrainConfig(), 0, "steps_per_epoch"),
])
def test_bad_schedules_are_config_errors(cfg, spe, match):
    opt = build_optimizer(_tiny_model().parameters(), OptimConfig(name="sgd"))
    with pytest.raises(ConfigError, match=match):
        build_scheduler(opt, cfg, spe)


def test_schedule_factor_is_pure_and_bounded():
    for schedule in SCHEDULES:
        values = [schedule_factor(s, schedule=schedule, total_steps=50, decay_steps=10) for s in range(50)]
        assert all(0 <= v <= 1 + 1e-12 for v in values)


# ------------------------------------------------------------------------------------------------ BatchNorm guard


def _bn_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def test_batchnorm_at_batch_one_is_refused():
    with pytest.raises(ConfigError, match=r"batch_size=1.*BatchNorm.*frozen_bn"):
        check_batchnorm_batch_size(_bn_model(), 1, frozen_bn=False)
    check_batchnorm_batch_size(_bn_model(), 2, frozen_bn=False)  # mini-batches are fine
    check_batchnorm_batch_size(_tiny_model(), 1, frozen_bn=False)  # no BN: fine


def test_frozen_bn_keeps_running_stats_and_trains_affine():
    model = _bn_model()
    model.train()
    check_batchnorm_batch_size(model, 1, frozen_bn=True)
    bn = model[1]
    assert not bn.training and model[0].training
    mean_before, weight_before = bn.running_mean.clone(), bn.weight.detach().clone()
    opt = build_optimizer(model.parameters(), OptimConfig(name="sgd", lr=0.1))
    loss = nn.functional.cross_entropy(model(torch.randn(1, 1, 6, 6) * 3 + 2), torch.tensor([1]))
    loss.backward()
    opt.step()
    assert torch.equal(bn.running_mean, mean_before)
    assert not torch.equal(bn.weight.detach(), weight_before)
    model.train()  # train() re-enables BN; the engine must call freeze_batchnorm again
    assert bn.training
    assert freeze_batchnorm(model) == 1 and not bn.training


def test_resume_with_more_epochs_stretches_the_schedule_instead_of_keeping_the_old_one():
    from dlstudy.config import OptimConfig, TrainConfig
    from dlstudy.optim import build_optimizer, build_scheduler

    def make(epochs):
        opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimConfig(name="sgd", lr=0.1))
        return opt, build_scheduler(opt, TrainConfig(epochs=epochs, schedule="cosine"), steps_per_epoch=5)

    opt, sched = make(2)
    for _ in range(5):
        opt.step()
        sched.step()
    state = sched.state_dict()
    same_opt, same = make(2)
    same.load_state_dict(state)
    assert same_opt.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])  # unchanged: exact resume
    longer_opt, longer = make(4)
    longer.load_state_dict(state)
    assert longer.total_steps == 20 and longer.last_epoch == 5
    assert longer_opt.param_groups[0]["lr"] == pytest.approx(0.1 * longer.factor(5))
    for _ in range(14):
        longer.step()
    assert longer_opt.param_groups[0]["lr"] > 0  # the extra epochs still train
