"""Report blocks -> Markdown / self-contained HTML, the run report built from a hand-made run folder, the CLI."""

from __future__ import annotations

import base64
import html.parser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dlstudy.cli import main
from dlstudy.report import (Code, Figure, Heading, Link, Paragraph, Table, build_run_report, render_html,
                            render_markdown, write_run_report)
from dlstudy.io import atomic_write_csv, atomic_write_json, atomic_write_text


def _png(path: Path, color: str = "red") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1], color=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


class _Collector(html.parser.HTMLParser):
    """Collects tags, attributes and text of an HTML page (the stdlib parser, no browser)."""

    def __init__(self):
        super().__init__()
        self.tags, self.text, self.srcs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.srcs += [v for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Collector:
    collector = _Collector()
    collector.feed(page)
    return collector


# ------------------------------------------------------------------------------------------------ blocks


def test_markdown_renders_every_block(tmp_path):
    _png(tmp_path / "figures" / "roc.png")
    blocks = [Heading("Title", 1), Paragraph("Some text."), Table(["a", "b|c"], [[1, 0.123456], {"a": None}], "cap"),
              Figure(Path("figures/roc.png"), "ROC curves"), Code("x = 1\n```\ny", "python"), Heading("Sub", 3)]
    md = render_markdown(blocks, tmp_path)
    assert md.startswith("# Title\n\nSome text.")
    assert "*cap*" in md and "| a | b\\|c |" in md and "| 1 | 0.1235 |" in md and "| — |  |" in md
    assert "![ROC curves](<figures/roc.png>)" in md
    assert "````python\nx = 1\n```\ny\n````" in md  # a fence longer than any fence inside the code
    assert "\n### Sub\n" in md


def test_markdown_absolute_figure_is_made_relative(tmp_path):
    fig = _png(tmp_path / "a" / "figures" / "x.png")
    md = render_markdown([Figure(fig)], tmp_path)
    assert "(<a/figures/x.png>)" in md


def test_html_is_self_contained_and_embeds_png(tmp_path):
    png = _png(tmp_path / "figures" / "cm.png")
    page = render_html([Heading("Run", 1), Figure(Path("figures/cm.png"), "Confusion matrix")], tmp_path)
    parsed = _parse(page)
    assert parsed.tags.count("img") == 1
    (src,) = parsed.srcs
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()
    assert "<style>" in page and "<title>Run</title>" in page
    # no external assets: nothing fetched from a URL or a relative file
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<link" not in page and "<script" not in page


def test_html_escapes_all_text(tmp_path):
    evil = "<script>alert('x')</script> & \"q\""
    blocks = [Heading(evil, 1), Paragraph(evil), Table([evil], [[evil]], evil), Code(evil, 'x"><b'),
              Figure(Path("missing<.png"), evil)]
    page = render_html(blocks, tmp_path)
    assert "<script>" not in page and "<b" not in page.replace("<body", "").replace("<br", "")
    parsed = _parse(page)
    assert parsed.tags.count("script") == 0
    text = "".join(parsed.text)
    assert text.count(evil) >= 5  # heading, paragraph, caption, header cell, cell (+ code), all as text
    assert "missing figure: missing&lt;.png" in page


def test_links_render_in_both_formats(tmp_path):
    table = Table(["arm", "report"], [["a", Link("report", "a/seed-0/report.html")]])
    assert "[report](<a/seed-0/report.html>)" in render_markdown([table], tmp_path)
    assert '<a href="a/seed-0/report.html">report</a>' in render_html([table], tmp_path)


def test_unsupported_block_is_an_error(tmp_path):
    with pytest.raises(TypeError, match="not a report block"):
        render_markdown(["text"], tmp_path)


# ------------------------------------------------------------------------------------------------ run report


def make_run_folder(path: Path, before_after: bool = True) -> Path:
    """A run folder written by hand in the dlstudy.runs contract (no job code involved)."""
    names = ["cat", "dog", "bird"]
    cm_after, cm_before = [[8, 1, 1], [0, 9, 1], [2, 0, 8]], [[4, 3, 3], [3, 4, 3], [3, 3, 4]]

    def block(cm, auc):
        n = sum(map(sum, cm))
        return {"accuracy": sum(cm[i][i] for i in range(3)) / n, "per_class_accuracy": [cm[i][i] / 10 for i in range(3)],
                "precision_macro": 0.8, "recall_macro": 0.83, "f1_macro": 0.81, "confusion_matrix": cm,
                "roc_auc_macro": auc, "roc_auc_micro": auc + 0.01, "roc_auc_per_class": [auc, auc, auc],
                "num_classes": 3, "class_names": names, "n_samples": n}

    metrics = dict(block(cm_after, 0.9))
    if before_after:
        metrics.update(before=block(cm_before, 0.5), after=block(cm_after, 0.9))
    metrics["best_C"] = 0.1
    atomic_write_json(path / "metrics.json", metrics)
    atomic_write_text(path / "config.yaml", "task: train\nseed: 3\ndata:\n  name: cifar10\nmodel:\n  name: resnet18\n")
    atomic_write_json(path / "env.json", {"command": "dlstudy train --data cifar10 --seed 3", "git_commit": "abc123",
                                          "torch": "2.14.1", "python": "3.11", "seed": 3, "device": "cpu"})
    atomic_write_csv(path / "history.csv", [{"epoch": e, "train_loss": 1 / e, "val_acc": 0.5 + e / 10}
                                            for e in range(1, 4)])
    atomic_write_csv(path / "tables" / "per_step.csv", [{"step": i, "loss": 1.0 / (i + 1)} for i in range(100)])
    _png(path / "figures" / "confusion_matrix.png")
    _png(path / "figures" / "roc_curves.png", "blue")
    atomic_write_text(path / "DONE", "now\n")
    return path


def test_run_report_shows_everything_from_the_folder(tmp_path):
    run = make_run_folder(tmp_path / "run")
    blocks = build_run_report(run)
    md = render_markdown(blocks, run)
    tables = [b for b in blocks if isinstance(b, Table)]
    metrics_table = tables[0]
    assert metrics_table.columns == ["metric", "before", "after", "change"]
    acc_row = next(r for r in metrics_table.rows if r[0] == "accuracy")
    assert acc_row[1] == pytest.approx(12 / 30) and acc_row[2] == pytest.approx(25 / 30)
    assert acc_row[3] == pytest.approx(13 / 30)
    per_class = next(t for t in tables if "class" in t.columns)
    assert [r[1] for r in per_class.rows] == ["cat", "dog", "bird"]
    assert [r[2] for r in per_class.rows] == [10, 10, 10]  # support = confusion-matrix row sums
    for text in ("dlstudy train --data cifar10 --seed 3", "abc123", "2.14.1", "best_C", "Best validation accuracy "
                 "0.8000 at epoch 3", "Per step", "100 rows", "figures/confusion_matrix.png", "Roc curves",
                 "name: resnet18"):
        assert text in md, text
    page = render_html(blocks, run)
    assert page.count("data:image/png;base64,") == 2


def test_write_run_report_writes_both_files_atomically(tmp_path):
    run = make_run_folder(tmp_path / "run", before_after=False)
    md_path, html_path = write_run_report(run)
    assert md_path == run / "report.md" and html_path == run / "report.html"
    assert "| accuracy | 0.8333 |" in md_path.read_text()
    assert not list(run.glob(".*.tmp"))


def test_report_cli_renders_run_and_rejects_other_folders(tmp_path, capsys):
    run = make_run_folder(tmp_path / "run")
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(run / "report.md"), str(run / "report.html")]
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_corrupt_metrics_is_a_clear_error(tmp_path, capsys):
    run = make_run_folder(tmp_path / "run")
    (run / "metrics.json").write_text("{not json")
    assert main(["report", str(run)]) == 2
    assert "metrics.json: cannot be parsed" in capsys.readouterr().err


def _chromium() -> str:
    """The headless browser; missing, the test fails under CI=true (.ci/run installs it) and skips elsewhere."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        message = "headless Chromium not installed (Debian: apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{message}; CI=true, so the browser check must run (see .ci/run)")
        pytest.skip(message)
    return browser


def test_report_html_renders_in_headless_chromium(tmp_path):
    browser = _chromium()
    run = make_run_folder(tmp_path / "run")
    _, html_path = write_run_report(run)
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--screenshot={shot}", "--window-size=1200,1600",
           html_path.as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert shot.is_file() and shot.stat().st_size > 10_000, result.stderr[-2000:]
