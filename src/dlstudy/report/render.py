"""Render a list of report blocks to Markdown or to one self-contained HTML file."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from dlstudy.report.blocks import Block, Code, Figure, Heading, Link, Paragraph, Table, format_cell

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
         ".gif": "image/gif"}

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1f2328; line-height: 1.5; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; display: block; overflow-x: auto;
        max-width: 100%; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3em; color: #57606a; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.9em; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 0.85em; border-radius: 4px; }
.missing { color: #cf222e; }
"""


def _figure_path(fig: Figure, base_dir: Path) -> Path:
    path = Path(fig.path)
    return path if path.is_absolute() else Path(base_dir) / path


def _figure_link(fig: Figure, base_dir: Path) -> str:
    """Path of the figure as written in Markdown: relative to the report's folder when possible."""
    path = Path(fig.path)
    if path.is_absolute():
        try:
            path = Path(os.path.relpath(path, Path(base_dir).resolve()))
        except ValueError:  # another drive (Windows)
            pass
    return path.as_posix()


# ------------------------------------------------------------------------------------------------ Markdown


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def _row_values(table: Table) -> list[list]:
    """Raw cell values of every row in column order (dict rows by key, missing keys empty)."""
    return [[row.get(c, "") for c in table.columns] if isinstance(row, dict) else list(row) for row in table.rows]


def _md_table(table: Table) -> str:
    lines = []
    if table.caption:
        lines += [f"*{table.caption}*", ""]
    lines.append("| " + " | ".join(_md_cell(str(c)) for c in table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    for row in _row_values(table):
        cells = [f"[{_md_cell(v.text)}](<{v.href}>)" if isinstance(v, Link) else _md_cell(format_cell(v))
                 for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _md_code(code: Code) -> str:
    fence = "```"
    while fence in code.text:
        fence += "`"
    return f"{fence}{code.lang}\n{code.text.rstrip()}\n{fence}"


def render_markdown(blocks: list[Block], base_dir: str | Path) -> str:
    """Markdown text of `blocks`; figure links are relative to `base_dir` (where report.md is written)."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * max(1, min(6, block.level)) + " " + block.text.replace("\n", " "))
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            parts.append(_md_table(block))
        elif isinstance(block, Figure):
            link = _figure_link(block, Path(base_dir))
            alt = (block.caption or Path(link).stem).replace("]", ")").replace("[", "(").replace("\n", " ")
            text = f"![{alt}](<{link}>)"
            parts.append(text + (f"\n\n*{block.caption}*" if block.caption else ""))
        elif isinstance(block, Code):
            parts.append(_md_code(block))
        else:
            raise TypeError(f"not a report block: {block!r}")
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------ HTML


def _html_table(table: Table) -> str:
    esc = html.escape
    out = ["<table>"]
    if table.caption:
        out.append(f"<caption>{esc(table.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(str(c))}</th>" for c in table.columns) + "</tr></thead><tbody>")
    for row in _row_values(table):
        cells = [f'<a href="{esc(v.href, quote=True)}">{esc(v.text)}</a>' if isinstance(v, Link)
                 else esc(format_cell(v)) for v in row]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _html_figure(fig: Figure, base_dir: Path) -> str:
    """<figure> with the image inlined as a data: URI; a missing or unknown file renders as a visible note."""
    esc = html.escape
    path = _figure_path(fig, base_dir)
    caption = f"<figcaption>{esc(fig.caption)}</figcaption>" if fig.caption else ""
    mime = _MIME.get(path.suffix.lower())
    if mime is None or not path.is_file():
        why = "missing" if mime else "unsupported format"
        return f'<figure><p class="missing">[{why} figure: {esc(str(fig.path))}]</p>{caption}</figure>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = esc(fig.caption or path.stem, quote=True)
    return f'<figure><img alt="{alt}" src="data:{mime};base64,{data}">{caption}</figure>'


def _html_paragraph(text: str) -> str:
    paras = [p for p in text.split("\n\n") if p.strip()]
    return "\n".join("<p>" + html.escape(p).replace("\n", "<br>") + "</p>" for p in paras)


def render_html(blocks: list[Block], base_dir: str | Path, title: str | None = None) -> str:
    """One self-contained HTML page: inline CSS, images embedded base64, every piece of text escaped."""
    base_dir = Path(base_dir)
    if title is None:
        title = next((b.text for b in blocks if isinstance(b, Heading) and b.level == 1), "dlstudy report")
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            level = max(1, min(6, block.level))
            body.append(f"<h{level}>{html.escape(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            body.append(_html_paragraph(block.text))
        elif isinstance(block, Table):
            body.append(_html_table(block))
        elif isinstance(block, Figure):
            body.append(_html_figure(block, base_dir))
        elif isinstance(block, Code):
            cls = f' class="language-{html.escape(block.lang, quote=True)}"' if block.lang else ""
            body.append(f"<pre><code{cls}>{html.escape(block.text.rstrip())}</code></pre>")
        else:
            raise TypeError(f"not a report block: {block!r}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
