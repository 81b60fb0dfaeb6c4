"""Reports: blocks -> `report.md` and a self-contained `report.html`, built from run/study folders alone."""

from dlstudy.report.blocks import Block, Code, Figure, Heading, Paragraph, Table, format_cell

__all__ = ["Block", "Code", "Figure", "Heading", "Paragraph", "Table", "format_cell"]
