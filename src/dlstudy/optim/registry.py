"""The optimizer registry: every optimizer is a small record naming a stock `torch.optim` class and its constants.

    OPTIMIZERS                       name -> OptimizerSpec (torch class, default and tunable hyperparameters)
    build_optimizer(params, cfg)     OptimConfig -> torch.optim.Optimizer (per-group "lr_mult" for discriminative LR)
    optimizer_kwargs(cfg)            the resolved keyword arguments of the torch class

Registry entries are small records, not subclasses: every optimizer is a stock `torch.optim` class with fixed
defaults, so "momentum" and "nesterov" are `torch.optim.SGD` with different constants. "Vanilla SGD" in the
optimizer study is the `sgd` entry at `train.batch_size: 1`; the batch size is an arm setting, not an optimizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import torch

from dlstudy.config import OptimConfig
from dlstudy.errors import ConfigError


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
