"""`dlstudy run STUDY.yaml --out DIR`: every arm x seed of a study, resumable, then summary.csv and the report.

    dlstudy run studies/losses-quick.yaml --jobs 2                           # two processes on this machine
    dlstudy run studies/losses.yaml --executor ray --address HEAD_IP:6379    # a Ray cluster (docs/cluster.md)
    dlstudy run studies/losses.yaml --executor slurm --partition gpu --time 120 --gpus-per-run 1
"""

from __future__ import annotations

import argparse
import logging

from dlstudy.commands.flags import add_executor_arguments, add_log_arguments, executor_flags, log_overrides
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
    parser.add_argument("--no-wait", action="store_true",
                        help="runs another `dlstudy run` is training are skipped; exit (code 1, no report) instead "
                        "of waiting for them before writing the study report")
    parser.add_argument("--yes", action="store_true",
                        help="run a study of more than 1,000 runs (arms x grid x seeds) without asking")
    add_budget_arguments(parser)
    add_executor_arguments(parser)
    add_log_arguments(parser)


def minutes_arg(text: str) -> float | str:
    """--minutes: a positive number of minutes, or `off` (no budget: the study files' epochs)."""
    if text.strip().lower() in ("off", "none"):
        return "off"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes or 'off', got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number of minutes, got {text!r}")
    return value


def add_budget_arguments(parser: argparse.ArgumentParser, default_text: str = "") -> None:
    """--minutes, --remeasure, --plan-only (dlstudy run and dlstudy reproduce)."""
    parser.add_argument("--minutes", type=minutes_arg, default=None, metavar="M",
                        help="time budget: measure this machine's speed for every arm, then give each run the "
                        f"optimizer steps that fit so the whole ends in about M minutes{default_text} "
                        "(docs/studies.md, 'Time budget')")
    parser.add_argument("--remeasure", action="store_true",
                        help="with --minutes: measure the throughput again instead of using the cached numbers")
    parser.add_argument("--plan-only", action="store_true",
                        help="print the plan (and the budget's steps per arm) and exit without running anything")


def run(args: argparse.Namespace) -> int:
    import time

    from dlstudy.errors import ConfigError
    from dlstudy.studies.running.runner import run_study

    started = time.time()
    if args.jobs < 1:
        raise ConfigError(f"--jobs: expected a positive number of processes, got {args.jobs}")
    if args.plan_only and args.minutes is None:
        raise ConfigError("--plan-only: give --minutes M (dlstudy run plans only a time budget)")
    overrides = log_overrides(args, parse_overrides(args.overrides))  # --log: train.log of every arm
    if args.data_root is not None:
        overrides.setdefault("data", {})["root"] = args.data_root
    budget = None
    if args.minutes == "off":
        args.minutes = None
    if args.minutes is not None:
        from dlstudy.studies.running.budget import plan_study_budget

        budget, text = plan_study_budget(args.study, args.out, overrides, args.minutes, started, seeds=args.seeds,
                                         jobs=args.jobs, remeasure=args.remeasure)
        log.info("%s", text)
        if args.plan_only:
            return 0
    args.interrupt_hint = "finished runs are kept: run the same command again to continue with the others"
    study_dir, results = run_study(args.study, args.out, overrides, jobs=args.jobs, seeds=args.seeds,
                                   executor=executor_flags(args), budget=budget, wait=not args.no_wait,
                                   yes=args.yes)
    failed = [r for r in results if not r.ok]
    print(study_dir / "report.md")
    print(study_dir / "report.html")
    if failed:
        log.error("%d run(s) failed: %s", len(failed), ", ".join(f"{r.arm}/seed-{r.seed}" for r in failed))
        return 1
    return 0
