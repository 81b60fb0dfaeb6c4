"""The study report (report.md / report.html / summary.csv), rebuilt from the study folder alone."""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path

import yaml

from dlstudy.config import StudyConfig, from_dict
from dlstudy.errors import DlstudyError
from dlstudy.report import Block, Code, Heading, Link, Paragraph, Table, write_report
from dlstudy.runs import DONE_MARKER
from dlstudy.io import atomic_write_csv, read_json
from dlstudy.studies import KINDS, get_summarizer
from dlstudy.studies.summary.arms import expand_arms
from dlstudy.studies.summary.records import ArmRun, load_arm_run

log = logging.getLogger(__name__)
ENV_KEYS = ("git_commit", "python", "torch", "torchvision", "numpy", "device", "cpu", "cpu_count", "gpu",
            "platform", "time")


def is_study_dir(path: Path) -> bool:
    return (Path(path) / "study.yaml").is_file()


def load_study_dir(study_dir: Path) -> tuple[StudyConfig, dict]:
    """The study as it was run (study.yaml) and its env.json."""
    study_dir = Path(study_dir)
    if not is_study_dir(study_dir):
        raise DlstudyError(f"{study_dir}: not a study folder (no study.yaml; `dlstudy run` writes it)")
    study = from_dict(StudyConfig, yaml.safe_load((study_dir / "study.yaml").read_text()) or {},
                      f"{study_dir / 'study.yaml'}")
    env_path = study_dir / "env.json"
    env = read_json(env_path) if env_path.is_file() else {}
    return study, env


def collect_runs(study_dir: Path, study: StudyConfig) -> tuple[list[ArmRun], list[tuple[str, int, str]]]:
    """Finished runs in study order, and (arm, seed, status) of every planned run.

    A finished run whose files cannot be read (a damaged metrics.json) is left out of the numbers with status
    "unreadable" and a warning naming the file; `dlstudy run` redoes it."""

    runs, status = [], []
    for arm in expand_arms(study):
        for seed in study.seeds:
            path = study_dir / arm.name / f"seed-{seed}"
            if (path / DONE_MARKER).is_file() and (path / "metrics.json").is_file():
                try:
                    runs.append(load_arm_run(path, arm.name, seed))
                    status.append((arm.name, seed, "finished"))
                except DlstudyError as exc:
                    log.warning("%s; run marked unreadable in the report (`dlstudy run` redoes it)", exc)
                    status.append((arm.name, seed, "unreadable"))
            elif (path / "error.txt").is_file():
                status.append((arm.name, seed, "failed"))
            else:
                status.append((arm.name, seed, "missing" if not path.exists() else "unfinished"))
    return runs, status


def failure_reason(error_file: Path, limit: int = 300) -> str:
    """The first line of a failed run's error: the raised exception's message (a dlstudy error's alone, e.g.
    "training diverged at epoch 1 step 3 (loss nan); ..."; "RuntimeError: ..." otherwise), from its error.txt (a
    traceback, or the one line a study driver wrote)."""
    try:
        lines = error_file.read_text(errors="replace").splitlines()
    except OSError:
        return "failed (no readable error.txt)"
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:  # the last exception block: frames are indented, the exception line is not
        lines = [line for line in lines[starts[-1] + 1:] if line.strip() and not line[0].isspace()]
    first = next((line.strip() for line in lines if line.strip()), "failed (empty error.txt)")
    name, sep, message = first.partition(": ")
    if sep and name.startswith("dlstudy.errors."):
        first = message
    elif sep and "." in name and " " not in name:
        first = f"{name.rpartition('.')[2]}: {message}"
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _summarize(study_dir: Path, study: StudyConfig, runs: list[ArmRun]) -> tuple[list[Block], list[dict]]:
    """The kind's summary; a kind that raises falls back to the generic one with a note in the report."""
    if not runs:
        return [Paragraph("No finished runs yet.")], []
    try:
        return get_summarizer(study.kind)(study_dir, study, runs)
    except DlstudyError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug in one kind's summary must not lose the study's results
        log.error("study kind %r: summary failed, using the generic one:\n%s", study.kind, traceback.format_exc())
        blocks, rows = get_summarizer("generic")(study_dir, study, runs)
        note = Paragraph(f"The {study.kind!r} summary failed ({type(exc).__name__}: {exc}); generic summary shown.")
        return [note] + blocks, rows


@dataclass
class StudySummary:
    """A study folder read back from its files and summarised by its kind: one call for every report built on it."""

    study: StudyConfig  # study.yaml, as run
    env: dict  # env.json
    runs: list[ArmRun]  # the finished runs, in study order
    status: list[tuple[str, int, str]]  # (arm, seed, status) of every planned run
    blocks: list[Block]  # the kind's results blocks
    rows: list[dict]  # the kind's summary.csv rows, one per arm


