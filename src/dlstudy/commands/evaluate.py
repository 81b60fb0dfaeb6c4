"""`dlstudy evaluate`: score a finished train or svm run on a dataset split, into an evaluation folder.

    dlstudy evaluate runs/train-cifar10-airbench-ce-sgd --data cifar10 --data-root ../shared/data
    dlstudy evaluate RUN --data imagefolder --data-root photos/ --split test     # photos/test/<class>/<image>
    dlstudy evaluate RUN --data mnist --split all --out evals/mnist-all

The folder (default RUN_DIR/evaluations/<data>-<split>/) gets metrics.json (every metrics.json key of a run, plus
an "evaluation" block saying what was scored), predictions.npz, the confusion-matrix / ROC / per-class figures
and report.md / report.html. The run's own preprocessing is used (image size, channels, its training statistics).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

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


def data_config(run_cfg, name: str | None, root: str | None):
    """The run's DataConfig when the data is the run's own (so its test split is the run's), else the named
    dataset with the run's split fractions and seed and no caps."""
    data = run_cfg.data
    if name in (None, data.name) and root in (None, data.root):
        return data
    return dataclasses.replace(data, name=name or data.name, root=root, max_train=None, max_eval=None,
                               download=False)


def run(args: argparse.Namespace) -> int:
    from dlstudy.errors import ConfigError
    from dlstudy.inference import evaluate_run, load_run
    from dlstudy.runs import resolve_device

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size: expected >= 1, got {args.batch_size}")
    loaded = load_run(args.run_dir, device=resolve_device(args.device))
    dcfg = data_config(loaded.config, args.data, args.data_root)
    t0 = time.perf_counter()
    preds, notes = evaluate_run(loaded, dcfg, args.split, args.batch_size)
    out = Path(args.out) if args.out else loaded.path / "evaluations" / f"{dcfg.name}-{args.split}"
    info = {"run": str(loaded.path), "data": dcfg.name, "data_root": dcfg.root, "split": args.split,
            "notes": notes, "time_s": time.perf_counter() - t0}
    metrics = write_evaluation(out, loaded, preds, info)
    print(f"evaluation folder: {out}")
    print(f"{dcfg.name} {args.split}: {metrics['n_samples']} images, accuracy {metrics['accuracy']:.4f}, "
          f"macro F1 {metrics['f1_macro']:.4f}")
    for note in notes[1:]:
        print(f"note: {note}")
    return 0


def write_evaluation(out: Path, loaded, preds, info: dict) -> dict:
    """metrics.json, predictions.npz, figures and report.md / .html into `out`; returns the metrics."""
    import numpy as np

    from dlstudy.engine.outputs import save_confusion, save_roc
    from dlstudy.predictions import write_predictions
    from dlstudy.runs import RunDir, environment_info

    metrics = preds.metrics()
    metrics["evaluation"] = {**info, "score_kind": preds.score_kind, "env": environment_info(loaded.device)}
    folder = RunDir(out)
    write_predictions(folder.file("predictions.npz"), preds)
    folder.write_metrics(metrics)
    save_confusion(folder, metrics, "confusion_matrix", f"{info['data']} {info['split']}")
    if len(np.unique(preds.y_true)) > 1:
        save_roc(folder, preds.y_true, preds.scores, preds.class_names, "roc")
    _per_class_figure(folder, metrics)
    _write_report(folder, loaded, metrics, info)
    return metrics


def _per_class_figure(folder, metrics: dict) -> None:
    import matplotlib.pyplot as plt

    from dlstudy.metrics import plot_per_class_accuracy

    k = len(metrics["class_names"])
    fig, ax = plt.subplots(figsize=(min(4 + 0.35 * k, 16), 4))
    plot_per_class_accuracy(metrics["per_class_accuracy"], metrics["class_names"], ax=ax)
    folder.save_figure(fig, "per_class_accuracy")


def _write_report(folder, loaded, metrics: dict, info: dict) -> None:
    """report.md and report.html: what was scored, this evaluation beside the run's own test metrics, intervals,
    the per-class and confusion tables and the figures."""
    from dlstudy.io import read_json
    from dlstudy.report.blocks import Figure, Heading, Paragraph, Table
    from dlstudy.report.run_report import confusion_table, interval_table, per_class_table, write_report

    own = loaded.path / "metrics.json"
    trained = read_json(own) if own.is_file() else {}
    model = loaded.config.model.name if loaded.kind == "network" else "svm"
    height, width = loaded.inputs["image_size"]
    source = f" from `{info['data_root']}`" if info["data_root"] else ""
    setup = [f"Run `{loaded.path}` ({loaded.kind}, {model}; scores: {metrics['score_kind']}).",
             f"Data: {info['data']}{source}, split {info['split']}, {metrics['n_samples']} images, "
             f"{metrics['num_classes']} classes.",
             f"Preprocessing: the run's own ({height}x{width}, {loaded.inputs['channels']} channel(s), "
             "training statistics).", *[f"Note: {note}" for note in info["notes"]]]
    keys = [k for k in ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
                        "roc_auc_macro", "roc_auc_micro", "top5_accuracy") if k in metrics]
    blocks = [Heading(f"Evaluation of {loaded.path.name} on {info['data']} ({info['split']})", 1),
              *[Paragraph(line) for line in setup], Heading("Metrics", 2),
              Table(["metric", "this evaluation", "the run's own test split"],
                    [[k, metrics[k], trained.get(k)] for k in keys], "This evaluation beside the run's metrics.json")]
    blocks += [t for t in (interval_table(folder.path), per_class_table(metrics), confusion_table(metrics)) if t]
    blocks.append(Heading("Figures", 2))
    blocks += [Figure(p.relative_to(folder.path), caption) for p, caption in (
        (folder.figures / "confusion_matrix.png", "Confusion matrix"), (folder.figures / "roc.png", "ROC curves"),
        (folder.figures / "per_class_accuracy.png", "Per-class accuracy")) if p.is_file()]
    write_report(blocks, folder.path)
