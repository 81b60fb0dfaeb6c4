"""What a finished arm run left on disk, read back for summaries: config, metrics, history."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from dlstudy.errors import DlstudyError
from dlstudy.io import read_csv, read_json

TRAIN_ACC_KEYS = ("train_eval_acc", "train_acc")  # first present wins: the eval-mode subset, else running means


@dataclass
class ArmRun:
    """One arm x seed run folder, loaded. `metrics` is metrics.json as written (may hold `before`/`after`)."""

    arm: str
    seed: int
    path: Path
    config: dict = field(default_factory=dict)  # config.yaml (resolved RunConfig as a plain dict)
    metrics: dict = field(default_factory=dict)  # metrics.json
    history: list[dict] = field(default_factory=list)  # history.csv rows (strings converted to numbers)


def _number(text: Any) -> Any:
    """CSV cell -> int/float when it parses, else the original string ('' -> None)."""
    if not isinstance(text, str):
        return text
    if text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def load_arm_run(path: str | Path, arm: str | None = None, seed: int | None = None) -> ArmRun:
    """Read a run folder. `arm`/`seed` default to the folder layout `<arm>/seed-<s>` and config.yaml's seed."""
    path = Path(path)
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        raise DlstudyError(f"{path}: no metrics.json (not a finished run folder)")
    config: dict = {}
    if (path / "config.yaml").is_file():
        try:
            config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        except yaml.YAMLError as exc:
            raise DlstudyError(f"{path / 'config.yaml'}: not valid YAML (damaged?): {exc}") from None
    history = []
    if (path / "history.csv").is_file():
        history = [{k: _number(v) for k, v in row.items()} for row in read_csv(path / "history.csv")]
    if seed is None:
        seed = config.get("seed")
        if seed is None and path.name.startswith("seed-"):
            seed = int(path.name[len("seed-"):])
    metrics = read_json(metrics_path)  # DlstudyError naming the file when it is damaged
    if not isinstance(metrics, dict) or not isinstance(config, dict):
        raise DlstudyError(f"{path}: metrics.json and config.yaml must each hold a mapping")
    return ArmRun(arm=arm or path.parent.name, seed=int(seed or 0), path=path, config=config,
                  metrics=metrics, history=history)


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0.0 for one value) of the finite values; (nan, nan) when there are none."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, 0.0
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var)


def fmt_mean_std(values: Iterable[float | None], digits: int = 3) -> str:
    """'0.912 ± 0.004' over seeds; a single value prints without ± ; no values print '—'."""
    xs = [v for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return "—"
    mean, std = mean_std(xs)
    if len(xs) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def metric(run: ArmRun, key: str, block: str | None = None) -> Any:
    """A metric of a run: top level, or inside `before`/`after` when `block` is given; None when absent."""
    source = run.metrics.get(block, {}) if block else run.metrics
    return source.get(key) if isinstance(source, dict) else None


def group_by_arm(runs: Iterable[ArmRun]) -> dict[str, list[ArmRun]]:
    """Runs grouped by arm name, arms in first-seen order, seeds sorted."""
    groups: dict[str, list[ArmRun]] = {}
    for run in runs:
        groups.setdefault(run.arm, []).append(run)
    return {arm: sorted(rs, key=lambda r: r.seed) for arm, rs in groups.items()}


def val_accuracy(runs: Iterable[ArmRun]) -> float:
    """Mean validation accuracy of an arm's runs (train: best_val_accuracy; svm: val accuracy of the chosen C).

    Comparisons that name one "best" arm choose it by this, never by test accuracy. -inf when no run has one.
    """
    values = []
    for run in runs:
        value = run.metrics.get("best_val_accuracy", (run.metrics.get("svm") or {}).get("val_accuracy"))
        if isinstance(value, (int, float)) and math.isfinite(value):
            values.append(float(value))
    return sum(values) / len(values) if values else -math.inf


def history_value(row: dict, key: str) -> float:
    """A history.csv cell as a float; NaN when empty or not a number."""
    v = row.get(key)
    try:
        return float(v) if v not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def first_present(history: Sequence[dict], keys: Sequence[str]) -> str:
    """The first of `keys` that has a value in the history (train_eval_* before the running train_* means)."""
    for key in keys:
        if any(math.isfinite(history_value(row, key)) for row in history):
            return key
    return keys[-1]


def final_value(run: ArmRun, key: str) -> float | None:
    """The last finite value of a history column; None when it has none."""
    values = [history_value(row, key) for row in run.history]
    values = [v for v in values if math.isfinite(v)]
    return values[-1] if values else None


def train_accuracy(run: ArmRun) -> float | None:
    """Train-subset accuracy (eval mode) of the weights the test accuracy is of: the best-val epoch, else the last."""
    key = first_present(run.history, TRAIN_ACC_KEYS)
    best = run.metrics.get("best_epoch")
    rows = [r for r in run.history if best is not None and history_value(r, "epoch") == float(best)]
    value = history_value(rows[0], key) if rows else math.nan
    return value if math.isfinite(value) else final_value(run, key)


def config_value(run: ArmRun, section: str, key: str, default: Any = None) -> Any:
    """config.yaml's `section.key` of the run, or `default` when it is absent."""
    value = (run.config.get(section) or {}).get(key)
    return default if value is None else value


def test_accuracy(run: ArmRun) -> float | None:
    """The run's test accuracy (the `after` block's for a train run with one), or None."""
    after = run.metrics.get("after")
    value = run.metrics.get("accuracy", after.get("accuracy") if isinstance(after, dict) else None)
    return float(value) if isinstance(value, (int, float)) else None


def protocol_of(study_dir: Path, arms: Sequence[str]) -> tuple[str, str]:
    """(short, long) name of the study's protocol, read from its folder: equal-effort tuning when its arms searched
    learning rates (<arm>/lr-search/chosen_lr.json, the grid it chose from), else fixed learning rates."""
    sizes = []
    for arm in arms:
        path = Path(study_dir) / arm / "lr-search" / "chosen_lr.json"
        if path.is_file():
            sizes.append(len(read_json(path).get("lr_grid") or []))
    if sizes:
        n = max(sizes)
        return (f"tuned ({n} lrs/arm)", f"equal-effort tuning: the same {n}-point learning-rate grid per arm, "
                                        f"chosen on validation accuracy, the winner rerun with every seed")
    return "fixed lrs", "fixed learning rates (each arm's optim.lr), no tuning"
