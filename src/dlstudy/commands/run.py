"""`dlstudy run STUDY.yaml --out DIR`: every arm x seed of a study, resumable, then summary.csv and the report.

    dlstudy run studies/losses-quick.yaml --jobs 2                           # two processes on this machine
    dlstudy run studies/losses.yaml --executor ray --address HEAD_IP:6379    # a Ray cluster (docs/cluster.md)
    dlstudy run studies/losses.yaml --executor slurm --partition gpu --time 120 --gpus-per-run 1
"""

from __future__ import annotations

import argparse
import logging

from dlstudy.commands.common import add_executor_arguments, executor_flags
from dlstudy.config import parse_overrides

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY.yaml", help="study file (see docs/studies.md and studies/*.yaml)")
    parser.add_argument("--out", default="runs", help="parent folder; the study writes OUT/<study name>/")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a run-config key in every arm, e.g. --set train.epochs=1 (repeatable)")
    parser.add_argument("--data-root", default=None,
                        help="folder holding the datasets (sets data.root in every arm; same as $DLSTUDY_DATA)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process "
                        "(the CPU threads are split between them)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to run instead of the study's")
    add_executor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dlstudy.errors import ConfigError
    from dlstudy.studies.running.runner import run_study

    if args.jobs < 1:
        raise ConfigError(f"--jobs: expected a positive number of processes, got {args.jobs}")
    overrides = parse_overrides(args.overrides)
    if args.data_root is not None:
        overrides.setdefault("data", {})["root"] = args.data_root
    args.interrupt_hint = "finished runs are kept: run the same command again to continue with the others"
    study_dir, results = run_study(args.study, args.out, overrides, jobs=args.jobs, seeds=args.seeds,
                                   executor=executor_flags(args))
    failed = [r for r in results if not r.ok]
    print(study_dir / "report.md")
    print(study_dir / "report.html")
    if failed:
        log.error("%d run(s) failed: %s", len(failed), ", ".join(f"{r.arm}/seed-{r.seed}" for r in failed))
        return 1
    return 0
