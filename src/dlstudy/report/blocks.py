"""Report blocks: the small vocabulary every report (run, study, reproduce) is written in.

A report is a plain list of blocks; `render_markdown` and `render_html` turn it into text. Blocks hold data, never
formatting, so one list renders to both formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union


@dataclass
class Heading:
    text: str
    level: int = 2  # 1 is the report title; sections use 2, subsections 3


@dataclass
class Paragraph:
    text: str  # plain text; rendered escaped in HTML, as-is in Markdown (a blank line splits paragraphs)


@dataclass
class Table:
    columns: list[str]
    rows: list[Any] = field(default_factory=list)  # each a list (in column order) or a dict keyed by column
    caption: str = ""

    def cells(self) -> list[list[str]]:
        """Rows as lists of strings in column order (missing dict keys become empty cells)."""
        out = []
        for row in self.rows:
            values = [row.get(c, "") for c in self.columns] if isinstance(row, dict) else list(row)
            out.append([format_cell(v) for v in values])
        return out


@dataclass
class Figure:
    path: Path  # relative to the report's folder, or absolute
    caption: str = ""


@dataclass
class Code:
    text: str
    lang: str = ""  # e.g. "yaml", "json", "bash"; a hint for Markdown fences


@dataclass
class Link:
    """A table cell that links to another file (e.g. an arm's report): text in Markdown link / <a> in HTML."""

    text: str
    href: str  # relative to the report's folder


Block = Union[Heading, Paragraph, Table, Figure, Code]


def format_cell(value: Any) -> str:
    """Table cell text: floats to 4 significant digits, None to an em dash, everything else str()."""
    if value is None:
        return "—"
    if isinstance(value, Link):
        return value.text
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        return f"{value:.4g}"
    return str(value)
