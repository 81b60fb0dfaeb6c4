"""The reference report's claims, defined once (`CLAIMS`), and the claims ledger: each claim checked against the
runs of every study of its kind in one tier (a `dlstudy reproduce` folder), for the reproduce report and the
results page alike.

A claim names two arms by their study-file names (each tier's files name them differently: densenet121-ce in
quick, densenet-ce in cpu; the first name a study has is used) and a rule:

    better      A's test `metric` is higher than B's: significance.compare_arms (exact McNemar on the shared test
                images for one seed, a paired t-test over seeds when there are several)
    larger_gap  A's train - test accuracy gap is larger than each other arm's ("vanilla SGD overfits": the
                reference's 0.27 against <= 0.07, not merely a gap above zero, which every arm has):
                significance.compare_gaps against each arm of B; an intersection-union test, so its p is the largest
                of those p's, and the effect shown is against the arm with the largest gap among them

Holm-Bonferroni then adjusts the p-values over the ledger's family: every check of one tier that has a p-value.
A verdict reads the adjusted p at level 1 - confidence: supported (the effect has the claimed sign), contradicted
(the opposite sign), not detectable (p above the level), not checked (an arm is missing, no saved predictions ...).
Each row also says on what footing the arms were compared: equal steps, equal epochs or equal CPU-minutes, from the
run folders (steps.csv, metrics.json train_time_s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from dlstudy.config import StatsConfig
from dlstudy.report import Block, Paragraph, Table
from dlstudy.studies.summary.records import ArmRun, mean_std, metric
from dlstudy.studies.summary.significance import Comparison, compare_arms, compare_gaps, fmt_p


@dataclass(frozen=True)
class Claim:
    """One comparative claim of the reference report."""

    id: str
    text: str  # as the reference report says it
    kind: str  # the study kind whose runs check it (losses, finetune, optimizers)
    arm_a: tuple[str, ...]  # the arm the claim favours, by its name in each tier's study files (first present wins)
    arm_b: tuple[str, ...]  # better: the arm it beats (first present); larger_gap: every arm A's gap must exceed
    rule: str = "better"  # better | larger_gap (see the module docstring)
    metric: str = "accuracy"  # metrics.json key compared (better); larger_gap compares train - test accuracy
    direction: str = "higher"  # the claim holds when A's value is higher than B's
    reference: str = ""  # the reference report's numbers behind the claim


RULES = ("better", "larger_gap")
CLAIMS: dict[str, Claim] = {c.id: c for c in (
    Claim("densenet-beats-resnet", "DenseNet121 beats ResNet18 (both with cross-entropy)", "losses",
          ("densenet-ce", "densenet121-ce"), ("resnet-ce", "resnet18-ce"), reference="0.478 vs 0.438"),
    Claim("ce-beats-triplet-svm", "ResNet18: cross-entropy beats triplet loss + SVM", "losses",
          ("resnet-ce", "resnet18-ce"), ("resnet-triplet+svm", "resnet18-triplet+svm"), reference="0.438 vs 0.326"),
    Claim("ce-beats-center", "ResNet18: cross-entropy beats center loss + CE", "losses",
          ("resnet-ce", "resnet18-ce"), ("resnet-center+ce", "resnet18-center+ce"), reference="0.438 vs 0.431"),
    Claim("ce-beats-triplet-ce", "DenseNet121: cross-entropy beats triplet + CE", "losses",
          ("densenet-ce", "densenet121-ce"), ("densenet-triplet+ce", "densenet121-triplet+ce"),
          reference="0.478 vs 0.470"),
    Claim("finetune-beats-scratch", "Fine-tuning a pretrained network beats training it from scratch", "finetune",
          ("airbench-pretrained",), ("airbench-scratch",), reference="0.90 after fine-tuning (no scratch control)"),
    Claim("adam-beats-momentum", "Adam beats SGD + momentum", "optimizers", ("minibatch-adam",),
          ("minibatch-sgd-momentum",), reference="0.885 vs 0.880"),
    Claim("minibatch-beats-batch1", "Mini-batch SGD beats vanilla SGD (batch 1)", "optimizers", ("minibatch-sgd",),
          ("vanilla-sgd",), reference="0.838 vs 0.684"),
    Claim("batch1-overfits", "Vanilla SGD (batch 1) overfits: its train - test gap is larger than the other "
          "optimizers'", "optimizers", ("vanilla-sgd",), ("minibatch-sgd", "minibatch-sgd-momentum", "minibatch-adam"),
          rule="larger_gap", metric="train_accuracy - accuracy", reference="gap 0.27 against <= 0.07"),
)}


@dataclass
class StudyRuns:
    """One study of a tier as the ledger reads it."""

    label: str  # the study as the ledger names it (its folder; Q3: dataset · protocol)
    kind: str
    groups: dict[str, list[ArmRun]]  # finished runs by arm, in study order


@dataclass
class LedgerRow:
    claim: Claim
    study: str
    arms: str  # "A vs B" as compared
    comparison: Comparison | None  # None: not checked
    footing: str
    note: str = ""  # why not checked

    def verdict(self, alpha: float) -> str:
        c = self.comparison
        if c is None or not math.isfinite(c.pvalue):
            return "not checked"
        p = c.p_holm if math.isfinite(c.p_holm) else c.pvalue
        if p >= alpha:
            return "not detectable"
        higher = c.difference > 0
        return "supported" if higher == (self.claim.direction == "higher") else "contradicted"


# ------------------------------------------------------------------------------------------------ footing


def total_steps(run: ArmRun) -> int | None:
    """Optimizer steps of a run: the last global_step of steps.csv (read from the file's end: batch-1 runs log
    hundreds of thousands of rows), or None without one."""
    path = run.path / "steps.csv"
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        columns = fh.readline().decode().strip().split(",")
        fh.seek(0, 2)
        fh.seek(max(fh.tell() - 4096, 0))
        lines = [line for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    if "global_step" not in columns or not lines:
        return None
    try:
        return int(float(lines[-1].split(",")[columns.index("global_step")]))
    except (ValueError, IndexError):  # only the header: no step logged
        return None


def _mean(values: list) -> float:
    return mean_std([v for v in values if isinstance(v, (int, float))])[0]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def whole_passes(runs: list[ArmRun]) -> bool:
    """Whether every run's epochs were whole passes over its training images: a budgeted run (`--minutes`) caps its
    epochs at train.max_steps_per_epoch, so two arms' "6 epochs" may be 105 and 70 steps of a 281-step pass."""
    for run in runs:
        train = run.config.get("train") or {}
        cap, batch = train.get("max_steps_per_epoch"), train.get("batch_size")
        n_train = (metric(run, "data") or {}).get("n_train")
        if cap and batch and n_train and cap * batch < n_train:
            return False
    return True


