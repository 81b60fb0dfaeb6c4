"""`dlstudy results DIR [DIR ...] [--out docs/results.md]`: the results page from reproduce folders, one per tier."""

from __future__ import annotations

import argparse
import shlex


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="`dlstudy reproduce` output folders, one per tier (quick, cpu, full)")
    parser.add_argument("--out", default="docs/results.md", help="the Markdown page to write")


def run(args: argparse.Namespace) -> int:
    from dlstudy.studies.summary.results_page import write_results_page

    # the page names the command that regenerates it: the folders and --out exactly as given
    command = shlex.join(["dlstudy", "results", *args.dirs, "--out", args.out])
    print(write_results_page(args.dirs, args.out, command))
    return 0
