"""`dlstudy results`: the results page (docs/results.md), each table of the reference report with our numbers
beside it, one column per tier that has been run (quick, cpu, full), and where every number came from.

Built from `dlstudy reproduce` folders alone, one per tier. Deterministic: the same folders give the same bytes
(no clock; the only paths shown are the folders as given on the command line and paths relative to them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dlstudy.config import StudyConfig
from dlstudy.errors import DlstudyError
from dlstudy.report import Block, Code, Heading, Paragraph, Table, render_markdown
from dlstudy.io import atomic_write_text
from dlstudy.studies.summary.records import ArmRun, fmt_mean_std, group_by_arm, metric, train_accuracy
from dlstudy.studies.summary.sections import SECTIONS, TIERS, is_reproduce_dir, load_record, section_of
from dlstudy.studies.summary.reproduce_report import METRIC_ALIASES, ours_for_key, setup_paragraph
from dlstudy.studies.summary.study_report import collect_runs, is_study_dir, load_study_dir

TIER_HELP = {
    "quick": "the embedded 8x8 digits data and small models, CPU minutes (`dlstudy reproduce --quick`): other data "
             "and a far smaller budget than the reference report, so its numbers are for orientation, not a target",
    "cpu": "the reference report's data (CIFAR-10, Tiny ImageNet, MNIST) at a budget sized for about an hour on "
           "2 CPU cores (`dlstudy reproduce --tier cpu`)",
    "full": "the reference report's data at its scale, a GPU job (`dlstudy reproduce --tier full`)",
}


@dataclass(frozen=True)
class Measure:
    """One row per arm of a results table: a metric of our runs and the reference report's number for it."""

    label: str
    metric: str  # our metrics.json key (reference keys map to it through METRIC_ALIASES)
    block: str | None = None  # "before" / "after" (fine-tuning), None for top-level metrics
    value: Callable[[ArmRun], Any] | None = None  # how to read it from a run; default records.metric

    def of(self, run: ArmRun) -> Any:
        return self.value(run) if self.value else metric(run, self.metric, self.block)


MEASURES: dict[str, tuple[Measure, ...]] = {
    "svm": (Measure("test accuracy", "accuracy"),),
    "finetune": (Measure("accuracy before", "accuracy", "before"),
                 Measure("class-wise accuracy before", "per_class_accuracy", "before"),
                 Measure("accuracy after", "accuracy", "after"),
                 Measure("class-wise accuracy after", "per_class_accuracy", "after")),
    "losses": (Measure("accuracy", "accuracy"), Measure("precision", "precision_macro"),
               Measure("recall", "recall_macro"), Measure("F-score", "f1_macro")),
    # train accuracy as the Q3 study reports it: train subset, eval mode, at the best-val epoch
    "optimizers": (Measure("test accuracy", "accuracy"),
                   Measure("train accuracy", "train_accuracy", value=train_accuracy)),
}


@dataclass
class TierStudy:
    """One study of a tier's reproduce folder, read back."""

    entry: dict  # its reproduce.json section: study, file, dir, seconds, failed
    study: StudyConfig | None  # None when the study folder has no study.yaml (it never ran)
    arms: list[str]  # planned arms, in study order
    by_arm: dict[str, list[ArmRun]]  # finished runs per arm, seeds sorted
    planned: int  # arm x seed runs planned


@dataclass
class Tier:
    name: str  # quick | cpu | full
    given: str  # the folder as given on the command line
    record: dict  # reproduce.json
    studies: dict[str, TierStudy]  # by section key: svm, finetune, losses, optimizers


def _load_study(study_dir: Path, entry: dict) -> TierStudy:
    if not is_study_dir(study_dir):
        return TierStudy(entry, None, [], {}, 0)
    study, _ = load_study_dir(study_dir)
    runs, status = collect_runs(study_dir, study)
    arms = list(dict.fromkeys(arm for arm, _, _ in status))
    return TierStudy(entry, study, arms, group_by_arm(runs), len(status))


