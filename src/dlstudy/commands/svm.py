"""`dlstudy svm`: fit our multiclass SVM on raw pixels or backbone features, evaluate on test, write a run folder.

    dlstudy svm --data digits --out runs/
    dlstudy svm --data digits --multi-class crammer_singer --C 0.01 0.1 1       # C chosen on the val split
    dlstudy svm --data cifar10 --features resnet50 --weights imagenet --set data.image_size=224
    dlstudy svm --data digits --kernel rbf --set svm.n_components=2000
"""

from __future__ import annotations

import argparse

from dlstudy.commands.flags import add_run_arguments, resolve_config

SVM_FLAGS = {"features": "svm.features", "weights": "svm.weights", "multi_class": "svm.multi_class",
             "loss": "svm.loss", "C": "svm.C", "kernel": "svm.kernel"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--features", default=None,
                        help="raw | a backbone whose pooled features the SVM fits: ours (e.g. resnet50), tv:<name> "
                        "or timm:<name> (`dlstudy models` lists them)")
    parser.add_argument("--weights", default=None, help="weights of the feature backbone: imagenet | none | PATH")
    parser.add_argument("--multi-class", dest="multi_class", default=None,
                        choices=["ovr", "crammer_singer", "weston_watkins"], help="multiclass formulation")
    parser.add_argument("--loss", default=None, choices=["squared_hinge", "hinge"], help="OvR loss")
    parser.add_argument("--C", dest="C", type=float, nargs="+", default=None,
                        help="regularisation C; several values: the best on the val split is used")
    parser.add_argument("--kernel", default=None, choices=["linear", "rbf"],
                        help="rbf: random Fourier features (svm.gamma, svm.n_components)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dlstudy.jobs import NewRun, run_job

    cfg = resolve_config(args, "svm", SVM_FLAGS)
    where = NewRun(Path(args.out))  # the job's start names the folder
    metrics = run_job(cfg, where)
    svm = metrics["svm"]
    print(f"run folder: {where.run_dir.path}")
    print(f"test accuracy: {metrics['accuracy']:.4f}  (C={svm['C']:g}, {svm['multi_class']}, {svm['features']}, "
          f"{svm['kernel']})")
    return 0
