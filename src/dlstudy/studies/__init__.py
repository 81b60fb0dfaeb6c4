"""Studies: arms x seeds run from a YAML file, summarised by a per-kind function into report blocks.

`KINDS` maps a study's `kind` to the module holding its summary function

    summarize(study_dir: Path, study: StudyConfig, runs: list[ArmRun]) -> tuple[list[Block], list[dict]]

returning the report blocks of the study's results section and the rows of `summary.csv` (one per arm).
Modules are imported only when a study of that kind is summarised; a kind whose module is missing falls back to
`generic` with a logged note, so a study always gets a report.

    running/   plan a study, search lrs, hand its runs to an executor, write the report (imports kinds, summary)
    kinds/     the per-kind `summarize` functions named in KINDS (import summary.records)
    summary/   records, statistics, study and reproduce reports, the results page (never imports running)
    files/     the study files of the three tiers (STUDY_FILES); the checkout's top-level `studies/` links here
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

STUDY_FILES = Path(__file__).resolve().parent / "files"  # shipped in the package, so an installed wheel has them
CHECKOUT_STUDIES = Path(__file__).resolve().parents[3] / "studies"  # the checkout's link, if the package moved


@dataclass(frozen=True)
class StudyKind:
    module: str  # module with `summarize(study_dir, study, runs) -> (blocks, summary_rows)`
    help: str


KINDS: dict[str, StudyKind] = {
    "generic": StudyKind("dlstudy.studies.kinds.generic", "per-arm mean ± std of the headline metrics and a bar chart"),
    "svm": StudyKind("dlstudy.studies.kinds.svm", "Q1: SVM accuracy, confusion matrix and ROC per arm"),
    "finetune": StudyKind("dlstudy.studies.kinds.finetune", "Q1 bonus: fine-tuning, metrics before vs after"),
    "losses": StudyKind("dlstudy.studies.kinds.losses", "Q2: cross-entropy vs triplet / center loss"),
    "optimizers": StudyKind("dlstudy.studies.kinds.optimizers", "Q3: optimizers at equal effort, curves and table"),
}


def get_summarizer(kind: str) -> Callable:
    """The `summarize` function of `kind`; falls back to generic (logged) when the kind's module is missing."""
    from dlstudy.errors import ConfigError

    if kind not in KINDS:
        raise ConfigError(f"kind: unknown study kind {kind!r}; valid kinds are {sorted(KINDS)}")
    module_name = KINDS[kind].module
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        log.warning("study kind %r: module %s not found; using the generic summary", kind, module_name)
        module = importlib.import_module(KINDS["generic"].module)
    return module.summarize
