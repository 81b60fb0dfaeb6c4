"""The "Budget" block of the reproduce report and the results page: a `--minutes` run's budget, the machine, the
measured throughput and steps per arm, and expected vs real minutes per section (each study's budget.json, written
by studies/running/budget.py before the study runs and given its real seconds when it ends)."""

from __future__ import annotations

import json
from pathlib import Path

from dlstudy.report import Block, Heading, Paragraph, Table


def read_budget(study_dir: Path) -> dict | None:
    """The study's budget.json, or None (no budget, or an unreadable file)."""
    try:
        record = json.loads((Path(study_dir) / "budget.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def minutes_text(seconds) -> str:
    return "—" if not isinstance(seconds, (int, float)) else f"{seconds / 60:.1f}"


def _machine(machine: dict) -> str:
    text = machine.get("cpu", "?")
    if machine.get("gpu"):
        text += f", GPU {machine['gpu']}"
    bf16 = "native bf16" if machine.get("native_bf16") else "float32 (no native bf16)"
    return f"{text}; {bf16}; torch {machine.get('torch', '?')}; device {machine.get('device', '?')}"


def budget_blocks(minutes, sections: list[tuple[str, Path]], level: int = 3,
                  planned_s: float | None = None) -> list[Block]:
    """`sections`: [(row label, study folder)] in report order; `planned_s`: the first plan's estimate of the whole
    run (reproduce.json), compared with the real total. Nothing when the run had no time budget."""
    budgets = [(title, read_budget(folder)) for title, folder in sections]
    budgets = [(title, b) for title, b in budgets if b]
    if not minutes or not budgets:
        return []
    rows, arm_rows = [], []
    # the first plan's time: each re-plan records the time since the command started, and sections in report order
    # need not be in the order they ran
    plan_s = min((b["plan_s"] for _, b in budgets if isinstance(b.get("plan_s"), (int, float))), default=0.0)
    expected = real = plan_s
    for title, b in budgets:
        pace = b.get("pace")
        rows.append([title, minutes_text(b.get("section_s")), minutes_text(b.get("expected_s")),
                     minutes_text(b.get("real_s")), f"{pace:.2f}" if isinstance(pace, (int, float)) else "—"])
        expected += b.get("expected_s") or 0.0
        real += b.get("real_s") or 0.0
        for arm, a in (b.get("arms") or {}).items():
            arm_rows.append([title, arm, f"{a.get('steps', 0):,} ({a.get('epochs')} x {a.get('steps_per_epoch'):,})",
                             a.get("runs"), f"{a.get('train_img_s', 0):,.0f}", f"{a.get('eval_img_s', 0):,.0f}",
                             a.get("threads"), minutes_text(a.get("run_s"))])
    rows.append(["planning (data, measurements)", "", minutes_text(plan_s), minutes_text(plan_s), ""])
    first = ""
    if isinstance(planned_s, (int, float)) and planned_s > 0 and real > 0:
        # the total's estimate is the first plan's, the one a user read before anything ran; the sections' are
        # their last re-plans', which include the time the sections before them really took
        expected = planned_s
        first = (f" The first plan, before anything ran, estimated {minutes_text(planned_s)} min for the whole run "
                 f"(the total row): {(planned_s / real - 1) * 100:+.1f}% against the real {minutes_text(real)} min "
                 "(planning and sections; the combined report comes after).")
    rows.append(["total", f"{float(minutes):g}", minutes_text(expected), minutes_text(real), ""])
    return [Heading("Budget", level),
            Paragraph(f"Time budget {float(minutes):g} min (`--minutes`), split by the plan before anything ran "
                      f"(docs/studies.md, \"Time budget\"). Machine: {_machine(budgets[0][1].get('machine') or {})}. "
                      "Throughput measured on this machine before the run (cached per machine). Each section's "
                      "share and expectation are those of the last re-plan before it ran, its estimates times the "
                      "pace (real / planned time of the sections before it)." + first),
            Table(["section", "share (min)", "expected (min)", "real (min)", "pace"], rows,
                  "Expected vs real minutes per section"),
            Table(["section", "arm", "steps a run (epochs x steps)", "runs", "train img/s", "eval img/s", "threads",
                   "expected min a run"], arm_rows, "Measured throughput and budgeted steps per arm")]
