"""The reproduce sections (the reference report's four questions), the three tiers of study files, and the
reproduce folder's record: what both `reproduce` (which runs them) and `reproduce_report` / `results_page` (which
read them) need, so neither imports the other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from dlstudy.errors import ConfigError, DlstudyError
from dlstudy.io import read_json
from dlstudy.studies import CHECKOUT_STUDIES
from dlstudy.studies import STUDY_FILES as PACKAGE_STUDIES


@dataclass(frozen=True)
class Section:
    study: str  # study file stem under studies/ (the section's first study file)
    title: str
    question: str  # what the reference report asked, one line
    # further study file stems the section runs after `study` (Q3: other protocols and datasets), in order
    more: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        """Every study file stem of the section, `study` first."""
        return (self.study,) + self.more

    def parts(self) -> list["Section"]:
        """One Section per study file (study = its stem, same title and question): what `reproduce` runs and
        records, one entry of reproduce.json each."""
        return [dataclasses.replace(self, study=stem, more=()) for stem in self.files]


SECTIONS = (
    Section("svm", "Q1. Multiclass SVM", "A multiclass SVM written from scratch: test accuracy, confusion matrix, "
            "ROC curves."),
    Section("finetune", "Q1 bonus. Fine-tuning before vs after", "A pretrained network fine-tuned on the task: "
            "accuracy, class-wise accuracy and confusion matrix before and after."),
    Section("losses", "Q2. Loss functions", "Cross-entropy vs triplet + cross-entropy, center + cross-entropy and "
            "triplet + SVM: accuracy, precision, recall, F1."),
    Section("optimizers", "Q3. Optimizers", "Vanilla SGD (batch 1), mini-batch SGD, SGD + momentum and Adam: loss "
            "curves and test / train accuracy.",
            # equal-effort tuning on MNIST first, then the reference's protocol as it reads (each optimizer's usual
            # default lr, no tuning), then both on CIFAR-10 with a small CNN, where the optimizers separate
            more=("optimizers-defaults", "optimizers-cifar10", "optimizers-cifar10-defaults")),
)


def section_of(stem: str) -> Section | None:
    """The section a study file stem (a reproduce.json entry's `study`) belongs to; None for none."""
    return next((s for s in SECTIONS if stem in s.files), None)


def file_order(stem: str) -> int:
    """Where a study file stem sits in the reference report's order (SECTIONS, then each section's files)."""
    stems = [f for s in SECTIONS for f in s.files]
    return stems.index(stem) if stem in stems else len(stems)


# what `dlstudy reproduce --only` takes: a section (all its study files) or one study file of a section
ONLY_CHOICES = tuple(dict.fromkeys([s.study for s in SECTIONS] + [f for s in SECTIONS for f in s.files]))

TIERS = ("quick", "cpu", "full")
# shipped study files outside the tiers, run on their own (`dlstudy run studies/<stem>.yaml`)
STANDALONE_STUDIES = ("cifar10-airbench-cpu",)


def study_file(name: str, tier: str) -> Path:
    """The study file of a tier (`<name>-quick.yaml`, `<name>-cpu.yaml`, `<name>.yaml`): the package's copy, else
    the source checkout's `studies/`."""
    if tier not in TIERS:
        raise ConfigError(f"--tier: unknown tier {tier!r}; valid tiers are {list(TIERS)}")
    filename = f"{name}.yaml" if tier == "full" else f"{name}-{tier}.yaml"
    searched = [PACKAGE_STUDIES / filename, CHECKOUT_STUDIES / filename]
    for path in searched:
        if path.is_file():
            return path
    raise ConfigError(f"study file {filename} not found; searched: {', '.join(map(str, searched))}")


def is_reproduce_dir(path: Path) -> bool:
    return (Path(path) / "reproduce.json").is_file()


def load_record(out: Path) -> dict:
    path = Path(out) / "reproduce.json"
    if not path.is_file():
        raise DlstudyError(f"{out}: not a `dlstudy reproduce` folder (no reproduce.json)")
    return read_json(path)
