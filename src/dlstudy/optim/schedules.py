"""Per-step learning-rate schedules: `schedule_factor` (the pure definition) and `StepSchedule`, which applies it.

    build_scheduler(opt, train, n)   TrainConfig -> StepSchedule, stepped once per optimizer step, checkpointable
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from dlstudy.config import TrainConfig
from dlstudy.errors import ConfigError


SCHEDULES = ("constant", "step", "cosine", "linear", "onecycle")
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
    cosine: 0.5 (1 + cos(pi u / (total - warmup))) with u = step - warmup; linear: 1 - u / (total - warmup), the
    budgeted-training schedule of Li et al. (ICLR 2020). Both are exactly 0 at step == total_steps, the value the
    scheduler holds once the last of the total_steps optimizer steps (0 .. total - 1) has been taken;
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
    if schedule == "linear":
        span = max(total_steps - warmup_steps, 1)
        return max(1.0 - (step - warmup_steps) / span, 0.0)
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
    if warmup >= total and train_cfg.schedule in ("cosine", "linear"):
        raise ConfigError(f"train.warmup_epochs={train_cfg.warmup_epochs} leaves no steps for the "
                          f"{train_cfg.schedule} decay (epochs={train_cfg.epochs})")
    return StepSchedule(optimizer, schedule=train_cfg.schedule, total_steps=total, warmup_steps=warmup,
                        decay_steps=train_cfg.step_size * steps_per_epoch, gamma=train_cfg.gamma)
