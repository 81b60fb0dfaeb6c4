"""`dlstudy export-logs RUN_OR_STUDY --to tensorboard|mlflow`: log folders that already finished, as `--log` would
have logged them live (the same code, replaying history.csv, steps.csv, metrics.json and the figures).

    dlstudy export-logs runs/train-digits-smallcnn-ce-adam --to tensorboard
    dlstudy export-logs runs/losses-quick --to tensorboard,mlflow        # every finished run, then the HParams
    dlstudy export-logs runs/losses-quick --to mlflow --mlflow-uri http://host:5000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dlstudy.commands.flags import tracker_names, use_log_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="RUN_OR_STUDY", help="a finished run folder, or a study folder (`dlstudy "
                        "run` output): each of its finished runs and the study's HParams / MLflow experiment")
    parser.add_argument("--to", dest="log", type=tracker_names, required=True, metavar="TRACKERS",
                        help="tensorboard, mlflow or tensorboard,mlflow (pip install 'dlstudy[tracking]')")
    parser.add_argument("--mlflow-uri", default=None, metavar="URI",
                        help="MLflow tracking server or store (default: $MLFLOW_TRACKING_URI, else OUT/mlflow.db "
                        "beside the folder, artifacts in OUT/mlruns)")


def run(args: argparse.Namespace) -> int:
    from dlstudy.errors import ConfigError
    from dlstudy.tracking import export_run
    from dlstudy.tracking.files import STUDY_FILE
    from dlstudy.tracking.study import log_study, study_runs

    folder = Path(args.folder)
    if not args.log:
        raise ConfigError("--to: expected tensorboard, mlflow or tensorboard,mlflow, got nothing")
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder (expected a finished run folder or a study folder)")
    use_log_flags(args, args.log)
    if (folder / STUDY_FILE).is_file():
        import yaml

        description = (yaml.safe_load((folder / STUDY_FILE).read_text()) or {}).get("description", "")
        runs = study_runs(folder)
        if not runs:
            raise ConfigError(f"{folder}: the study has no finished run to export")
        for run_dir in runs:  # replaced when logged before: the export holds exactly the folder's files
            export_run(run_dir, args.log)
        log_study(folder, args.log, description)
        print(f"{folder}: {len(runs)} run(s) exported to {', '.join(args.log)}")
    else:
        export_run(folder, args.log)
        print(f"{folder}: exported to {', '.join(args.log)}")
    _hint(folder, args.log)
    return 0


def _hint(folder: Path, names: list[str]) -> None:
    """Where to look: the command that opens what was written."""
    from dlstudy.tracking.files import STUDY_FILE, run_context
    from dlstudy.tracking.mlflow_log import tracking_uri

    if "tensorboard" in names:
        print(f"  tensorboard --logdir {folder}")
    if "mlflow" in names:
        out = folder.parent if (folder / STUDY_FILE).is_file() else run_context(folder).out
        print(f"  mlflow ui --backend-store-uri {tracking_uri(out)[0]}")