def load_tier(given: str) -> Tier:
    """A reproduce folder and its studies; DlstudyError naming the folder when it is not one."""
    path = Path(given)
    if not is_reproduce_dir(path):
        raise DlstudyError(f"{given}: not a `dlstudy reproduce` folder (no reproduce.json)")
    try:
        record = load_record(path)
    except ValueError as exc:  # invalid JSON
        raise DlstudyError(f"{given}/reproduce.json: not valid JSON ({exc})") from exc
    name = record.get("tier", record.get("mode"))  # folders from before the cpu tier have "mode": quick | full
    if name not in TIERS:
        raise DlstudyError(f"{given}/reproduce.json: unknown tier {name!r}; expected one of {list(TIERS)}")
    studies = {e["study"]: _load_study(path / e["dir"], e) for e in record.get("sections", [])}
    return Tier(name, given, record, studies)


def load_tiers(folders: list[str]) -> tuple[list[Tier], list[Tier]]:
    """(one Tier per folder in tier order (quick, cpu, full), the budget points: folders of a study run on its
    share of a larger budget, `--as-part-of`); two folders of one tier's own run are an error."""
    tiers: dict[str, Tier] = {}
    points: list[Tier] = []
    for given in folders:
        tier = load_tier(given)
        if tier.record.get("as_part_of"):
            points.append(tier)
            continue
        if tier.name in tiers:
            raise DlstudyError(f"{given}: tier {tier.name!r} is also the tier of {tiers[tier.name].given}; give "
                               f"one reproduce folder per tier")
        tiers[tier.name] = tier
    return [tiers[name] for name in TIERS if name in tiers], points


# ------------------------------------------------------------------------------------------------ values


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _seeds(n: int) -> str:
    return f"({n} seed{'' if n == 1 else 's'})"


MAX_CLASS_VALUES = 20  # longer per-class lists stay in the run reports


def _fmt_list(values: list) -> str:
    return "[" + ", ".join(f"{v:.2f}" if _finite(v) else "—" for v in values) + "]"


def fmt_ours(values: list) -> str:
    """Our number over seeds: "0.912 ± 0.004 (2 seeds)"; per-class lists: the mean per class; none: "—"."""
    lists = [v for v in values if isinstance(v, list) and v]
    if lists:  # (seeds, K) per-class accuracies -> (K,) mean over the seeds that have a number
        columns = [[row[k] for row in lists if k < len(row) and _finite(row[k])]
                   for k in range(max(map(len, lists)))]
        if len(columns) > MAX_CLASS_VALUES:  # e.g. a 200-class source task: the run's own report has the table
            return f"{len(columns)} classes: see the run's report {_seeds(len(lists))}"
        means = [sum(c) / len(c) if c else None for c in columns]
        return f"{_fmt_list(means)} {_seeds(len(lists))}"
    numbers = [v for v in values if _finite(v)]
    return f"{fmt_mean_std(numbers)} {_seeds(len(numbers))}" if numbers else "—"


def fmt_reference(value: Any) -> str:
    if isinstance(value, list):
        return _fmt_list(value)
    return f"{value:g}" if _finite(value) else "—"


def _reference_key(node: Any, measure: Measure) -> str | None:
    """The key of `node` (a `reference` mapping) holding the reference report's number for `measure`."""
    if measure.block:
        node = node.get(measure.block) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return None
    for key, value in node.items():
        if METRIC_ALIASES.get(key, key) == measure.metric and (_finite(value) or isinstance(value, list)):
            return key
    return None


def _lookup(node: dict, measure: Measure) -> Any:
    key = _reference_key(node, measure)
    if key is None:
        return None
    return (node[measure.block] if measure.block else node)[key]


def reference_value(studies: list[TierStudy], arm: str | None, measure: Measure) -> Any:
    """The reference report's number for an arm (by name, from `reference.arms.<arm>`), else the study-wide one
    (`reference.<metric>` / `reference.<block>.<metric>`): the first tier's study file that has it."""
    for ts in studies:
        reference = ts.study.reference or {}
        arm_node = ((reference.get("arms") or {}).get(arm) or {}) if arm else {}
        for node in (arm_node, reference):
            value = _lookup(node, measure)
            if value is not None:
                return value
    return None


def reference_label(studies: list[TierStudy], arm: str) -> str:
    """The reference report's row an arm stands for (the text values of `reference.arms.<arm>`), or ""."""
    for ts in studies:
        node = ((ts.study.reference or {}).get("arms") or {}).get(arm)
        if isinstance(node, dict):
            texts = [v for v in node.values() if isinstance(v, str)]
            if texts:
                return ", ".join(texts)
    return ""


