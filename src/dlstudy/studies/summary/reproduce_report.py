"""The combined report of `dlstudy reproduce`, in the reference report's order, rebuilt from OUT's files alone."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from dlstudy.report import Block, Figure, Heading, Link, Paragraph, Table, write_report
from dlstudy.studies.summary.records import (ArmRun, fmt_mean_std, group_by_arm, mean_std, metric, train_accuracy,
                                             val_accuracy)
from dlstudy.studies.summary.claims import ledger_blocks, study_runs
from dlstudy.studies.summary.sections import file_order, load_record, section_of
from dlstudy.studies.summary.significance import statistics_blocks
from dlstudy.studies.summary.study_report import collect_runs, is_study_dir, load_study_dir, summarize_study

# reference-report metric names -> our metrics.json keys
METRIC_ALIASES = {"test_accuracy": "accuracy", "accuracy": "accuracy", "precision": "precision_macro",
                  "recall": "recall_macro", "f_score": "f1_macro", "f1": "f1_macro", "f1_score": "f1_macro",
                  "train_accuracy": "train_accuracy"}


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [item for k, v in tree.items() for item in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    return [(prefix, tree)]


def _arm_values(runs: list[ArmRun], name: str, block: str | None) -> list:
    if name == "train_accuracy":  # as the Q3 table shows it: train subset, eval mode, best-val epoch
        return [train_accuracy(r) for r in runs]
    return [metric(r, name, block) for r in runs]


def ours_for_key(key: str, by_arm: dict[str, list[ArmRun]]) -> str | None:
    """Our number for a reference key like `arms.<arm>.test_accuracy`, `after.accuracy` or `accuracy`.

    Without an arm in the key: the only arm, or of a several-arm study the arm with the best validation accuracy. None when the key
    is not a metric we record.
    """
    parts = key.split(".")
    name = METRIC_ALIASES.get(parts[-1])
    if name is None:
        return None
    block = next((p for p in parts if p in ("before", "after")), None)
    arm = next((p for p in parts if p in by_arm), None)
    if arm is None and any(p == "arms" for p in parts):
        return "—"  # an arm of the reference we did not run
    candidates = [arm] if arm else list(by_arm)
    if not candidates:
        return "—"  # no finished run (e.g. every run of the study failed)
    scored = []
    for candidate in candidates:
        numbers = [v for v in _arm_values(by_arm[candidate], name, block) if isinstance(v, (int, float))]
        scored.append((mean_std(numbers)[0] if numbers else -math.inf, candidate, numbers))
    # one number for the whole study: the arm with the best *validation* accuracy, so the test number is not
    # itself a selection on test
    best_mean, best_arm, numbers = max(scored, key=lambda s: (val_accuracy(by_arm[s[1]]), s[0]))
    text = fmt_mean_std(numbers)
    return text if arm or len(candidates) == 1 else f"{text} (arm chosen on val: {best_arm})"


def reference_blocks(reference: dict, runs: list[ArmRun]) -> list[Block]:
    """The reference report's numbers beside ours (metric keys), and its notes (text keys) as a paragraph."""
    by_arm = group_by_arm(runs)
    rows, notes = [], []
    for key, value in _flatten(reference):
        if isinstance(value, str) and "." not in key:
            notes.append(f"{key}: {value}")
            continue
        ours = ours_for_key(key, by_arm)
        if ours is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append([key, str(value) if isinstance(value, list) else value, ours])
    blocks: list[Block] = [Paragraph("Reference — " + "; ".join(notes))] if notes else []
    if rows:
        blocks.append(Table(["reference report", "its number", "ours (mean ± std over seeds)"], rows,
                            "The reference report's numbers beside ours"))
    return blocks


def _shows_reference(block: Block) -> bool:
    """Whether a kind's table already puts the reference numbers beside ours (a column or a row label)."""
    if not isinstance(block, Table):
        return False
    labels = list(block.columns) + [(r[0] if isinstance(r, list) and r else "") for r in block.rows]
    return any("reference" in str(label).lower() for label in labels)


