"""Optimizer registry, per-step learning-rate schedules, the BatchNorm/batch-1 guard and the equal-effort LR search.

    OPTIMIZERS                       name -> OptimizerSpec (torch class, default and tunable hyperparameters)
    build_optimizer(params, cfg)     OptimConfig -> torch.optim.Optimizer (per-group "lr_mult" for discriminative LR)
    build_scheduler(opt, train, n)   TrainConfig -> StepSchedule, stepped once per optimizer step, checkpointable
    check_batchnorm_batch_size(...)  batch size 1 + BatchNorm is an error unless train.frozen_bn
    freeze_batchnorm(model)          BN layers to eval mode (Classifier.train() keeps them so when frozen_bn)
    select_learning_rate(cfg, grid, run_fn)  the same budget per learning rate, chosen on val accuracy

Registry entries are small records, not subclasses: every optimizer is a stock `torch.optim` class with fixed
defaults, so "momentum" and "nesterov" are `torch.optim.SGD` with different constants. "Vanilla SGD" in the
optimizer study is the `sgd` entry at `train.batch_size: 1`; the batch size is an arm setting, not an optimizer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from dlstudy.config import OptimConfig, RunConfig, TrainConfig
from dlstudy.errors import ConfigError, TrainingDiverged

# OptimConfig fields that map to optimizer keyword arguments of the same name (lr and weight_decay always apply).
_OPTIONAL_FIELDS = ("momentum", "betas", "eps")


@dataclass(frozen=True)
class OptimizerSpec:
    """One registered optimizer: a torch class plus the constants that make it what its name says."""

    name: str
    cls: type[torch.optim.Optimizer]
    defaults: Mapping[str, Any]  # keyword arguments given to `cls` unless an OptimConfig field overrides them
    tunable: tuple[str, ...]  # OptimConfig fields that may be set for this optimizer
    default_lr: float  # a sensible starting learning rate (centre of a log grid), informational
    description: str


def _spec(name, cls, defaults, tunable, default_lr, description) -> OptimizerSpec:
    return OptimizerSpec(name, cls, MappingProxyType(dict(defaults)), tuple(tunable), default_lr, description)


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": _spec("sgd", torch.optim.SGD, {"momentum": 0.0}, ("lr", "weight_decay"), 0.01,
                 "plain SGD, w -= lr * g; 'vanilla SGD' is this at batch size 1"),
    # 0.9: the usual heavy-ball constant (Sutskever et al. 2013); effective step ~ lr / (1 - 0.9) = 10 lr.
    "momentum": _spec("momentum", torch.optim.SGD, {"momentum": 0.9, "nesterov": False},
                      ("lr", "weight_decay", "momentum"), 0.01, "SGD with heavy-ball momentum 0.9"),
    "nesterov": _spec("nesterov", torch.optim.SGD, {"momentum": 0.9, "nesterov": True},
                      ("lr", "weight_decay", "momentum"), 0.01, "SGD with Nesterov momentum 0.9"),
    # betas/eps: Kingma & Ba 2015 defaults, which torch also uses.
    "adam": _spec("adam", torch.optim.Adam, {"betas": (0.9, 0.999), "eps": 1e-8},
                  ("lr", "weight_decay", "betas", "eps"), 1e-3, "Adam; weight_decay is an L2 term in the gradient"),
    "adamw": _spec("adamw", torch.optim.AdamW, {"betas": (0.9, 0.999), "eps": 1e-8},
                   ("lr", "weight_decay", "betas", "eps"), 1e-3, "Adam with decoupled weight decay (Loshchilov & "
                   "Hutter 2019); set optim.weight_decay (e.g. 0.01), the config default is 0"),
    # alpha 0.99 is torch's default smoothing of the squared-gradient average (Hinton's lecture used 0.9).
    "rmsprop": _spec("rmsprop", torch.optim.RMSprop, {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0},
                     ("lr", "weight_decay", "momentum", "eps"), 1e-3, "RMSprop, alpha 0.99"),
}


def get_optimizer_spec(name: str) -> OptimizerSpec:
    """The registry entry for `name`; an unknown name raises ConfigError listing the registered ones."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optim.name: unknown optimizer {name!r}; registered optimizers are {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name]


