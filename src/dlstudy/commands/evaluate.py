"""`dlstudy evaluate`: score a finished train or svm run on a dataset split, into an evaluation folder.

    dlstudy evaluate runs/train-cifar10-airbench-ce-sgd --data cifar10 --data-root ../shared/data
    dlstudy evaluate RUN --data imagefolder --data-root photos/ --split test     # photos/test/<class>/<image>
    dlstudy evaluate RUN --data mnist --split all --out evals/mnist-all

The folder (default RUN_DIR/evaluations/<data>-<split>/) is written by dlstudy.jobs.evaluate: metrics.json (every
metrics.json key of a run, plus an "evaluation" block saying what was scored), predictions.npz, the
confusion-matrix / ROC / per-class figures and report.md / report.html. The run's own preprocessing is used.
"""

from __future__ import annotations

import argparse

from dlstudy.data.registry import EVAL_SPLITS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished (or checkpointed) train or svm run folder")
    parser.add_argument("--data", default=None, help="dataset name (default: the run's own)")
    parser.add_argument("--data-root", default=None, help="folder holding the dataset files")
    parser.add_argument("--split", default="test", choices=EVAL_SPLITS,
                        help="which split: made as at training time when the data has a training pool")
    parser.add_argument("--out", default=None, help="evaluation folder (default RUN_DIR/evaluations/<data>-<split>)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass (default: the run's train.eval_batch_size)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")


def run(args: argparse.Namespace) -> int:
    from dlstudy.errors import ConfigError
    from dlstudy.jobs.evaluate import evaluate_into

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size: expected >= 1, got {args.batch_size}")
    out, metrics, notes = evaluate_into(args.run_dir, args.out, args.data, args.data_root, args.split,
                                        args.batch_size, args.device)
    print(f"evaluation folder: {out}")
    print(f"{metrics['evaluation']['data']} {args.split}: {metrics['n_samples']} images, accuracy "
          f"{metrics['accuracy']:.4f}, macro F1 {metrics['f1_macro']:.4f}")
    for note in notes[1:]:
        print(f"note: {note}")
    return 0