def _values(runs: list[ArmRun], *path: str) -> str:
    found = []
    for run in runs:
        node: Any = run.config
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node not in found:
            found.append(node)
    return ", ".join("—" if v is None else str(v) for v in found) or "—"


def setup_paragraph(runs: list[ArmRun], seeds: list[int], seconds: float | None) -> Paragraph:
    """Data, model and budget of a study, read from its runs' resolved config.yaml files."""
    task = _values(runs, "task")
    model = _values(runs, "svm", "features") if task == "svm" else _values(runs, "model", "name")
    text = (f"Data: {_values(runs, 'data', 'name')} (max_train {_values(runs, 'data', 'max_train')}, max_eval "
            f"{_values(runs, 'data', 'max_eval')}). Task: {task}. Model / features: {model}. ")
    sizes = []
    for run in runs:  # metrics.json "data": the split sizes the run really used
        d = run.metrics.get("data") if isinstance(run.metrics, dict) else None
        if isinstance(d, dict):
            line = (f"{(run.config.get('data') or {}).get('name')} at {d['image_size'][0]} px: {d['n_train']:,} train "
                    f"/ {d['n_val']:,} val / {d['n_test']:,} test")
            if line not in sizes:
                sizes.append(line)
    if sizes:
        text += f"Images: {'; '.join(sizes)}. "
    if task != "svm":
        text += (f"Budget: {_values(runs, 'train', 'epochs')} epoch(s), batch size {_values(runs, 'train', 'batch_size')}"
                 f", max steps per epoch {_values(runs, 'train', 'max_steps_per_epoch')}. ")
    text += f"Seeds {seeds}." + (f" Wall time {seconds:.0f} s." if seconds is not None else "")
    return Paragraph(text)


def _rebase(block: Block, folder: str) -> Block:
    """A study block as seen from the reproduce folder: paths under the study folder, headings one level down."""
    if isinstance(block, Figure) and not Path(block.path).is_absolute():
        return dataclasses.replace(block, path=Path(folder) / block.path)
    if isinstance(block, Heading):
        return dataclasses.replace(block, level=min(block.level + 1, 6))
    if isinstance(block, Table):
        def fix(v):
            return Link(v.text, f"{folder}/{v.href}") if isinstance(v, Link) else v
        rows = [{k: fix(v) for k, v in r.items()} if isinstance(r, dict) else [fix(v) for v in r] for r in block.rows]
        return dataclasses.replace(block, rows=rows)
    return block


def _statistics(study, runs: list[ArmRun]) -> list[Block]:
    """The study's intervals and pairwise tests (studies/summary/significance.py); its claims are in the ledger."""
    if not runs:
        return []
    return [Heading("Statistics", 3)] + statistics_blocks(runs, study.stats)


def section_blocks(out: Path, entry: dict, title: str, question: str, quick: bool) -> list[Block]:
    study_dir = out / entry["dir"]
    blocks: list[Block] = [Heading(title, 2), Paragraph(question)]
    if not is_study_dir(study_dir):
        return blocks + [Paragraph(f"Not run ({'; '.join(entry.get('failed', [])) or 'no study folder'}).")]
    summary = summarize_study(study_dir)
    study, runs, status, kind_blocks = summary.study, summary.runs, summary.status, summary.blocks
    blocks.append(setup_paragraph(runs, study.seeds, entry.get("seconds")))
    reference = reference_blocks(study.reference, runs)
    if any(_shows_reference(b) for b in kind_blocks):
        reference = [b for b in reference if not isinstance(b, Table)]  # the kind's table already shows them
    if reference and quick:
        reference.insert(0, Paragraph("Quick mode: other data and a far smaller budget than the reference report, "
                                      "so its numbers are shown for orientation, not as a target."))
    blocks += reference
    blocks += [_rebase(b, entry["dir"]) for b in kind_blocks]
    blocks += _statistics(study, runs)
    finished = sum(1 for *_, s in status if s == "finished")
    failed = entry.get("failed") or []
    text = f"{finished} of {len(status)} runs finished." + (f" Failed: {'; '.join(failed)}." if failed else "")
    blocks.append(Paragraph(text))
    blocks.append(Table(["study report", "summary"], [[Link(f"{entry['dir']}/report.html",
                                                            f"{entry['dir']}/report.html"),
                                                       Link("summary.csv", f"{entry['dir']}/summary.csv")]]))
    return blocks


