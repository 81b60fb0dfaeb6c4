"""Q3 across protocols and datasets: one column block per optimizer study (dataset, model, protocol, seeds), shared
by the reproduce report, the results page and the claims ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dlstudy.report.blocks import Table
from dlstudy.studies.summary.records import (ArmRun, config_value, fmt_mean_std, protocol_of, test_accuracy,
                                             train_accuracy)


def block_label(study_dir: Path, groups: dict[str, list[ArmRun]]) -> str:
    """A study's column-block name in the Q3 tables: dataset, model, protocol, seeds, e.g.
    "mnist · mlp · tuned (3 lrs/arm), 3 seeds"."""
    first = next(iter(groups.values()))[0]
    n_seeds = len({r.seed for runs in groups.values() for r in runs})
    return (f"{config_value(first, 'data', 'name', '—')} · {config_value(first, 'model', 'name', '—')} · {protocol_of(study_dir, list(groups))[0]}, {n_seeds} "
            f"seed{'' if n_seeds == 1 else 's'}")


PROTOCOL_MEASURES = (("test accuracy", test_accuracy), ("train accuracy", train_accuracy),
                     ("lr", lambda r: config_value(r, "optim", "lr")))


def protocol_table(blocks: Sequence[tuple[str, dict[str, list[ArmRun]]]], reference: dict,
                   fmt=fmt_mean_std, caption: str = "") -> Table:
    """Q3 across protocols and datasets: one row per arm and measure (test, train accuracy, the lr it ran with), one
    column per study (`blocks`: (label, runs by arm)), the reference report's number beside them.

    `reference`: the study file's `reference.arms` (label, test_accuracy, train_accuracy per arm); `fmt` formats
    one cell's per-seed values (default: mean ± std)."""
    arms = list(dict.fromkeys(arm for _, groups in blocks for arm in groups))
    rows = []
    for arm in arms:
        ref = reference.get(arm) if isinstance(reference.get(arm), dict) else {}
        for name, read in PROTOCOL_MEASURES:
            ref_value = ref.get(name.replace(" ", "_")) if name != "lr" else None
            cells = []
            for _, groups in blocks:
                values = [read(r) for r in groups.get(arm, [])]
                if name == "lr":
                    cells.append(", ".join(sorted({f"{v:g}" for v in values if isinstance(v, (int, float))})) or "—")
                else:
                    cells.append(fmt([v for v in values if isinstance(v, (int, float))]) if values else "—")
            rows.append([ref.get("label", arm), name, ref_value if ref_value is not None else "—"] + cells)
    return Table(["arm", "measure", "reference"] + [label for label, _ in blocks], rows, caption or (
        "Q3 under each protocol and dataset: one column per study (dataset · protocol, seeds); mean ± std over seeds "
        "of the best-validation epoch's weights; lr: the learning rate the seeds trained with (tuned: chosen on val)"))
