"""The report of one run folder, built from the folder's files alone (no job code is imported)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from dlstudy.errors import DlstudyError
from dlstudy.report.blocks import Block, Code, Figure, Heading, Paragraph, Table
from dlstudy.report.render import render_html, render_markdown
from dlstudy.metrics.table import METRICS, headline_keys, interval_keys, is_metadata
from dlstudy.runs import DONE_MARKER, METRIC_KEYS
from dlstudy.io import atomic_write_text, read_csv

SCALAR_KEYS = headline_keys()  # the 'Test metrics' rows: a view of dlstudy.metrics.table.METRICS
MAX_TABLE_ROWS = 60  # longer CSVs are shown head + tail; the file itself is complete
ENV_KEYS = ("command", "git_commit", "seed", "device", "gpu", "cpu", "cpu_count", "torch_threads", "python",
            "torch", "torchvision", "numpy", "cuda", "platform", "start_time", "end_time")


def is_run_dir(path: Path) -> bool:
    """A run folder holds config.yaml or metrics.json (written by RunDir.start / write_metrics)."""
    return (path / "config.yaml").is_file() or (path / "metrics.json").is_file()


def caption_from_name(name: str) -> str:
    """'roc_curves-after' -> 'Roc curves after' (figure/table captions from their file names)."""
    text = Path(name).stem.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]


def _load(run_dir: Path) -> tuple[dict, dict, dict]:
    def read(name: str, loader) -> dict:
        path = run_dir / name
        if not path.is_file():
            return {}
        try:
            data = loader(path.read_text())
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise DlstudyError(f"{path}: cannot be parsed: {exc}") from None
        if not isinstance(data, dict):
            raise DlstudyError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        return data

    return read("config.yaml", yaml.safe_load), read("env.json", json.loads), read("metrics.json", json.loads)


def _metrics_table(metrics: dict) -> Table:
    """Headline metrics; `before`/`after` blocks side by side with their difference."""
    before, after = metrics.get("before"), metrics.get("after")
    if isinstance(before, dict) and isinstance(after, dict):
        rows = []
        for key in SCALAR_KEYS:
            b, a = before.get(key), after.get(key)
            delta = a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
            rows.append([key, b, a, delta if not is_metadata(key) else None])
        return Table(["metric", "before", "after", "change"], rows, "Test metrics before and after training")
    return Table(["metric", "value"], [[k, metrics.get(k)] for k in SCALAR_KEYS if k in metrics], "Test metrics")


def _extra_scalars(metrics: dict) -> Table | None:
    """Scalar entries of metrics.json outside METRIC_KEYS (best C, timings, losses, ...)."""
    rows = [[k, v] for k, v in metrics.items()
            if k not in METRIC_KEYS and k not in ("before", "after") and isinstance(v, (int, float, str, type(None)))]
    return Table(["key", "value"], rows, "Other values recorded by the job") if rows else None


def per_class_table(metrics: dict) -> Table | None:
    per_class = metrics.get("per_class_accuracy")
    if not per_class:
        return None
    k = len(per_class)
    names = metrics.get("class_names") or [str(i) for i in range(k)]
    auc = metrics.get("roc_auc_per_class") or [None] * k
    cm = metrics.get("confusion_matrix") or []
    support = [sum(row) for row in cm] if len(cm) == k else [None] * k
    before = metrics.get("before", {}).get("per_class_accuracy") if isinstance(metrics.get("before"), dict) else None
    columns = ["class", "name", "support", "accuracy", "ROC AUC"] + (["accuracy before"] if before else [])
    rows = []
    for i in range(k):
        row = [i, names[i] if i < len(names) else "", support[i], per_class[i], auc[i] if i < len(auc) else None]
        if before:
            row.append(before[i] if i < len(before) else None)
        rows.append(row)
    return Table(columns, rows, "Per-class test accuracy (recall) and one-vs-rest ROC AUC")


def confusion_table(metrics: dict) -> Table | None:
    cm, names = metrics.get("confusion_matrix"), metrics.get("class_names")
    if not cm or len(cm) > 15:  # bigger matrices are only readable as the figure
        return None
    names = names or [str(i) for i in range(len(cm))]
    rows = [[f"{names[i]}"] + list(row) for i, row in enumerate(cm)]
    return Table(["true \\ predicted"] + [str(n) for n in names], rows, "Confusion matrix (rows = true class)")


def _csv_table(path: Path, caption: str) -> Table:
    rows = [{k: _number(v) for k, v in row.items()} for row in read_csv(path)]  # numbers print to 4 digits
    columns = list(rows[0].keys()) if rows else []
    if len(rows) > MAX_TABLE_ROWS:
        half = MAX_TABLE_ROWS // 2
        gap = {c: "…" for c in columns}
        caption += f" ({len(rows)} rows; first and last {half} shown, full file: {path.name})"
        rows = rows[:half] + [gap] + rows[-half:]
    return Table(columns, rows, caption)


def _history_blocks(run_dir: Path) -> list[Block]:
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    rows = read_csv(path)
    blocks: list[Block] = [Heading("Training history", 2)]
    text = f"{len(rows)} epoch(s) in history.csv."
    scored = [r for r in rows if _float(r.get("val_acc")) is not None]
    if scored:
        best = max(scored, key=lambda r: _float(r["val_acc"]))
        text += f" Best validation accuracy {_float(best['val_acc']):.4f} at epoch {best.get('epoch', '?')}."
    blocks.append(Paragraph(text))
    blocks.append(_csv_table(path, "Per-epoch history"))
    return blocks


def _number(text: Any) -> Any:
    """A CSV cell as int or float when it parses (so tables format it), else unchanged."""
    for cast in (int, float):
        try:
            return cast(text)
        except (TypeError, ValueError):
            pass
    return text


def _float(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


RUN_REPORT_RESAMPLES = 2000  # bootstrap resamples of a run report's intervals (a study's `stats:` sets its own)
INTERVAL_KEYS = interval_keys()  # accuracy (Wilson and Clopper-Pearson rows), then the bootstrapped ones


def interval_table(run_dir: Path, confidence: float = 0.95) -> Table | None:
    """95% intervals of the headline test metrics from predictions.npz: Wilson and Clopper-Pearson for accuracy,
    a percentile bootstrap over the test images for the others. None for runs without saved predictions."""
    from dlstudy.predictions import read_predictions
    from dlstudy.stats import metric_interval

    path = run_dir / "predictions.npz"
    if not path.is_file():
        return None
    preds = read_predictions(path)
    n, k = len(preds.y_true), len(preds.class_names)
    rows = []
    for key in INTERVAL_KEYS:
        # a proportion (accuracy) gets both of its intervals, a bootstrapped metric its percentile interval
        methods = ("wilson", "clopper-pearson") if METRICS[key].interval == "proportion" else ("percentile",)
        for method in methods:
            ci = metric_interval(preds.y_true, preds.scores, key, confidence, resamples=RUN_REPORT_RESAMPLES,
                                 num_classes=k, method=method)
            name = f"{ci.method} ({RUN_REPORT_RESAMPLES} resamples)" if method == "percentile" else ci.method
            rows.append([key, ci.estimate, ci.low, ci.high, name])
    return Table(["metric", "value", "low", "high", "interval"], rows,
                 f"Test metrics with {confidence:.0%} intervals over the {n} test images ({preds.score_kind} "
                 f"ranked by ROC AUC)")


def _env_table(env: dict) -> Table:
    rows = [[k, env[k]] for k in ENV_KEYS if k in env and k != "command"]
    return Table(["key", "value"], rows, "Environment (env.json)")


def _run_title(run_dir: Path) -> str:
    """'seed-0' folders of a study are named with their arm: 'adam/seed-0'."""
    name = run_dir.resolve().name
    return f"{run_dir.resolve().parent.name}/{name}" if name.startswith("seed-") else name


def build_run_report(run_dir: str | Path) -> list[Block]:
    """Report blocks for a run folder: metrics, per-class table, history, tables, figures, command, env, config."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DlstudyError(f"{run_dir}: no such folder")
    if not is_run_dir(run_dir):
        raise DlstudyError(f"{run_dir}: not a run folder (expected config.yaml and metrics.json written by a job)")
    config, env, metrics = _load(run_dir)
    data, model = config.get("data", {}) or {}, config.get("model", {}) or {}
    # finish() stamps end_time, writes this report, then DONE: either one means the job got to its end
    finished = (run_dir / DONE_MARKER).is_file() or bool(env.get("end_time"))
    status = "finished" if finished else "not finished (no DONE marker)"
    blocks: list[Block] = [
        Heading(f"Run {_run_title(run_dir)}", 1),
        Paragraph(f"Task {config.get('task', '?')} on {data.get('name', '?')} with model {model.get('name', '?')}, "
                  f"seed {config.get('seed', env.get('seed', '?'))}; {status}. "
                  f"Git commit {env.get('git_commit', 'unknown')}."),
    ]
    if env.get("command"):
        blocks += [Heading("Command", 2), Code(env["command"], "bash")]
    blocks.append(Heading("Metrics", 2))
    if metrics:
        blocks.append(_metrics_table(metrics))
        for table in (interval_table(run_dir), _extra_scalars(metrics), per_class_table(metrics),
                      confusion_table(metrics)):
            if table is not None:
                blocks.append(table)
    else:
        blocks.append(Paragraph("No metrics.json yet."))
    blocks += _history_blocks(run_dir)
    tables = sorted((run_dir / "tables").glob("*.csv"))
    if tables:
        blocks.append(Heading("Tables", 2))
        blocks += [_csv_table(p, caption_from_name(p.name)) for p in tables]
    figures = sorted((run_dir / "figures").glob("*.png"))
    if figures:
        blocks.append(Heading("Figures", 2))
        blocks += [Figure(p.relative_to(run_dir), caption_from_name(p.name)) for p in figures]
    blocks += [Heading("Environment", 2), _env_table(env)]
    if (run_dir / "config.yaml").is_file():
        blocks += [Heading("Config (resolved)", 2), Code((run_dir / "config.yaml").read_text(), "yaml")]
    return blocks


def write_report(blocks: list[Block], folder: str | Path, name: str = "report") -> tuple[Path, Path]:
    """Write `<folder>/<name>.md` and `<name>.html` atomically; return both paths."""
    folder = Path(folder)
    md_path = atomic_write_text(folder / f"{name}.md", render_markdown(blocks, folder))
    html_path = atomic_write_text(folder / f"{name}.html", render_html(blocks, folder))
    return md_path, html_path


def write_run_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Build and write the run folder's report.md and report.html."""
    return write_report(build_run_report(run_dir), run_dir)


def finish_run(run_dir) -> None:
    """Close a run whose results are all written: end time in env.json, the figures (drawn from the folder's
    files), report.md / report.html, then DONE last (a run whose report crashed is not marked finished, so the
    next `dlstudy run` redoes it)."""
    from dlstudy.figures import draw_run_figures

    run_dir.stamp_end()
    draw_run_figures(run_dir.path)
    write_run_report(run_dir.path)
    run_dir.mark_done()
