"""`dlstudy compare`: which differences between runs are real, on the same test images.

    dlstudy compare runs/a runs/b runs/c                 # every pair: difference, CI, p, Holm p, verdict
    dlstudy compare runs/losses-quick --metric f1_macro    # the arms of a study (seeds paired by seed)
    dlstudy compare RUN/evaluations/cifar10-test OTHER/evaluations/cifar10-test

Runs (or evaluation folders) must hold predictions.npz of the same test images (same sample ids, same labels);
each run is one arm. A study folder compares its arms as its report does. Prints a Markdown table (--out FILE
writes it there too).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dlstudy.stats import METRICS

    parser.add_argument("paths", metavar="RUN_OR_STUDY", nargs="+",
                        help="two or more run / evaluation folders, or one study folder")
    parser.add_argument("--metric", default="accuracy", choices=list(METRICS), help="the metric compared")
    parser.add_argument("--confidence", type=float, default=None, help="of the intervals (default: the study's "
                        "stats.confidence, else 0.95); the tests' level is 1 - confidence")
    parser.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=None, help="bootstrap seed (default 0)")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")


def _groups_from_runs(paths: list[Path]) -> dict:
    """{arm name: [ArmRun]} for run folders given one by one; DataError when their test images differ."""
    from dlstudy.errors import DataError
    from dlstudy.predictions import read_predictions
    from dlstudy.studies.summary.records import load_arm_run

    if len(paths) < 2:
        raise DataError("compare: give two or more run folders, or one study folder")
    groups, reference = {}, None
    for path in paths:
        if not (path / "predictions.npz").is_file():
            raise DataError(f"{path}: no predictions.npz (a run made before dlstudy saved predictions, or not a run "
                            f"folder); rerun it or `dlstudy evaluate` it")
        preds = read_predictions(path / "predictions.npz")
        if reference is None:
            reference = (path, preds)
        elif len(preds.sample_ids) != len(reference[1].sample_ids) or \
                (preds.sample_ids != reference[1].sample_ids).any() or (preds.y_true != reference[1].y_true).any():
            raise DataError(f"{path}: its test images are not those of {reference[0]} (sample ids or labels differ: "
                            f"{len(preds.sample_ids)} vs {len(reference[1].sample_ids)} images); a paired comparison "
                            f"needs the same test set")
        name = f"{path.parent.name}/{path.name}" if path.name.startswith("seed-") else path.name
        name = name if name not in groups else str(path)
        groups[name] = [load_arm_run(path, name, 0)]
    return groups


def run(args: argparse.Namespace) -> int:
    from dlstudy.config import StatsConfig
    from dlstudy.io import atomic_write_text
    from dlstudy.report import render_markdown
    from dlstudy.studies.summary.records import group_by_arm
    from dlstudy.studies.summary.significance import pairwise, pairwise_table
    from dlstudy.studies.summary.study_report import collect_runs, is_study_dir, load_study_dir

    paths = [Path(p) for p in args.paths]
    stats = StatsConfig()
    if len(paths) == 1 and is_study_dir(paths[0]):
        study, _ = load_study_dir(paths[0])
        runs, _ = collect_runs(paths[0], study)
        groups, stats = group_by_arm(runs), study.stats
    else:
        groups = _groups_from_runs(paths)
    stats = StatsConfig(confidence=args.confidence if args.confidence is not None else stats.confidence,
                        resamples=args.resamples if args.resamples is not None else stats.resamples,
                        seed=args.seed if args.seed is not None else stats.seed)
    table = pairwise_table(pairwise(groups, stats, args.metric), stats, args.metric)
    text = render_markdown([table], Path.cwd())
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0
