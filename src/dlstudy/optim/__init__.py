"""Optimizers and learning-rate schedules.

    registry.py    OPTIMIZERS (name -> OptimizerSpec), build_optimizer, optimizer_kwargs
    schedules.py   schedule_factor, StepSchedule, build_scheduler (stepped once per optimizer step)

The BatchNorm/batch-1 guard is a property of the model: dlstudy.models.batchnorm.
"""

from dlstudy.optim.registry import OPTIMIZERS, OptimizerSpec, build_optimizer, get_optimizer_spec, optimizer_kwargs
from dlstudy.optim.schedules import (ONECYCLE_DIV, ONECYCLE_FINAL_DIV, ONECYCLE_PCT_START, SCHEDULES, StepSchedule,
                                     build_scheduler, schedule_factor)

__all__ = ["OPTIMIZERS", "OptimizerSpec", "build_optimizer", "get_optimizer_spec", "optimizer_kwargs",
           "SCHEDULES", "ONECYCLE_PCT_START", "ONECYCLE_DIV", "ONECYCLE_FINAL_DIV", "StepSchedule",
           "build_scheduler", "schedule_factor"]