# ------------------------------------------------------------------------------------------------ tables


def union_arms(orders: list[list[str]]) -> list[str]:
    """Arms of every tier, each tier's order kept: a new arm goes right after the arm before it in its tier."""
    merged: list[str] = []
    for order in orders:
        previous = None
        for arm in order:
            if arm not in merged:
                merged.insert(merged.index(previous) + 1 if previous is not None else len(merged), arm)
            previous = arm
    return merged


def aligned_rows(tiers: list[Tier], key: str, labels: dict[str, str]) -> list[list[str | None]]:
    """One row per reference-report row, with each tier's arm for it (None where a tier has none).

    Tiers name arms differently when their models differ (densenet121-ce in quick, densenet-ce in cpu); an arm that
    stands for the same reference row (the same `reference.arms.<arm>` text) shares the row. Arms without a
    reference row, or a second arm of one tier for the same row, get rows of their own, keyed by name."""
    keyed: list[list[tuple[str, str]]] = []  # per tier: (row key, arm) in the tier's order
    for tier in tiers:
        ts = tier.studies.get(key)
        seen, pairs = set(), []
        for arm in (ts.arms if ts and ts.study is not None else []):
            row_key = f"ref:{labels[arm]}" if labels.get(arm) and labels[arm] not in seen else f"arm:{arm}"
            seen.add(labels.get(arm))
            pairs.append((row_key, arm))
        keyed.append(pairs)
    order = union_arms([[k for k, _ in pairs] for pairs in keyed])
    return [[dict(pairs).get(k) for pairs in keyed] for k in order]


def _ours_cell(ts: TierStudy | None, arm: str, measure: Measure) -> str:
    if ts is None or arm not in ts.by_arm:
        return "—"
    return fmt_ours([measure.of(run) for run in ts.by_arm[arm]])


def _headline_cell(ts: TierStudy, arm: str) -> str:
    """The arm's test accuracy (after fine-tuning in Q1 bonus), as the section tables write it."""
    section = section_of(ts.entry.get("study", ""))
    key = section.study if section else "svm"
    measure = next(m for m in MEASURES[key] if m.metric == "accuracy" and m.block != "before")
    return _ours_cell(ts, arm, measure)


def _study_wide(present: list[TierStudy], measure: Measure) -> tuple[str, Any] | None:
    """(key, value) of a study-wide reference number (`reference.<metric>`, `reference.<block>.<metric>`)."""
    for ts in present:
        reference = ts.study.reference or {}
        key = _reference_key(reference, measure)
        if key is not None and _finite(_lookup(reference, measure)):
            return key, _lookup(reference, measure)
    return None


def _chosen_rows(key: str, tiers: list[Tier], present: list[TierStudy], label_column: bool) -> list[list]:
    """Rows "arm chosen on val": for a study-wide reference number, the arm each tier picks by validation accuracy
    (reproduce_report's rule, so the test number is not itself a selection on test)."""
    measures, rows = MEASURES[key], []
    for measure in measures:
        found = _study_wide(present, measure)
        if found is None:
            continue
        dotted = f"{measure.block}.{found[0]}" if measure.block else found[0]
        cells = [(ours_for_key(dotted, t.studies[key].by_arm) or "—") if key in t.studies and t.studies[key].by_arm
                 else "—" for t in tiers]
        label = ["arm chosen on val"] + ([measure.label] if len(measures) > 1 else [])
        rows.append(label + ([""] if label_column else []) + [fmt_reference(found[1])] + cells)
    return rows


