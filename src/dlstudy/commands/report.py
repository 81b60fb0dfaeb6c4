"""`dlstudy report DIR`: rebuild report.md and report.html of a run folder (its figures redrawn from its files too),
a study folder or a reproduce folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from dlstudy.errors import DlstudyError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="a run folder (config.yaml, metrics.json), a study folder "
                        "(study.yaml, from `dlstudy run`) or a `dlstudy reproduce` output folder")


def render_folder(path: Path) -> tuple[Path, Path]:
    """Detect what `path` is and write its report; returns (report.md, report.html)."""
    from dlstudy.report import is_run_dir, write_run_report
    from dlstudy.studies.summary.study_report import is_study_dir, write_study_report

    if not path.exists():
        raise DlstudyError(f"{path}: no such folder")
    if not path.is_dir():
        raise DlstudyError(f"{path}: not a folder; give a run folder or a study folder")
    from dlstudy.runs import check_output_folder

    check_output_folder(path, "DIR")  # a read-only folder: one clear error before any report is built
    if is_study_dir(path):
        return write_study_report(path)
    if is_run_dir(path):
        from dlstudy.figures import draw_run_figures

        draw_run_figures(path)  # redrawn from metrics.json / predictions.npz / history.csv, like finish_run does
        return write_run_report(path)
    from dlstudy.studies.summary.reproduce_report import write_reproduce_report
    from dlstudy.studies.summary.sections import is_reproduce_dir

    if is_reproduce_dir(path):
        return write_reproduce_report(path)
    raise DlstudyError(f"{path}: not a run folder (no config.yaml or metrics.json), not a study folder (no "
                       f"study.yaml) and not a `dlstudy reproduce` folder (no reproduce.json)")


def run(args: argparse.Namespace) -> int:
    md_path, html_path = render_folder(Path(args.dir))
    print(md_path)
    print(html_path)
    return 0
