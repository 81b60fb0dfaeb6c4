"""A study's logs: its MLflow experiment before the runs start, and after them the HParams sessions (TensorBoard)
and the runs that were not logged live (finished before `--log` was asked for, or run where the store was out of
reach), exported from their folders.

    prepare_study(study_dir, names, description)   the extra checked, the experiment created (runs then only add)
    log_study(study_dir, names, description)       exports missing runs, writes STUDY/hparams/, the experiment note
    hparam_sessions(runs) -> [(key, hparams, metrics)]   the config keys that differ between runs, and the
                                                         headline metrics of each
"""

from __future__ import annotations

import logging
from pathlib import Path

from dlstudy.tracking import export_run, require
from dlstudy.tracking.files import flat_config, headline_scalars, read_metrics

log = logging.getLogger(__name__)

IGNORED = ("name", "data.root", "device", "train.log")  # where a run ran or logged, not what it was


def study_runs(study_dir: Path) -> list[Path]:
    """The study's finished run folders (<arm>/seed-<s> with DONE), sorted by arm then seed."""
    runs = [p for p in Path(study_dir).glob("*/seed-*") if (p / "DONE").is_file() and (p / "metrics.json").is_file()]
    return sorted(runs, key=lambda p: (p.parent.name, int(p.name[5:]) if p.name[5:].isdigit() else -1))


def prepare_study(study_dir: Path, names: list[str], description: str = "", uri: str | None = None) -> None:
    require(names)
    if "mlflow" in names:  # one process creates the store and the experiment; the runs' processes only add runs
        from dlstudy.tracking.mlflow_log import describe_study

        describe_study(Path(study_dir), description, uri)


def _value(values: list) -> list:
    """One hparam's values over the runs: numbers (or bools) as they are when all are, else all as text."""
    from dlstudy.tracking.mlflow_log import param_text

    if all(isinstance(v, bool) for v in values):
        return values
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return values
    return [param_text(v) for v in values]


def hparam_sessions(runs: list[Path]) -> list[tuple[str, dict, dict]]:
    """(key "arm/seed-s", hparams, metrics) per run: hparams are the arm and every config key whose value differs
    between the runs; metrics the headline test (and retrieval) numbers of its metrics.json."""
    configs = [flat_config(run) for run in runs]
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if k not in IGNORED and len({repr(c.get(k)) for c in configs}) > 1]
    columns = {k: _value([c.get(k) for c in configs]) for k in varying}
    sessions = []
    for i, run in enumerate(runs):
        hparams = {"arm": run.parent.name, **{k: columns[k][i] for k in varying}}
        sessions.append((f"{run.parent.name}/{run.name}", hparams, headline_scalars(read_metrics(run))))
    return sessions


def log_study(study_dir: Path, names: list[str], description: str = "", uri: str | None = None) -> None:
    study_dir = Path(study_dir)
    require(names)
    runs = study_runs(study_dir)
    if "mlflow" in names:
        from dlstudy.tracking.mlflow_log import logged_keys

        logged = logged_keys(study_dir, uri)
        for run in runs:
            if run.relative_to(study_dir).as_posix() not in logged:
                export_run(run, ["mlflow"], uri)
        prepare_study(study_dir, ["mlflow"], description, uri)
    if "tensorboard" in names:
        from dlstudy.tracking.tensorboard_log import FOLDER, write_hparams

        for run in runs:
            if not (run / FOLDER).is_dir():
                export_run(run, ["tensorboard"])
        if runs:
            folder = write_hparams(study_dir, hparam_sessions(runs))
            log.info("tensorboard: %d run(s) and their HParams: tensorboard --logdir %s (HParams in %s)",
                     len(runs), study_dir, folder)
