"""The evaluate job: a finished (or checkpointed) train or svm run scored on a dataset split, into a folder.

    evaluate_into(run_dir, out=None, data=None, data_root=None, split="test", batch_size=None, device="cpu")
        -> (folder, metrics, notes)            # folder default: RUN_DIR/evaluations/<data>-<split>

The folder gets metrics.json (every metrics.json key of a run, plus an "evaluation" block saying what was scored),
predictions.npz, the confusion-matrix / ROC / per-class figures (drawn from those two files by dlstudy.figures)
and report.md / report.html. The run's own preprocessing is used (image size, channels, its training statistics).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from dlstudy.figures import draw_run_figures
from dlstudy.runs import RunDir


def data_config(run_cfg, name: str | None, root: str | None):
    """The run's DataConfig when the data is the run's own (so its test split is the run's), else the named
    dataset with the run's split fractions and seed and no caps."""
    data = run_cfg.data
    if name in (None, data.name) and root in (None, data.root):
        return data
    return dataclasses.replace(data, name=name or data.name, root=root, max_train=None, max_eval=None,
                               download=False)


def evaluate_into(run_dir: str | Path, out: str | Path | None = None, data: str | None = None,
                  data_root: str | None = None, split: str = "test", batch_size: int | None = None,
                  device: str = "cpu") -> tuple[Path, dict, list[str]]:
    """start (load the run) -> score the split -> write the folder; returns (folder, metrics, notes)."""
    from dlstudy.inference import evaluate_run, load_run
    from dlstudy.runs import resolve_device

    loaded = load_run(run_dir, device=resolve_device(device))
    dcfg = data_config(loaded.config, data, data_root)
    t0 = time.perf_counter()
    preds, notes = evaluate_run(loaded, dcfg, split, batch_size)
    folder = Path(out) if out else loaded.path / "evaluations" / f"{dcfg.name}-{split}"
    info = {"run": str(loaded.path), "data": dcfg.name, "data_root": dcfg.root, "split": split,
            "notes": notes, "time_s": time.perf_counter() - t0}
    return folder, write_evaluation(folder, loaded, preds, info), notes


def write_evaluation(out: Path, loaded, preds, info: dict) -> dict:
    """metrics.json, predictions.npz, figures and report.md / .html into `out`; returns the metrics."""
    from dlstudy.predictions import write_predictions
    from dlstudy.runs import environment_info

    metrics = preds.metrics()
    metrics["evaluation"] = {**info, "score_kind": preds.score_kind, "env": environment_info(loaded.device)}
    folder = RunDir(out)
    write_predictions(folder.file("predictions.npz"), preds)
    folder.write_metrics(metrics)
    draw_run_figures(folder.path)
    _write_report(folder, loaded, metrics, info)
    return metrics


def _write_report(folder: RunDir, loaded, metrics: dict, info: dict) -> None:
    """report.md and report.html: what was scored, this evaluation beside the run's own test metrics, intervals,
    the per-class and confusion tables and the figures."""
    from dlstudy.io import read_json
    from dlstudy.metrics.table import score_keys
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
    keys = [k for k in score_keys() if k in metrics]
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
