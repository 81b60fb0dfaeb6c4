"""Arguments and config resolution shared by the job commands (svm, train)."""

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


def flag_layer(args: argparse.Namespace, mapping: dict[str, str]) -> dict:
    """Partial config from the flags that were given: mapping of argparse dest -> dotted config key."""
    layer: dict = {}
    for dest, key in mapping.items():
        value = getattr(args, dest, None)
        if value is not None:
            set_dotted(layer, key, value)
    return layer


COMMON_FLAGS = {"data": "data.name", "data_root": "data.root", "download": "data.download", "name": "name", "seed": "seed", "device": "device"}


def resolve_config(args: argparse.Namespace, task: str, extra_flags: dict[str, str] | None = None) -> RunConfig:
    file_layer = load_yaml_mapping(args.config) if getattr(args, "config", None) else {}
    flags = flag_layer(args, {**COMMON_FLAGS, **(extra_flags or {})})
    return build_run_config({"task": task}, file_layer, flags, parse_overrides(args.overrides))


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