def section_table(key: str, tiers: list[Tier]) -> Table | None:
    """The reference report's table of one section: arm (x measure) rows, reference then one column per tier."""
    present = [t.studies[key] for t in tiers if key in t.studies and t.studies[key].study is not None]
    if not present:
        return None
    measures = MEASURES[key]
    labels = {arm: reference_label(present, arm) for ts in present for arm in ts.arms}
    label_column = any(labels.values())
    row_arms = aligned_rows(tiers, key, labels)
    columns = (["arm"] + (["measure"] if len(measures) > 1 else []) + (["reference report row"] if label_column
               else []) + ["reference"] + [t.name for t in tiers])
    rows = []
    for arm_of_tier in row_arms:
        names = list(dict.fromkeys(a for a in arm_of_tier if a))
        first = names[0]
        for measure in measures:
            row = [" / ".join(names)] + ([measure.label] if len(measures) > 1 else []) + (
                [labels[first]] if label_column else [])
            ours = [_ours_cell(t.studies.get(key), arm, measure) if arm else "—" for t, arm in zip(tiers, arm_of_tier)]
            if all(cell == "—" for cell in ours):
                continue  # a measure no tier has for this arm (e.g. "before" of a from-scratch arm)
            row.append(fmt_reference(reference_value(present, first, measure)))
            rows.append(row + ours)
    rows += _chosen_rows(key, tiers, present, label_column)
    caption = (f"{measures[0].label}: " if len(measures) == 1 else "") + (
        "the reference report's number beside ours, mean ± std over seeds (sample std); — : not run in that tier "
        "or no such number")
    return Table(columns, rows, caption)


def _notes(key: str, tiers: list[Tier]) -> list[Paragraph]:
    """The study files' reference notes (text values: source, expected), one paragraph per tier."""
    paragraphs = []
    for tier in tiers:
        ts = tier.studies.get(key)
        reference = (ts.study.reference or {}) if ts and ts.study else {}
        texts = [f"{k}: {v}" for k, v in reference.items() if isinstance(v, str)]
        if texts:
            paragraphs.append(Paragraph(f"Reference notes of the {tier.name} study file — " + "; ".join(texts)))
    return paragraphs


# ------------------------------------------------------------------------------------------------ provenance


def fmt_duration(seconds: float | None) -> str:
    if not _finite(seconds):
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _machine(env: dict) -> str:
    text = f"{env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores, device {env.get('device', '?')}"
    if env.get("gpu"):
        text += f", GPU {env['gpu']}" + (f" (CUDA {env['cuda']})" if env.get("cuda") else "")
    return text + (f"; {env['platform']}" if env.get("platform") else "")


def run_table(tier: Tier) -> Table:
    record, env = tier.record, tier.record.get("env") or {}
    total = sum(s.get("seconds") or 0 for s in record.get("sections", []))
    budget = record.get("budget") or (f"--minutes {record['minutes']:g}" if record.get("minutes")
                                      else "the study files' own")
    if record.get("as_part_of"):
        budget = f"--as-part-of {record['as_part_of']:g}: {record['minutes']:.1f} min, its share of that tier budget"
    rows = [["folder", tier.given], ["tier", tier.name], ["budget", budget],
            ["started", record.get("start_time")], ["finished", record.get("end_time")],
            ["git commit", env.get("git_commit", "unknown")], ["command", env.get("command", "?")],
            ["machine", _machine(env)],
            ["versions", f"python {env.get('python')}, torch {env.get('torch')}, torchvision {env.get('torchvision')}"
                         f", numpy {env.get('numpy')}"],
            ["data root", record.get("data_root") or "—"],
            ["overrides (--set, budget)", json.dumps(record.get("overrides") or {}, sort_keys=True)],
            ["wall time", f"{fmt_duration(total)} (sum of the sections below)"]]
    return Table(["key", "value"], rows, f"Run of the {tier.name} tier (reproduce.json)")


def sections_table(tier: Tier) -> Table:
    titles = {stem: s.title for s in SECTIONS for stem in s.files}
    rows = []
    for key, ts in tier.studies.items():
        runs = [run for runs in ts.by_arm.values() for run in runs]
        setup = setup_paragraph(runs, ts.study.seeds, None).text if ts.study and runs else "—"
        failed = "; ".join(ts.entry.get("failed") or []) or "none"
        rows.append([titles.get(key, key), ts.entry.get("dir"), Path(str(ts.entry.get("file", "—"))).name,
                     fmt_duration(ts.entry.get("seconds")), f"{len(runs)} of {ts.planned}", failed, setup])
    return Table(["section", "study folder", "study file", "wall time", "runs finished", "failed", "setup"], rows,
                 f"Sections of the {tier.name} tier: data, model and budget read from the runs' config.yaml")


# ------------------------------------------------------------------------------------------------ claims, Q3


