"""`dlstudy reproduce --out DIR [--quick|--full]`: the whole reference report (SVM, fine-tuning, losses, optimizers)."""

from __future__ import annotations

import argparse
import logging
import time

from dlstudy.commands.flags import add_executor_arguments, add_log_arguments, executor_flags, log_overrides

log = logging.getLogger(__name__)

DEFAULT_MINUTES = {"cpu": 60.0}  # tier -> --minutes when not given (none for quick and full)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dlstudy.studies.running.reproduce import BUDGETS
    from dlstudy.studies.summary.sections import ONLY_CHOICES, TIERS

    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tier", choices=TIERS, default=None,
                      help="quick: *-quick.yaml, the embedded digits data, CPU minutes (make demo); cpu: *-cpu.yaml, "
                      "the real data under --data-root sized for about an hour on 2 CPU cores; full: the reference "
                      "report's scale (the default; a GPU job)")
    mode.add_argument("--quick", action="store_true", help="same as --tier quick")
    mode.add_argument("--full", action="store_true", help="same as --tier full")
    parser.add_argument("--out", default="runs", help="output folder: one folder per study plus report.md/.html")
    parser.add_argument("--data-root", default=None, help="folder holding the datasets (cpu and full tiers)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default=None,
                        help="shrink every study further (tiny: 1 epoch, a few steps, one seed; for CI)")
    parser.add_argument("--only", nargs="+", choices=ONLY_CHOICES, default=None, metavar="STUDY",
                        help="run only these sections (svm, finetune, losses, optimizers) or study files of a "
                        "section (e.g. optimizers-cifar10-defaults); the report covers those")
    parser.add_argument("--as-part-of", type=float, default=None, metavar="MINUTES",
                        help="with --only: plan the whole tier for MINUTES and run only the --only studies, on the "
                        "minutes they get in that plan (e.g. one section at a 240-min budget; `dlstudy results` "
                        "shows it beside the tier's own run as accuracy against budget)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time per study, each in its own process")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a run-config key in every arm of every study (repeatable)")
    parser.add_argument("--no-wait", action="store_true",
                        help="a study with runs another process is training is not waited for: its report is not "
                        "written, the other studies go on, exit code 1 (run the same command again later)")
    parser.add_argument("--yes", action="store_true",
                        help="run a study of more than 1,000 runs (arms x grid x seeds) without asking")
    from dlstudy.commands.run import add_budget_arguments

    add_budget_arguments(parser, f" (default: {DEFAULT_MINUTES['cpu']:g} with --tier cpu, `off` for the study files' "
                         "epochs; the quick tier keeps its epochs unless given)")
    add_executor_arguments(parser)
    add_log_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dlstudy.config import parse_overrides
    from dlstudy.errors import ConfigError
    from dlstudy.studies.running.reproduce import run_reproduce

    started = time.time()
    if args.jobs < 1:
        raise ConfigError(f"--jobs: expected a positive number of processes, got {args.jobs}")
    tier = args.tier or ("quick" if args.quick else "full")
    if tier == "quick" and args.data_root:
        log.warning("--data-root is ignored with --tier quick (the quick studies use the embedded digits data)")
    if tier == "full":
        import torch

        if not torch.cuda.is_available():
            log.warning("full budgets without a GPU: expect many hours on CPU (--tier cpu runs the same studies on "
                        "the real data in about an hour on 2 cores; --tier quick is the digits demo)")
    overrides = log_overrides(args, parse_overrides(args.overrides))  # --log: train.log of every arm
    args.interrupt_hint = "finished runs are kept: run the same command again to continue with the others"
    minutes = DEFAULT_MINUTES.get(tier) if args.minutes is None and args.budget is None and args.as_part_of is None \
        else args.minutes
    minutes = None if minutes == "off" else minutes
    html_path, failures = run_reproduce(args.out, tier=tier, data_root=args.data_root, budget=args.budget,
                                        jobs=args.jobs, only=args.only, overrides=overrides,
                                        executor=executor_flags(args), minutes=minutes,
                                        remeasure=args.remeasure, plan_only=args.plan_only, started=started,
                                        wait=not args.no_wait, yes=args.yes, as_part_of=args.as_part_of)
    if html_path is None:  # --plan-only
        return 0
    print(f"report: {html_path}")
    print(f"        {html_path.with_suffix('.md')}")
    if failures:
        log.error("%d failure(s):\n  %s", len(failures), "\n  ".join(failures))
        return 1
    return 0
