"""What a train run has accumulated so far: `TrainState`, saved in last.pt as a plain dict.

    state = TrainState()
    state.add_epoch(row, stats)                 # history row + one steps.csv row per optimizer step
    ckpt["state"] = state.to_dict()             # plain lists / dicts / numbers: torch.load(weights_only=True) reads it
    state = TrainState.from_dict(ckpt["state"])  # also the untyped dicts of checkpoints written before TrainState
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from dlstudy.errors import WeightsError


@dataclass
class TrainState:
    history: list[dict] = field(default_factory=list)  # one history.csv row per finished epoch
    steps: list[dict] = field(default_factory=list)  # one steps.csv row per optimizer step
    before: dict | None = None  # test metrics of the untrained model (outputs.metric_block); None: not measured
    best_val_acc: float = -1.0  # below any accuracy, so the first epoch is always an improvement
    best_epoch: int = 0  # 0: no epoch finished yet
    elapsed_s: float = 0.0  # training time of the finished epochs (evaluation excluded)

    def add_epoch(self, row: dict, stats: dict) -> None:
        """Append the epoch's history `row` and its steps (stats of train_one_epoch: step_losses, step_times)."""
        first = len(self.steps) + 1
        self.steps += [{"epoch": row["epoch"], "step": i + 1, "global_step": first + i, "loss": loss,
                        "time_s": self.elapsed_s + t}
                       for i, (loss, t) in enumerate(zip(stats["step_losses"], stats["step_times"]))]
        self.elapsed_s += stats["time_s"]
        self.history.append(row)

    @property
    def images_per_s(self) -> float | None:
        """Training images per second over every finished epoch; None before the first."""
        images = sum(r["images_per_s"] * r["time_s"] for r in self.history)
        return images / self.elapsed_s if self.elapsed_s > 0 else None

    def to_dict(self) -> dict:
        # Not dataclasses.asdict: that deep-copies every step row (60,000 an epoch at batch size 1) only for
        # torch.save to serialise them once; the fields are plain data already.
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainState":
        """The state saved by `to_dict`, or by older versions as an untyped dict with the same keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or not set(data) <= names:
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise WeightsError(f"checkpoint 'state': expected a mapping with keys among {sorted(names)}, "
                               f"got {found}")
        state = cls(**data)
        state.history, state.steps = list(state.history), list(state.steps)
        return state