def ledger_section(tiers: list[Tier]) -> list[Block]:
    """The claims ledger of each tier (studies/summary/claims.py): verdict, effect, test, Holm p, footing."""
    from dlstudy.config import StatsConfig
    from dlstudy.studies.summary.claims import ledger_blocks, study_runs

    blocks: list[Block] = [Heading("Claims ledger: which of the reference report's findings hold, where", 2)]
    for tier in tiers:
        present = [(key, ts) for key, ts in tier.studies.items() if ts.study is not None]
        stats = present[0][1].study.stats if present else StatsConfig()
        studies = [study_runs(Path(tier.given) / ts.entry["dir"], ts.study, ts.by_arm) for _, ts in present]
        blocks += [Heading(f"Tier {tier.name}", 3)] + ledger_blocks(studies, stats, tier.name)
    return blocks


def protocol_tables(section, tiers: list[Tier]) -> list[Table]:
    """A section of several study files (Q3): per tier, one column block per study (dataset · protocol)."""
    from dlstudy.studies.summary.protocols import block_label, protocol_table

    tables = []
    for tier in tiers:
        present = [tier.studies[stem] for stem in section.files
                   if stem in tier.studies and tier.studies[stem].study is not None and tier.studies[stem].by_arm]
        if not present:
            continue
        reference = (present[0].study.reference or {}).get("arms") or {}
        blocks = [(block_label(Path(tier.given) / ts.entry["dir"], ts.by_arm), ts.by_arm) for ts in present]
        tables.append(protocol_table(blocks, reference, fmt_ours, caption=(
            f"{section.title}, tier {tier.name}: one column per study (dataset · protocol, seeds), mean ± sample std "
            f"over seeds (n seeds) of the best-validation epoch's weights; lr: what the seeds trained with (tuned: "
            f"chosen on val); reference: the reference report's number (its own setup)")))
    return tables


# ------------------------------------------------------------------------------------------------ page


def _header(tiers: list[Tier], command: str) -> list[Block]:
    given = {t.name: t.given for t in tiers}
    return [
        Heading("Results: the reference report beside ours", 1),
        Paragraph("This page is generated, not written by hand: `dlstudy results` reads `dlstudy reproduce` "
                  "folders, one per tier, and writes it. Each table is one of the reference report's: its numbers "
                  "(from each tier's study file, `reference`) beside ours, the mean ± sample std over seeds of the "
                  "runs' metrics.json with the number of seeds. The last section gives the date, commit, command, "
                  "machine and wall time of each run. Re-running the command on the same folders writes the same "
                  "page, byte for byte. Regenerate it with:"),
        Code(command, "bash"),
        Table(["tier", "what it runs", "folder"],
              [[name, TIER_HELP[name], given.get(name, "not run yet")] for name in TIERS], "Tiers"),
    ]


def build_results_page(folders: list[str], command: str) -> list[Block]:
    """The page's blocks: header, one table per reference-report table, then each tier's provenance."""
    from dlstudy.studies.summary.against_budget import against_budget_blocks

    tiers, points = load_tiers(folders)
    blocks = _header(tiers, command) + ledger_section(tiers)
    for section in SECTIONS:
        blocks += [Heading(section.title, 2), Paragraph(section.question)]
        tables = protocol_tables(section, tiers) if section.more else [section_table(section.study, tiers)]
        tables = [t for t in tables if t is not None]
        blocks += _notes(section.study, tiers) + (tables or [Paragraph("Not run in any tier.")])
    blocks += against_budget_blocks(tiers, points, _headline_cell)
    blocks.append(Heading("Where the numbers come from", 2))
    for tier in tiers + points:
        blocks += [Heading(f"Tier {tier.name}: {tier.given}", 3), run_table(tier), sections_table(tier)]
        blocks += tier_budget(tier)
    return blocks


def tier_budget(tier: Tier) -> list[Block]:
    """The tier's "Budget" block (a `--minutes` run): budget, machine, throughput, expected vs real minutes."""
    from dlstudy.studies.summary.budget_block import budget_blocks

    folders = [ts.entry.get("dir", key) for key, ts in tier.studies.items()]
    return budget_blocks(tier.record.get("minutes"), [(d, Path(tier.given) / d) for d in folders], level=4,
                         planned_s=tier.record.get("planned_s"))


def write_results_page(folders: list[str], out: str | Path, command: str) -> Path:
    """Write the page to `out` atomically (the page is complete or the old one is kept)."""
    out = Path(out)
    return atomic_write_text(out, render_markdown(build_results_page(folders, command), out.parent))
