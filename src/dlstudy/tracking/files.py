"""What the trackers log, read from a run folder's files: the one source of live logging and of `export-logs`.

    run_context(path) -> RunContext      # study member or plain run: MLflow experiment, run key, arm, default store
    flat_config(path)  {"optim.lr": 0.001, ...}          config.yaml flattened to dotted keys
    read_rows(path, "history.csv" | "steps.csv")         the CSV rows with numbers parsed back
    epoch_scalars(row) {"epoch/train_loss": ..., ...}    one history.csv row (step: its epoch)
    step_scalars(row)  {"step/loss": ...}                one steps.csv row (step: its global_step)
    result_scalars(metrics) {"test/accuracy": ..., "test_before/accuracy": ..., "svm/C": ...}
    figure_paths(path), ARTIFACTS                        the PNGs and files logged at the end

A job hands its rows to the trackers as it writes them (the same dicts csv writes); export-logs reads them back
with `read_rows`. Both then go through the same functions below, so a live log and an export are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from dlstudy.io import read_csv, read_json
from dlstudy.metrics.table import METRICS

# files of the run folder logged as MLflow artifacts when present (figures/*.png as well, under figures/)
ARTIFACTS = ("report.html", "predictions.npz", "config.yaml", "metrics.json")
STUDY_FILE = "study.yaml"  # the runner's mark of a study folder (dlstudy.studies.summary.study_report)


@dataclass(frozen=True)
class RunContext:
    """Where a run folder sits: a run of a study (OUT/<study>/<arm>/seed-<s>, or an arm's lr-search candidate
    OUT/<study>/<arm>/lr-search/lr-<x>) or a plain run (OUT/<run>)."""

    path: Path
    key: str  # "arm/seed-0" in a study, else the folder's name: the MLflow run name, found again on re-export
    experiment: str  # the study's name; a plain run: its output folder's name ("dlstudy" when it has none)
    arm: str | None  # None outside a study
    out: Path  # the folder holding the default local MLflow store (mlflow.db, mlruns/): the study's parent or OUT
    study_dir: Path | None


def find_study_dir(path: Path) -> Path | None:
    """The study folder a run folder belongs to (its study.yaml two or three levels up), or None."""
    for parent in (path.parent.parent, path.parent.parent.parent):
        if (parent / STUDY_FILE).is_file():
            return parent
    return None


def run_context(path: str | Path) -> RunContext:
    path = Path(path).resolve()
    study_dir = find_study_dir(path)
    if study_dir is not None:
        key = path.relative_to(study_dir).as_posix()
        return RunContext(path, key, study_dir.name, key.split("/")[0], study_dir.parent, study_dir)
    return RunContext(path, path.name, path.parent.name or "dlstudy", None, path.parent, None)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def flat_config(path: Path) -> dict:
    """config.yaml of the run folder, flattened to dotted keys ({} without the file)."""
    config = Path(path) / "config.yaml"
    return flatten(yaml.safe_load(config.read_text()) or {}) if config.is_file() else {}


def read_env(path: Path) -> dict:
    env = Path(path) / "env.json"
    return read_json(env) if env.is_file() else {}


def read_metrics(path: Path) -> dict:
    metrics = Path(path) / "metrics.json"
    return read_json(metrics) if metrics.is_file() else {}


def _cell(text: str):
    if text in ("", None):
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def read_rows(path: Path, name: str) -> list[dict]:
    """Rows of history.csv / steps.csv with numbers parsed back (python's csv writes floats exactly), [] without
    the file."""
    file = Path(path) / name
    return [{k: _cell(v) for k, v in row.items()} for row in read_csv(file)] if file.is_file() else []


def _number(value) -> float | None:
    """A finite float of an int/float (bool excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def epoch_scalars(row: dict) -> dict[str, float]:
    """One history.csv row as {"epoch/<column>": value} (its step is row["epoch"]); empty cells are left out."""
    return {f"epoch/{k}": v for k, v in ((k, _number(v)) for k, v in row.items() if k != "epoch") if v is not None}


def step_scalars(row: dict) -> dict[str, float]:
    """One steps.csv row as {"step/loss": value} (its step is row["global_step"])."""
    value = _number(row.get("loss"))
    return {} if value is None else {"step/loss": value}


def _scalars(block: dict, prefix: str) -> dict[str, float]:
    """{prefix/key: float} of the block's finite numbers; metadata of the metric table (K, N) left out."""
    out = {}
    for key, value in block.items():
        number = _number(value)
        if number is not None and not (key in METRICS and METRICS[key].source == "meta"):
            out[f"{prefix}/{key}"] = number
    return out


def result_scalars(metrics: dict) -> dict[str, float]:
    """metrics.json's numbers: the test metrics of the table (and the test loss) as test/<key>, the `before` block
    as test_before/<key>, other blocks (svm, retrieval, collapse, weights, data) as <block>/<key>, other top-level
    numbers (best_epoch, train_time_s, ...) as run/<key>. `after` repeats the top level: skipped."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            if key != "after":
                out.update(_scalars(value, "test_before" if key == "before" else key))
        else:
            out.update(_scalars({key: value}, "test" if key in METRICS or key == "loss" else "run"))
    return out


def headline_scalars(metrics: dict) -> dict[str, float]:
    """The study's HParams metrics: the test/ and retrieval/ scalars of result_scalars."""
    return {k: v for k, v in result_scalars(metrics).items() if k.split("/")[0] in ("test", "retrieval")}


def figure_paths(path: Path) -> list[Path]:
    folder = Path(path) / "figures"
    return sorted(folder.glob("*.png")) if folder.is_dir() else []