def optimizer_kwargs(cfg: OptimConfig) -> dict[str, Any]:
    """Keyword arguments for the torch class: registry defaults, overridden by the non-None OptimConfig fields."""
    spec = get_optimizer_spec(cfg.name)
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ConfigError(f"optim.lr: expected a positive finite learning rate, got {cfg.lr!r}")
    if cfg.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay: expected >= 0, got {cfg.weight_decay!r}")
    kwargs = dict(spec.defaults, lr=cfg.lr, weight_decay=cfg.weight_decay)
    for field_name in _OPTIONAL_FIELDS:
        value = getattr(cfg, field_name)
        if value is None:
            continue
        if field_name not in spec.tunable:
            raise ConfigError(f"optim.{field_name}={value!r} does not apply to optimizer {cfg.name!r} "
                              f"(its settable fields are {list(spec.tunable)}); leave it null"
                              + (" or use optim.name=momentum" if cfg.name == "sgd" else ""))
        kwargs[field_name] = tuple(value) if field_name == "betas" else value
    if "betas" in kwargs and len(kwargs["betas"]) != 2:
        raise ConfigError(f"optim.betas: expected two numbers [beta1, beta2], got {list(kwargs['betas'])}")
    return kwargs


def build_optimizer(param_groups: Iterable, cfg: OptimConfig) -> torch.optim.Optimizer:
    """A torch optimizer for `param_groups` configured by `cfg`.

    `param_groups` is either an iterable of parameters or a list of dicts {"params": [...], "lr_mult": 0.1, ...};
    a group's lr is cfg.lr * lr_mult (default 1), and "lr_mult" stays in the group so later code can read it.
    Schedules scale every group's lr by the same factor, so the ratios between groups are kept.
    """
    kwargs = optimizer_kwargs(cfg)
    groups = list(param_groups)
    if groups and isinstance(groups[0], dict):
        resolved = []
        for i, group in enumerate(groups):
            group = dict(group)
            mult = group.setdefault("lr_mult", 1.0)
            if not (isinstance(mult, (int, float)) and mult >= 0):
                raise ConfigError(f"param group {i}: lr_mult must be a number >= 0, got {mult!r}")
            group["lr"] = cfg.lr * mult
            resolved.append(group)
        groups = resolved
    if not groups:
        raise ConfigError(f"optimizer {cfg.name!r}: no parameters to optimise (empty parameter list)")
    return get_optimizer_spec(cfg.name).cls(groups, **kwargs)


# ------------------------------------------------------------------------------------------------ schedules

SCHEDULES = ("constant", "step", "cosine", "onecycle")
# One-cycle constants of Smith & Topin 2019 as torch.optim.lr_scheduler.OneCycleLR uses them: start at lr / 25,
# peak at lr after 30% of the steps, end at lr / 25 / 1e4; both phases cosine.
ONECYCLE_PCT_START = 0.3
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4


