"""Reports: blocks -> `report.md` and a self-contained `report.html`, built from run/study folders alone."""

from dlstudy.report.blocks import Block, Code, Figure, Heading, Link, Paragraph, Table, format_cell
from dlstudy.report.render import render_html, render_markdown
from dlstudy.report.run_report import build_run_report, finish_run, is_run_dir, write_report, write_run_report

__all__ = ["Block", "Code", "Figure", "Heading", "Link", "Paragraph", "Table", "format_cell", "render_html",
           "render_markdown", "build_run_report", "finish_run", "is_run_dir", "write_report", "write_run_report"]
