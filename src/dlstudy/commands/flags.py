"""Command-line flags shared by the job and study commands (train, svm, run, reproduce) and the config precedence they
give: defaults < --config FILE < explicit flags < --set key=value."""

from __future__ import annotations

import argparse

from dlstudy.config import RunConfig, build_run_config, load_yaml_mapping, parse_overrides, set_dotted


def add_run_arguments(parser: argparse.ArgumentParser, default_data: str = "digits") -> None:
    """Flags every job takes. Precedence: defaults < --config FILE < explicit flags < --set key=value."""
    parser.add_argument("--config", help="YAML file with a (partial) run config")
    parser.add_argument("--data", default=None, help=f"dataset name (default {default_data}; `dlstudy datasets` lists them)")
    parser.add_argument("--data-root", default=None, help="folder holding the dataset files")
    parser.add_argument("--download", action="store_true", default=None,
                        help="download the dataset with torchvision's downloader where one exists (needs network)")
    parser.add_argument("--out", default="runs", help="parent folder of the run folder")
    parser.add_argument("--name", default=None, help="run folder name (default: derived from the config)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set train.epochs=5 (repeatable)")
    add_log_arguments(parser)


def tracker_names(text: str) -> list[str]:
    from dlstudy.tracking import parse_names

    try:
        return parse_names(text)
    except ValueError as exc:  # argparse prints it as `argument --log: ...` and exits 2
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--log: ")) from None


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """--log and --mlflow-uri (train, svm, run, reproduce; docs/tracking.md)."""
    group = parser.add_argument_group("logging to TensorBoard / MLflow (docs/tracking.md)")
    group.add_argument("--log", type=tracker_names, default=None, metavar="TRACKERS",
                       help="tensorboard, mlflow or tensorboard,mlflow: also log the curves and results there "
                       "(sets train.log; needs pip install 'dlstudy[tracking]')")
    group.add_argument("--mlflow-uri", default=None, metavar="URI",
                       help="MLflow tracking server or store, e.g. http://host:5000 (default: $MLFLOW_TRACKING_URI, "
                       "else a local store OUT/mlflow.db with artifacts in OUT/mlruns)")


def use_log_flags(args: argparse.Namespace, names: list[str]) -> None:
    """The trackers' packages checked before anything runs; --mlflow-uri handed to the runs through the
    environment (DLSTUDY_MLFLOW_URI, which study workers inherit and Ray / Slurm tasks are given)."""
    import os

    from dlstudy.tracking import require
    from dlstudy.tracking.mlflow_log import URI_ENV

    require(names)
    if getattr(args, "mlflow_uri", None):
        os.environ[URI_ENV] = args.mlflow_uri


def log_overrides(args: argparse.Namespace, overrides: dict) -> dict:
    """A study command's --log as the train.log override of every arm (run, reproduce)."""
    if args.log is not None:
        overrides.setdefault("train", {})["log"] = args.log
    use_log_flags(args, args.log or [])
    return overrides


def flag_layer(args: argparse.Namespace, mapping: dict[str, str]) -> dict:
    """Partial config from the flags that were given: mapping of argparse dest -> dotted config key."""
    layer: dict = {}
    for dest, key in mapping.items():
        value = getattr(args, dest, None)
        if value is not None:
            set_dotted(layer, key, value)
    return layer


COMMON_FLAGS = {"data": "data.name", "data_root": "data.root", "download": "data.download", "name": "name", "seed": "seed", "device": "device"}

LOG_FLAGS = {"log": "train.log"}


def resolve_config(args: argparse.Namespace, task: str, extra_flags: dict[str, str] | None = None) -> RunConfig:
    file_layer = load_yaml_mapping(args.config) if getattr(args, "config", None) else {}
    flags = flag_layer(args, {**COMMON_FLAGS, **LOG_FLAGS, **(extra_flags or {})})
    cfg = build_run_config({"task": task}, file_layer, flags, parse_overrides(args.overrides))
    use_log_flags(args, cfg.train.log)
    return cfg


EXECUTOR_FLAGS = {"executor": "name", "address": "address", "cpus_per_run": "cpus_per_run",
                  "gpus_per_run": "gpus_per_run", "shared_out": "shared_out", "partition": "partition",
                  "time": "time_min"}


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a study's runs execute (run, reproduce); each flag given overrides the study file's `executor:` block."""
    from dlstudy.studies.running.executors import EXECUTORS

    group = parser.add_argument_group("executor (docs/cluster.md)")
    group.add_argument("--executor", choices=sorted(EXECUTORS), default=None,
                       help="; ".join(f"{name}: {entry.help}" for name, entry in EXECUTORS.items()) +
                       " (default: the study's executor.name, else local; ray and slurm need "
                       "pip install 'dlstudy[cluster]')")
    group.add_argument("--address", default=None, help="ray: the cluster to join, e.g. HEAD_IP:6379 or auto "
                       "(default: start a local Ray cluster on this machine)")
    group.add_argument("--cpus-per-run", type=int, default=None, help="ray/slurm: CPU cores (and torch threads) "
                       "per run (default 1)")
    group.add_argument("--gpus-per-run", type=int, default=None, help="ray/slurm: GPUs per run (default: 1 for a "
                       "cuda run, 0 for cpu); above 1, one torchrun DDP job of that many processes per run")
    group.add_argument("--shared-out", choices=["yes", "no"], default=None,
                       help="ray: is --out the same folder on every node? no: each finished run folder is sent "
                       "back to this machine (default: each node checks)")
    group.add_argument("--partition", default=None, help="slurm: partition of the job array")
    group.add_argument("--time", type=int, default=None, metavar="MINUTES", help="slurm: time limit per run")


def executor_flags(args: argparse.Namespace) -> dict:
    """The executor flags that were given, as ExecutorConfig keys."""
    flags = {key: getattr(args, dest, None) for dest, key in EXECUTOR_FLAGS.items()}
    if flags["shared_out"] is not None:
        flags["shared_out"] = flags["shared_out"] == "yes"
    return {k: v for k, v in flags.items() if v is not None}