def footing(arm_a: str, runs_a: list[ArmRun], arm_b: str, runs_b: list[ArmRun]) -> str:
    """On what budget two arms were compared: equal steps, equal epochs or equal CPU-minutes (within 10%), and, when
    that is not minutes, how their training times compare."""
    steps = [_mean([total_steps(r) for r in runs]) for runs in (runs_a, runs_b)]
    epochs = [_mean([metric(r, "epochs") for r in runs]) for runs in (runs_a, runs_b)]
    seen = [_mean([(metric(r, "data") or {}).get("n_train") for r in runs]) for runs in (runs_a, runs_b)]
    secs = [_mean([metric(r, "train_time_s") for r in runs]) for runs in (runs_a, runs_b)]
    have_time = all(math.isfinite(s) and s > 0 for s in secs)
    if all(math.isfinite(s) for s in steps) and steps[0] == steps[1]:
        base = f"equal steps ({steps[0]:,.0f})"
    elif all(math.isfinite(e) for e in epochs + seen) and epochs[0] == epochs[1] and seen[0] == seen[1] \
            and whole_passes(runs_a + runs_b):
        base = f"equal epochs ({epochs[0]:g} of {seen[0]:,.0f} images)"
        if all(math.isfinite(s) for s in steps):
            base += f"; {arm_a} {steps[0]:,.0f} steps, {arm_b} {steps[1]:,.0f}"
    elif have_time and abs(secs[0] / secs[1] - 1) <= 0.1:
        return f"equal CPU-minutes ({_duration(secs[0])} vs {_duration(secs[1])})"
    else:
        base = "unequal budgets" if all(math.isfinite(e) for e in epochs) else "budget not recorded"
    if not have_time:
        return base
    return f"{base}; {arm_a} trained in {secs[0] / secs[1]:.2f}x the time of {arm_b} ({_duration(secs[0])} vs " \
           f"{_duration(secs[1])})"


# ------------------------------------------------------------------------------------------------ checking


def _first(names: tuple[str, ...], groups: dict[str, list[ArmRun]]) -> str | None:
    return next((n for n in names if n in groups), None)


