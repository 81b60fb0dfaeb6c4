"""A study's arms: the file's arms crossed with its `grid`, named and checked (a folder name each)."""

from __future__ import annotations

import collections
import itertools
from typing import Any

from dlstudy.config import ArmConfig, StudyConfig
from dlstudy.errors import ConfigError
from dlstudy.runs import check_folder_name, slug


def expand_arms(study: StudyConfig) -> list[ArmConfig]:
    """The study's arms, each crossed with every combination of `grid` (dotted key -> values)."""
    arms = list(study.arms) or [ArmConfig(name="base")]  # no arms: the base config is the one arm
    if study.grid:
        keys = list(study.grid)
        expanded = []
        for arm in arms:
            for values in itertools.product(*(study.grid[k] for k in keys)):
                label = "-".join(f"{k.split('.')[-1]}_{_label(v)}" for k, v in zip(keys, values))
                name = label if arm.name == "base" and not study.arms else f"{arm.name}-{label}"
                expanded.append(ArmConfig(name=slug(name), set={**arm.set, **dict(zip(keys, values))}))
        arms = expanded
    names = [a.name for a in arms]
    dupes = sorted(name for name, count in collections.Counter(names).items() if count > 1)  # O(n): 10^5 arms
    if dupes:
        raise ConfigError(f"study {study.name!r}: arm names must be unique, repeated: {dupes}")
    for name in names:  # arm names given in the file and those the grid made
        try:
            check_folder_name(name, "arm name")
        except ConfigError as exc:
            raise ConfigError(f"study {study.name!r}: {exc}") from None
    return arms


def _label(value: Any) -> str:
    """A grid value as part of a folder name: [0.1, 1] -> '0.1_1'."""
    if isinstance(value, (list, tuple)):
        return "_".join(_label(v) for v in value)
    return slug(str(value))
