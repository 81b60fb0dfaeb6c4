"""Job registry: a RunConfig's `task` names the function that runs it into a run folder."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from dlstudy.config import RunConfig
from dlstudy.errors import ConfigError
from dlstudy.runs import RunDir


@dataclass(frozen=True)
class Job:
    target: str  # "module:function" with signature (cfg: RunConfig, run_dir: RunDir, resume: bool) -> dict
    help: str


JOBS: dict[str, Job] = {
    "svm": Job("dlstudy.svm.job:run_svm_job", "multiclass SVM on raw pixels or CNN features"),
    "train": Job("dlstudy.engine.job:run_train_job", "train / fine-tune a network, evaluated before and after"),
}


def run_job(cfg: RunConfig, run_dir: RunDir, resume: bool = False) -> dict:
    """Run `cfg` into `run_dir` and return its metrics dict."""
    if cfg.task not in JOBS:
        raise ConfigError(f"task: unknown task {cfg.task!r}; valid tasks are {sorted(JOBS)}")
    module_name, func_name = JOBS[cfg.task].target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return func(cfg, run_dir, resume=resume)