def summarize_study(study_dir: str | Path) -> StudySummary:
    """Load a study folder (DlstudyError when it is not one) and summarise it with its kind."""
    study_dir = Path(study_dir)
    study, env = load_study_dir(study_dir)
    runs, status = collect_runs(study_dir, study)
    blocks, rows = _summarize(study_dir, study, runs)
    return StudySummary(study, env, runs, status, blocks, rows)


def _statistics(study: StudyConfig, runs: list[ArmRun]) -> list[Block]:
    """Intervals and pairwise tests (studies/summary/significance.py); a failure there costs the section, not the report."""
    from dlstudy.studies.summary.significance import statistics_blocks

    if not runs:
        return []
    try:
        blocks = statistics_blocks(runs, study.stats)
    except Exception as exc:  # noqa: BLE001 - the results above must still be written
        log.error("study %s: statistics failed:\n%s", study.name, traceback.format_exc())
        blocks = [Paragraph(f"The statistics could not be computed ({type(exc).__name__}: {exc}).")]
    return [Heading("Statistics", 2)] + blocks if blocks else []


def _runs_table(status: list[tuple[str, int, str]], runs: list[ArmRun], study_dir: Path) -> Table:
    by_key = {(r.arm, r.seed): r for r in runs}
    rows = []
    for arm, seed, state in status:
        run = by_key.get((arm, seed))
        rel = f"{arm}/seed-{seed}"
        link = Link("report", f"{rel}/report.html") if (study_dir / rel / "report.html").is_file() else "—"
        if state == "failed":
            link = Link("error.txt", f"{rel}/error.txt")
        rows.append([arm, seed, state, run.metrics.get("accuracy") if run else None, link])
    return Table(["arm", "seed", "status", "test accuracy", "run report"], rows, "Every arm x seed run folder")


def _demote(block: Block) -> Block:
    """A kind's headings sit under the report's "Results" section."""
    if isinstance(block, Heading):
        return Heading(block.text, min(block.level + 1, 6))
    return block


def build_study_report(study_dir: str | Path) -> tuple[list[Block], list[dict]]:
    """Blocks of the study report and the summary.csv rows, from the folder's files alone."""
    study_dir = Path(study_dir)
    summary = summarize_study(study_dir)
    study, env, runs, status, kind_blocks, rows = (summary.study, summary.env, summary.runs, summary.status,
                                                   summary.blocks, summary.rows)
    n_arms = len({a for a, _, _ in status})
    failed = [f"{a}/seed-{s}" for a, s, st in status if st == "failed"]
    unreadable = [f"{a}/seed-{s}" for a, s, st in status if st == "unreadable"]
    blocks: list[Block] = [Heading(f"Study {study.name}", 1)]
    if study.description:
        blocks.append(Paragraph(study.description.strip()))
    kind_help = KINDS[study.kind].help if study.kind in KINDS else study.kind
    blocks.append(Paragraph(f"Kind {study.kind} ({kind_help}); {n_arms} arm(s) x {len(study.seeds)} seed(s) "
                            f"{study.seeds}; {len(runs)} of {len(status)} runs finished. Numbers are mean ± std "
                            f"over seeds (sample std)."))
    if failed:
        blocks.append(Table(["run", "reason"], [[run, failure_reason(study_dir / run / "error.txt")] for run in failed],
                            "Failed runs (the whole error is in each run's error.txt)"))
    if unreadable:
        blocks.append(Paragraph(f"Unreadable runs (finished, but metrics.json or config.yaml is damaged; left out "
                                f"of the numbers, `dlstudy run` redoes them): {', '.join(unreadable)}."))
    blocks += [Heading("Results", 2)] + [_demote(b) for b in kind_blocks]
    blocks += _statistics(study, runs)
    blocks += [Heading("Runs", 2), _runs_table(status, runs, study_dir)]
    blocks += [Heading("Study file", 2), Code((study_dir / "study.yaml").read_text(), "yaml")]
    if env.get("overrides"):
        blocks.append(Paragraph(f"Command-line overrides (--set): {json.dumps(env['overrides'])}"))
    blocks.append(Heading("Command and environment", 2))
    if env.get("command"):
        blocks.append(Code(env["command"], "bash"))
    blocks.append(Table(["key", "value"], [[k, env[k]] for k in ENV_KEYS if k in env], "Environment (env.json)"))
    return blocks, rows


def write_study_report(study_dir: str | Path) -> tuple[Path, Path]:
    """Write summary.csv, report.md and report.html of a study folder; return the report paths."""
    study_dir = Path(study_dir)
    blocks, rows = build_study_report(study_dir)
    if rows:
        atomic_write_csv(study_dir / "summary.csv", rows)
    return write_report(blocks, study_dir)
