"""The results page's "Accuracy against budget" block: a study run on its share of a larger tier budget
(`dlstudy reproduce --tier cpu --only STUDY --as-part-of 240`) beside the same study in the tier's own run.

    blocks = against_budget_blocks(tiers, points, cell)    # cell(tier_study, arm) -> "0.412 (1 seed)"
"""

from __future__ import annotations

from typing import Callable

from dlstudy.report import Block, Heading, Paragraph, Table
from dlstudy.studies.summary.budget_block import minutes_text  # one way to write seconds as minutes on the page


def _column(tier, ts) -> str:
    budget = tier.record.get("as_part_of") or tier.record.get("minutes")
    budget = f"{float(budget):g}-min tier" if budget else "epochs of the study file"
    return f"{budget} ({minutes_text(ts.entry.get('seconds'))} min, {tier.given})"


def against_budget_blocks(tiers: list, points: list, cell: Callable) -> list[Block]:
    """One table per study of each budget point (a reproduce folder with `as_part_of`): its arms' headline
    metric in the tier's own run (when that tier is on the page) and at the larger budget, the study's real
    minutes in each column header."""
    if not points:
        return []
    blocks: list[Block] = [
        Heading("Accuracy against budget", 2),
        Paragraph("What more CPU time buys: a study of a tier run again on the share of a larger budget that a "
                  "plan of the whole tier gives it (`dlstudy reproduce --only STUDY --as-part-of MINUTES`), "
                  "beside the same study in the tier's own run. Each column: the tier budget, the study's real "
                  "minutes and the folder; each cell the test accuracy (after fine-tuning for Q1 bonus), mean ± "
                  "sample std over seeds.")]
    for point in points:
        base = next((t for t in tiers if t.name == point.name), None)
        for stem, ts in point.studies.items():
            if ts.study is None or not ts.by_arm:
                continue
            columns = [(base, base.studies[stem])] if base and stem in base.studies else []
            columns.append((point, ts))
            arms = list(dict.fromkeys(a for _, c in columns for a in c.arms))
            rows = [[arm] + [cell(c, arm) for _, c in columns] for arm in arms]
            blocks.append(Table(["arm"] + [_column(t, c) for t, c in columns], rows,
                                f"{ts.study.name}: test accuracy against budget (tier {point.name})"))
    return blocks
