"""The Python entry points: what `dlstudy train`, `dlstudy svm` and `dlstudy run` do, callable from a notebook.

    import dlstudy
    run = dlstudy.train({"data": {"name": "digits"}, "model": {"name": "smallcnn"}, "train": {"epochs": 2}})
    run.metrics["accuracy"], run.path                      # the run folder, as the CLI writes it
    study = dlstudy.run_study("studies/optimizers-quick.yaml", out="runs")
    study.summary[0]["arm"], study.report                  # summary.csv rows, report.md

A config is a `RunConfig`, a (partial) dict of its sections, or a YAML file's path; `overrides` (a dict, or
"key=value" strings as `--set` takes) apply on top. Errors are the CLI's: a `dlstudy.errors.DlstudyError` naming the
key or file at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlstudy.config import RunConfig, build_run_config, load_yaml_mapping, parse_overrides, to_dict
from dlstudy.io import read_csv, read_json


@dataclass(frozen=True)
class RunResult:
    """A finished run folder: its path and metrics.json."""

    path: Path
    metrics: dict

    def load(self, device: str = "cpu"):
        """The trained classifier (dlstudy.load_run): `.predict(images)`, `.model`, `.class_names`."""
        from dlstudy.inference import load_run

        return load_run(self.path, device)


@dataclass(frozen=True)
class StudyResult:
    """A study folder after `run_study`: summary.csv's rows (one per arm), the report, and the runs that failed."""

    path: Path
    summary: list[dict]
    failed: list[str] = field(default_factory=list)  # "arm/seed-N"

    @property
    def report(self) -> Path:
        return self.path / "report.md"


def _as_config(config: RunConfig | dict | str | Path | None, overrides: dict | list[str] | None,
               task: str) -> RunConfig:
    if isinstance(config, RunConfig):
        base, where = to_dict(config), "config"
    elif isinstance(config, (str, Path)):
        base, where = load_yaml_mapping(config), str(config)
    else:
        base, where = dict(config or {}), "config"
    layer = parse_overrides(list(overrides)) if isinstance(overrides, (list, tuple)) else (overrides or {})
    return build_run_config({"task": task}, base, layer, where=where)


def _run(cfg: RunConfig, out: str | Path) -> RunResult:
    from dlstudy.jobs import NewRun, run_job

    where = NewRun(Path(out))
    metrics = run_job(cfg, where)
    return RunResult(where.run_dir.path, metrics)


def train(config: RunConfig | dict | str | Path | None = None, out: str | Path = "runs",
          overrides: dict | list[str] | None = None) -> RunResult:
    """Train (or fine-tune) a network into a new folder under `out`, as `dlstudy train` does."""
    return _run(_as_config(config, overrides, "train"), out)


def fit_svm(config: RunConfig | dict | str | Path | None = None, out: str | Path = "runs",
        overrides: dict | list[str] | None = None) -> RunResult:
    """Fit the multiclass SVM on pixels or CNN features into a new folder under `out`, as `dlstudy svm` does."""
    return _run(_as_config(config, overrides, "svm"), out)


def run_study(study: str | Path, out: str | Path = "runs", overrides: dict | list[str] | None = None,
              seeds: list[int] | None = None, jobs: int = 1) -> StudyResult:
    """Every arm x seed of a study file (finished runs are kept), then summary.csv and the study report."""
    from dlstudy.studies.running.runner import run_study as _run_study

    layer: dict[str, Any] = (parse_overrides(list(overrides)) if isinstance(overrides, (list, tuple))
                             else dict(overrides or {}))
    study_dir, results = _run_study(study, out, layer, jobs=jobs, seeds=seeds)
    rows = read_csv(study_dir / "summary.csv") if (study_dir / "summary.csv").is_file() else []
    summary = [{k: _number(v) for k, v in row.items()} for row in rows]
    return StudyResult(study_dir, summary, [f"{r.arm}/seed-{r.seed}" for r in results if not r.ok])


def _number(text: str) -> Any:
    """A summary.csv cell as a float where it is one ("0.97" -> 0.97), else the text ("" stays "")."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def read_run(path: str | Path) -> RunResult:
    """A run folder written earlier (by the CLI or `train`), with its metrics.json."""
    path = Path(path)
    return RunResult(path, read_json(path / "metrics.json"))