def _cos_interp(start: float, end: float, frac: float) -> float:
    """Cosine interpolation from `start` (frac 0) to `end` (frac 1)."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))


def schedule_factor(step: int, *, schedule: str, total_steps: int, warmup_steps: int = 0,
                    decay_steps: int = 1, gamma: float = 0.1) -> float:
    """The lr multiplier used for optimizer step `step` (0-based): a pure function, the schedule's definition.

    constant: 1; step: gamma ** (step // decay_steps) (decay_steps = step_size epochs, counted from step 0);
    cosine: 0.5 (1 + cos(pi u / (total - warmup))) with u = step - warmup, ending at 0;
    onecycle: as torch's OneCycleLR without momentum cycling.
    Warm-up (constant, step, cosine): factor (step + 1) / warmup_steps for the first warmup_steps steps, so the
    first step uses lr / warmup_steps and step warmup_steps - 1 the full lr.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return gamma ** (step // decay_steps)
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        return _cos_interp(1.0, 0.0, (step - warmup_steps) / span)
    if schedule == "onecycle":
        peak = float(ONECYCLE_PCT_START * total_steps) - 1  # the step at which lr == max lr (torch's phase end)
        start, end = 1.0 / ONECYCLE_DIV, 1.0 / ONECYCLE_DIV / ONECYCLE_FINAL_DIV
        if step <= peak:
            return _cos_interp(start, 1.0, step / peak if peak > 0 else 1.0)
        return _cos_interp(1.0, end, (step - peak) / max(total_steps - 1 - peak, 1e-12))
    raise ConfigError(f"train.schedule: unknown schedule {schedule!r}; valid schedules are {list(SCHEDULES)}")


class StepSchedule(LRScheduler):
    """Per-step LR schedule: group lr = group's initial lr * schedule_factor(step).

    Call `scheduler.step()` after every `optimizer.step()`. `state_dict()` holds the step counter and every
    constant, so a scheduler rebuilt from the same config and loaded from a checkpoint continues exactly.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, schedule: str, total_steps: int, warmup_steps: int = 0,
                 decay_steps: int = 1, gamma: float = 0.1, last_epoch: int = -1):
        self.schedule = schedule
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        return schedule_factor(step, schedule=self.schedule, total_steps=self.total_steps,
                               warmup_steps=self.warmup_steps, decay_steps=self.decay_steps, gamma=self.gamma)

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)  # last_epoch counts optimizer steps here, not epochs
        return [base_lr * f for base_lr in self.base_lrs]

    def step(self, epoch: None = None) -> None:
        """Advance one optimizer step. Lean on purpose: batch-1 SGD calls it 60,000 times an MNIST epoch, and
        LRScheduler.step's bookkeeping (deprecation and call-order checks) costs about as much as a tiny model's step."""
        if epoch is not None:
            raise TypeError("StepSchedule.step() takes no epoch: it counts optimizer steps")
        self._step_count = getattr(self, "_step_count", 0) + 1
        self.last_epoch += 1
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step counter and put the saved lrs back into the optimizer's groups.

        Building a scheduler applies factor(0) to the groups, so without this a resume that loads the optimizer
        state *before* building the scheduler would run one step at the wrong lr.
        """
        # The schedule's shape comes from the config it was built with, not the checkpoint: a resumed run with
        # more epochs must stretch its cosine, not run the extra epochs at the old schedule's end (lr 0).
        shape = {k: getattr(self, k) for k in ("schedule", "total_steps", "warmup_steps", "decay_steps", "gamma")}
        super().load_state_dict(state_dict)
        self.__dict__.update(shape)
        self._last_lr = self.get_lr()  # equals the saved lrs when the schedule is unchanged
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg: TrainConfig, steps_per_epoch: int) -> StepSchedule:
    """The schedule of `train_cfg` (schedule, warmup_epochs, step_size, gamma, epochs) stepped once per batch."""
    if train_cfg.schedule not in SCHEDULES:
        raise ConfigError(f"train.schedule: unknown schedule {train_cfg.schedule!r}; valid schedules are "
                          f"{list(SCHEDULES)}")
    if steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch must be >= 1, got {steps_per_epoch} (empty training split?)")
    if train_cfg.warmup_epochs < 0:
        raise ConfigError(f"train.warmup_epochs: expected >= 0, got {train_cfg.warmup_epochs}")
    if train_cfg.schedule == "step" and train_cfg.step_size < 1:
        raise ConfigError(f"train.step_size: expected >= 1 epoch, got {train_cfg.step_size}")
    total = max(int(train_cfg.epochs) * steps_per_epoch, 1)
    warmup = int(round(train_cfg.warmup_epochs * steps_per_epoch))
    if train_cfg.schedule == "onecycle" and warmup > 0:
        raise ConfigError("train.warmup_epochs: onecycle has its own warm-up (the first 30% of steps); "
                          "set warmup_epochs: 0 with schedule: onecycle")
    if warmup >= total and train_cfg.schedule == "cosine":
        raise ConfigError(f"train.warmup_epochs={train_cfg.warmup_epochs} leaves no steps for the cosine decay "
                          f"(epochs={train_cfg.epochs})")
    return StepSchedule(optimizer, schedule=train_cfg.schedule, total_steps=total, warmup_steps=warmup,
                        decay_steps=train_cfg.step_size * steps_per_epoch, gamma=train_cfg.gamma)


# ------------------------------------------------------------------------------------------------ BatchNorm guard


def batchnorm_layers(model: nn.Module) -> list[str]:
    """Names of the BatchNorm modules (1d/2d/3d, SyncBatchNorm) in `model`."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm layer in eval mode: running statistics fixed, affine weight/bias still trained.

    model.train() switches them back: a `Classifier` whose `frozen_bn` attribute is set (the train job sets it from
    train.frozen_bn) re-freezes them in its own train(); any other model needs this after every model.train().
    Returns the count.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            count += 1
    return count


def check_batchnorm_batch_size(model: nn.Module, batch_size: int, frozen_bn: bool) -> None:
    """Refuse BatchNorm training at batch size 1 (one-sample batch statistics are degenerate) unless frozen_bn.

    With frozen_bn the BN layers are frozen here (see freeze_batchnorm) at any batch size.
    """
    names = batchnorm_layers(model)
    if not names:
        return
    if frozen_bn:
        freeze_batchnorm(model)
        return
    if batch_size == 1:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ConfigError(f"train.batch_size=1 with a model containing BatchNorm ({shown}): the batch statistics "
                          "of one sample are degenerate. Use a model without BatchNorm (model.name: mlp, or "
                          "smallcnn with GroupNorm) or set train.frozen_bn: true to keep BN statistics fixed")


# ------------------------------------------------------------------------------------------------ learning-rate search


def _validate_grid(lr_grid: Iterable[float]) -> list[float]:
    grid = [float(lr) for lr in lr_grid]
    if not grid:
        raise ConfigError("optim.lr_grid: expected a non-empty list of learning rates, e.g. [0.001, 0.01, 0.1]")
    bad = [lr for lr in grid if not (lr > 0 and math.isfinite(lr))]
    if bad:
        raise ConfigError(f"optim.lr_grid: learning rates must be positive and finite, got {bad}")
    return grid


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return -math.inf


def _val_score(result: Any, lr: float) -> tuple[float, float]:
    """(val accuracy, val loss or nan) from what run_fn returned: a dict, or history rows (best val epoch used)."""
    if isinstance(result, (list, tuple)):
        if not result:
            raise ConfigError(f"lr search: the run at lr={lr} returned an empty history")
        # the best-validation epoch: the weights an arm reports are chosen the same way
        result = max(result, key=lambda row: _as_float(row.get("val_accuracy", row.get("val_acc"))))
    if not isinstance(result, dict):
        raise ConfigError(f"lr search: run_fn must return a dict or history rows, got {type(result).__name__}")
    acc = result.get("val_accuracy", result.get("val_acc"))
    if acc is None:
        raise ConfigError(f"lr search: the run at lr={lr} reported no val_accuracy/val_acc "
                          f"(keys: {sorted(result)}); the choice is made on validation, never test")
    loss = result.get("val_loss")
    return float(acc), float(loss) if loss is not None else math.nan


def select_learning_rate(cfg: RunConfig, lr_grid: Iterable[float],
                         run_fn: Callable[[RunConfig], Any]) -> tuple[float, list[dict]]:
    """Equal-effort learning-rate search: train `cfg` once per lr of the grid, keep the best val accuracy.

    Every grid point gets the same config (epochs, schedule, seed, data split) apart from optim.lr, so arms
    that share a grid length get the same tuning budget. `run_fn(cfg) -> dict with val_accuracy (or val_acc,
    optionally val_loss) | list of history rows` trains one candidate; it must not look at the test split.
    A run raising TrainingDiverged counts as a failed candidate. Ties go to the lower val loss, then smaller lr.
    Returns (best_lr, rows) with rows [{"lr", "val_accuracy", "val_loss", "diverged"}] in grid order.
    """
    grid = _validate_grid(lr_grid)
    rows = []
    for lr in grid:
        candidate = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=lr, lr_grid=None))
        try:
            acc, loss = _val_score(run_fn(candidate), lr)
            diverged = not math.isfinite(acc)
        except TrainingDiverged:
            acc, loss, diverged = math.nan, math.nan, True
        rows.append({"lr": lr, "val_accuracy": acc, "val_loss": loss, "diverged": diverged})
    usable = [r for r in rows if not r["diverged"]]
    if not usable:
        raise TrainingDiverged(f"lr search for optimizer {cfg.optim.name!r}: every learning rate of {grid} diverged")
    best = min(usable, key=lambda r: (-r["val_accuracy"],
                                      r["val_loss"] if math.isfinite(r["val_loss"]) else math.inf, r["lr"]))
    return best["lr"], rows
