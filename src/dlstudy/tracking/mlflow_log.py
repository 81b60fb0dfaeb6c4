"""MLflow: one experiment per study (a plain run: one per output folder), one MLflow run per dlstudy run.

    params     config.yaml flattened (optim.lr, model.name, ...), values as YAML/JSON text
    metrics    step/loss (step: global step), epoch/<history.csv column> (step: epoch), test/..., test_before/...,
               <block>/... and run/... of metrics.json
    tags       dlstudy.run (the run's key: "arm/seed-0" in a study, else its folder name), arm, seed, task, commit
               (and MLflow's own mlflow.source.git.commit), dlstudy.path (the run folder)
    artifacts  report.html, predictions.npz, config.yaml, metrics.json, figures/*.png

The store: --mlflow-uri (DLSTUDY_MLFLOW_URI), else $MLFLOW_TRACKING_URI, else a local SQLite store beside the runs:
OUT/mlflow.db with artifacts in OUT/mlruns/ (OUT: the study's --out, or a plain run's). SQLite because MLflow 3
refuses its old ./mlruns file store unless MLFLOW_ALLOW_FILE_STORE=true. Logging a run again (a resumed run, an
export of a folder that was logged live) replaces the experiment's earlier MLflow run of the same key.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from dlstudy.tracking.files import (ARTIFACTS, RunContext, epoch_scalars, figure_paths, result_scalars,
                                    step_scalars)

URI_ENV = "DLSTUDY_MLFLOW_URI"  # set by --mlflow-uri; DLSTUDY_* variables travel to Ray and Slurm workers too
STORE_FILE = "mlflow.db"
ARTIFACT_FOLDER = "mlruns"
BATCH = 1000  # metrics per log_batch call (MLflow's limit); params go 100 at a time


def tracking_uri(out: Path, uri: str | None = None) -> tuple[str, str | None]:
    """(tracking URI, artifact location of new experiments or None: the server's or store's own)."""
    uri = uri or os.environ.get(URI_ENV) or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    out = Path(out).resolve()
    return f"sqlite:///{out / STORE_FILE}", (out / ARTIFACT_FOLDER).as_uri()


def client_for(out: Path, uri: str | None = None):
    """(MlflowClient, artifact location) of the store for runs under `out`."""
    from mlflow import MlflowClient

    for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..." per new store
        logging.getLogger(name).setLevel(logging.WARNING)
    uri, artifacts = tracking_uri(out, uri)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri), artifacts


def experiment_id(client, name: str, artifacts: str | None) -> str:
    """The experiment's id, created (with its artifact folder) when missing; a restored deleted one is reused."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        location = f"{artifacts}/{name}" if artifacts else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another process of the study created it meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


def runs_of(client, exp_id: str, key: str | None = None) -> list:
    """The experiment's MLflow runs (of one dlstudy run key), every page."""
    query = f"tags.`dlstudy.run` = '{key}'" if key else ""
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], query, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def param_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class MlflowTracker:
    name = "mlflow"

    def __init__(self, ctx: RunContext, uri: str | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self._Metric, self._Param, self._RunTag = Metric, Param, RunTag
        self.client, artifacts = client_for(ctx.out, uri)
        self.ctx = ctx
        exp = experiment_id(self.client, ctx.experiment, artifacts)
        for old in runs_of(self.client, exp, ctx.key):  # logged before: replaced by this one, not doubled
            self.client.delete_run(old.info.run_id)
        self.run_id = self.client.create_run(exp, run_name=ctx.key).info.run_id
        self.last_epoch = 0
        self.done = False

    def start(self, config: dict, env: dict) -> None:
        tags = {"dlstudy.run": self.ctx.key, "dlstudy.path": str(self.ctx.path), "task": config.get("task", ""),
                "seed": param_text(config.get("seed")), "arm": self.ctx.arm or ""}
        commit = env.get("git_commit")
        if commit:
            tags.update({"commit": commit, "mlflow.source.git.commit": commit})
        params = [self._Param(k, param_text(v)) for k, v in config.items()]
        self.client.log_batch(self.run_id, tags=[self._RunTag(k, str(v)) for k, v in tags.items()])
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _log(self, metrics: list) -> None:
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + BATCH])

    def log_epochs(self, history: list[dict], steps: list[dict]) -> None:
        now = _millis()
        metrics = [self._Metric(k, v, now, int(row["global_step"])) for row in steps
                   for k, v in step_scalars(row).items()]
        for row in history:
            self.last_epoch = int(row["epoch"])
            metrics += [self._Metric(k, v, now, self.last_epoch) for k, v in epoch_scalars(row).items()]
        self._log(metrics)

    def finish(self, run_dir: Path, metrics: dict) -> None:
        now = _millis()
        self._log([self._Metric(k, v, now, self.last_epoch) for k, v in result_scalars(metrics).items()])
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        for png in figure_paths(run_dir):
            self.client.log_artifact(self.run_id, str(png), "figures")
        self.client.set_terminated(self.run_id, "FINISHED")
        self.done = True

    def close(self, failed: bool = False) -> None:
        if not self.done:
            self.client.set_terminated(self.run_id, "FAILED" if failed else "KILLED")


def _millis() -> int:
    import time

    return int(time.time() * 1000)


def logged_keys(study_dir: Path, uri: str | None = None) -> set[str]:
    """Keys ("arm/seed-0") of the study's MLflow runs that finished."""
    client, _ = client_for(study_dir.parent, uri)
    found = client.get_experiment_by_name(study_dir.name)
    if found is None:
        return set()
    return {r.data.tags.get("dlstudy.run") for r in runs_of(client, found.experiment_id)
            if r.info.status == "FINISHED"}


def describe_study(study_dir: Path, description: str, uri: str | None = None) -> str:
    """The study's experiment (created when missing) with its description as the MLflow note; returns its id."""
    client, artifacts = client_for(study_dir.parent, uri)
    exp = experiment_id(client, study_dir.name, artifacts)
    if description:
        client.set_experiment_tag(exp, "mlflow.note.content", description)
    return exp
