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
