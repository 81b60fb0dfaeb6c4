"""`dlstudy` command line: a registry of subcommands, each a module with `add_arguments` and `run`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass

from dlstudy import __version__
from dlstudy.errors import DlstudyError


@dataclass(frozen=True)
class Command:
    module: str  # dlstudy.commands.<name>: add_arguments(parser) and run(args) -> int
    help: str


COMMANDS: dict[str, Command] = {
    "datasets": Command("dlstudy.commands.datasets", "list registered datasets, where they are looked for, and whether found"),
    "models": Command("dlstudy.commands.models", "list the backbones model.name takes (ours, tv:, timm:) with params, "
                      "feature size and whether ImageNet weights are on disk"),
    "svm": Command("dlstudy.commands.svm", "fit our multiclass SVM on raw pixels or CNN features and evaluate it"),
    "train": Command("dlstudy.commands.train", "train / fine-tune a model, evaluated before and after"),
    "run": Command("dlstudy.commands.run", "run a study file (arms x seeds) into a study folder"),
    "reproduce": Command("dlstudy.commands.reproduce", "run the whole reference report (SVM, fine-tuning, losses, optimizers)"),
    "evaluate": Command("dlstudy.commands.evaluate", "score a finished train or svm run on a dataset split (metrics, "
                        "predictions, figures)"),
    "predict": Command("dlstudy.commands.predict", "label image files or folders with a finished run (CSV)"),
    "compare": Command("dlstudy.commands.compare", "pairwise significance tests between runs or a study's arms "
                       "on the same test images"),
    "export-logs": Command("dlstudy.commands.export_logs", "log finished run or study folders to TensorBoard / MLflow "
                           "(what --log does live)"),
    "export": Command("dlstudy.commands.export", "write a finished run's classifier as one ONNX or TorchScript "
                      "graph, checked against its own test predictions"),
    "report": Command("dlstudy.commands.report", "render a run or study folder to report.md and report.html"),
    "results": Command("dlstudy.commands.results", "write the results page (docs/results.md): the reference report's "
                       "tables beside ours, per tier, from reproduce folders"),
}


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" only where a default is set and the help text does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" not in text and action.default not in (None, False, [], argparse.SUPPRESS)
                and action.option_strings):
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlstudy",
        description="Controlled image-classification studies (SVM, fine-tuning, losses, optimizers) judged by "
                    "from-scratch metrics. `dlstudy COMMAND --help` for each command.")
    parser.add_argument("--version", action="version", version=f"dlstudy {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        module = importlib.import_module(command.module)  # command modules import heavy libraries lazily
        sp = sub.add_parser(name, help=command.help, description=command.help,
                            formatter_class=_HelpFormatter)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except DlstudyError as exc:
        print(f"dlstudy {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code  # 2: bad input or environment; 1: a run that failed (e.g. diverged)
    except KeyboardInterrupt:
        hint = getattr(args, "interrupt_hint", None)  # set by a command that can be resumed, e.g. train
        print(f"dlstudy {args.command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