def check(claim: Claim, study: StudyRuns, stats: StatsConfig) -> LedgerRow:
    """One claim against one study's runs (p-values not yet Holm-adjusted)."""
    groups = study.groups
    a = _first(claim.arm_a, groups)
    others = [n for n in claim.arm_b if n in groups]
    if claim.rule == "better":
        others = others[:1]
    if a is None or not others:
        missing = " / ".join(claim.arm_a if a is None else claim.arm_b)
        return LedgerRow(claim, study.label, "—", None, "—", f"no finished run of {missing}")
    if claim.rule == "better":
        b = others[0]
        c = compare_arms(a, groups[a], b, groups[b], stats, claim.metric)
        return LedgerRow(claim, study.label, f"{a} vs {b}", c, footing(a, groups[a], b, groups[b]), c.note)
    # larger_gap: A's gap above every other arm's; shown against the arm with the largest gap of those
    comparisons = [compare_gaps(a, groups[a], b, groups[b], stats) for b in others]
    tested = [c for c in comparisons if math.isfinite(c.pvalue)]
    if len(tested) < len(comparisons):
        bad = next(c for c in comparisons if not math.isfinite(c.pvalue))
        return LedgerRow(claim, study.label, f"{a} vs {bad.arm_b}", None, "—", bad.note)
    closest = min(tested, key=lambda c: c.difference)  # the other arm with the largest gap
    p = max(c.pvalue for c in tested) if closest.difference > 0 else closest.pvalue
    shown = Comparison(a, closest.arm_b, closest.difference, closest.low, closest.high, p,
                       f"{closest.test}; intersection-union over {len(tested)} arms (p: the largest)", closest.n_test)
    return LedgerRow(claim, study.label, f"{a} vs {closest.arm_b} (largest other gap)", shown,
                     footing(a, groups[a], closest.arm_b, groups[closest.arm_b]))


def build_ledger(studies: list[StudyRuns], stats: StatsConfig) -> list[LedgerRow]:
    """Every claim against every study of its kind, in claim order then study order (a claim without one: a
    "not checked" row); Holm over the rows that have a p-value."""
    from dlstudy.stats import holm

    rows = []
    for claim in CLAIMS.values():
        mine = [study for study in studies if study.kind == claim.kind]
        rows += [check(claim, study, stats) for study in mine] or [
            LedgerRow(claim, "—", "—", None, "—", f"no {claim.kind} study in this tier")]
    tested = [r.comparison for r in rows if r.comparison is not None and math.isfinite(r.comparison.pvalue)]
    if tested:
        for c, adjusted in zip(tested, holm([c.pvalue for c in tested])):
            c.p_holm = float(adjusted)
    return rows


def _effect(row: LedgerRow) -> str:
    c = row.comparison
    if c is None or not math.isfinite(c.difference):
        return "—"
    what = "gap A - gap B" if row.claim.rule == "larger_gap" else f"{row.claim.metric} A - B"
    interval = f" [{c.low:+.3f}, {c.high:+.3f}]" if math.isfinite(c.low) else ""
    return f"{what}: {c.difference:+.3f}{interval}"


def ledger_blocks(studies: list[StudyRuns], stats: StatsConfig, tier: str) -> list[Block]:
    """The ledger of one tier: a paragraph naming the family and the test rules, and the table."""
    rows = build_ledger(studies, stats)
    alpha = 1 - stats.confidence
    family = sum(1 for r in rows if r.comparison is not None and math.isfinite(r.comparison.pvalue))
    cells = [[r.claim.text, r.study, r.arms, r.claim.reference or "—", _effect(r),
              r.comparison.test if r.comparison is not None else "—",
              fmt_p(r.comparison.pvalue) if r.comparison is not None else "—",
              fmt_p(r.comparison.p_holm) if r.comparison is not None else "—",
              r.verdict(alpha) + (f" ({r.note})" if r.note and r.verdict(alpha) == "not checked" else ""),
              r.footing] for r in rows]
    text = (f"Tier {tier}: each claim of the reference report checked against every study of its kind "
            f"(claims defined once in dlstudy.studies.summary.claims). Family for Holm-Bonferroni: the {family} "
            f"checks of this table that have a p-value (every claim x study of the {tier} tier); verdicts at level "
            f"{alpha:g} on the Holm-adjusted p. Effects with {stats.confidence:.0%} intervals; A is the arm the "
            f"claim favours. \"not detectable\" does not mean the arms are equal.")
    return [Paragraph(text),
            Table(["claim", "study", "arms (A vs B)", "reference", f"effect [{stats.confidence:.0%} CI]", "test", "p",
                   "Holm p", "verdict", "footing"], cells, f"Claims ledger of the {tier} tier")]


def study_runs(study_dir: Path, study, groups: dict[str, list[ArmRun]]) -> StudyRuns:
    """A study read back, as the ledger names it: its folder, and for Q3 the dataset · protocol block."""
    label = Path(study_dir).name
    if study.kind == "optimizers" and groups:
        from dlstudy.studies.summary.protocols import block_label

        label = f"{label} ({block_label(study_dir, groups)})"
    return StudyRuns(label, study.kind, groups)