def build_reproduce_report(out: str | Path) -> list[Block]:
    out = Path(out)
    record = load_record(out)
    env = record.get("env", {})
    quick = record.get("tier", record.get("mode")) == "quick"
    # the reference report's order (and each section's study files in order), whatever order they ran in
    sections = sorted(record["sections"], key=lambda e: file_order(e["study"]))
    blocks: list[Block] = [
        Heading("Reproduction of the reference report", 1),
        Paragraph(f"Tier {record.get('tier', record.get('mode'))}" + (f", budget {record['budget']}" if record.get("budget") else "")
                  + (f", time budget {record['minutes']:g} min" if record.get("minutes") else "")
                  + (f", data root {record['data_root']}" if record.get("data_root") else "")
                  + f". Started {record.get('start_time')}, finished {record.get('end_time')}. Git commit "
                  f"{env.get('git_commit', 'unknown')}; torch {env.get('torch')}, torchvision "
                  f"{env.get('torchvision')}, device {env.get('device')}."),
        Table(["question", "study", "time (s)", "failed runs", "report"],
              [[section_of(e["study"]).title if section_of(e["study"]) else e["study"], e["dir"], e.get("seconds"),
                len(e.get("failed", [])), Link("report", f"{e['dir']}/report.html")] for e in sections],
              "Sections, in the reference report's order"),
    ]
    from dlstudy.studies.summary.budget_block import budget_blocks

    blocks += budget_blocks(record.get("minutes"), [(e["dir"], out / e["dir"]) for e in sections], level=2,
                            planned_s=record.get("planned_s"))
    blocks += claims_section(out, sections, record.get("tier", record.get("mode")))
    for entry in sections:
        section = section_of(entry["study"])
        title, question = (section.title, section.question) if section else (entry["study"], "")
        if section is not None and section.more:  # a section of several study files: name each
            title = f"{title}: {entry['dir']}"
        blocks += section_blocks(out, entry, title, question, quick)
        if section is not None and section.more and entry["study"] == section.files[-1]:
            blocks += protocol_section(out, [e for e in sections if e["study"] in section.files], section.title)
    blocks += [Heading("Command and environment", 2), Paragraph(f"Command: {env.get('command', '?')}"),
               Table(["key", "value"], [[k, v] for k, v in env.items() if k != "command"], "Environment")]
    return blocks


def write_reproduce_report(out: str | Path) -> tuple[Path, Path]:
    return write_report(build_reproduce_report(out), out)


def _read_studies(out: Path, entries: list[dict]) -> list[tuple[Path, object, dict]]:
    """(study folder, StudyConfig, runs by arm) of each entry whose study folder exists."""
    found = []
    for entry in entries:
        study_dir = out / entry["dir"]
        if is_study_dir(study_dir):
            study, _ = load_study_dir(study_dir)
            found.append((study_dir, study, group_by_arm(collect_runs(study_dir, study)[0])))
    return found


def claims_section(out: Path, entries: list[dict], tier: str) -> list[Block]:
    """The claims ledger of this reproduce folder (one tier): studies/summary/claims.py."""
    from dlstudy.config import StatsConfig

    studies = _read_studies(out, entries)
    stats = studies[0][1].stats if studies else StatsConfig()
    return [Heading("Claims ledger: which of the reference report's findings hold here", 2)] + ledger_blocks(
        [study_runs(d, study, groups) for d, study, groups in studies], stats, tier)


def protocol_section(out: Path, entries: list[dict], title: str) -> list[Block]:
    """A section of several study files (Q3): one table with a column block per study (dataset · protocol)."""
    from dlstudy.studies.summary.protocols import block_label, protocol_table

    studies = [(d, study, groups) for d, study, groups in _read_studies(out, entries) if groups]
    if not studies:
        return []
    reference = ((studies[0][1].reference or {}).get("arms") or {})
    return [Heading(f"{title}: every protocol and dataset", 2),
            protocol_table([(block_label(d, groups), groups) for d, _, groups in studies], reference)]
