"""The export's check: the written file scores the run's own test images as the run did.

The test split is rebuilt from the run's data config by `inference.evaluate_run` (as `dlstudy evaluate` does),
with the exported file standing in for the network (`_ExportedRun`: a LoadedRun whose forward pass is the file),
so data loading, class matching and sample ids are the evaluation's own. The reference is the run's
predictions.npz; for a network trained under mixed precision (train.amp bf16 / fp16), whose predictions hold
reduced-precision scores, a float32 scoring of the run through the same path (`LoadedRun.scores` with amp off).
Passed: max |probability difference| <= PROBABILITY_TOL and identical labels >= LABEL_AGREEMENT.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from dlstudy.errors import DataError
from dlstudy.export.formats import ExportError
from dlstudy.inference import LoadedRun, evaluate_run
from dlstudy.progress import progress

PROBABILITY_TOL = 1e-4  # float32 graph vs float32 scoring: reordered sums differ in the last bits only
LABEL_AGREEMENT = 0.999  # ties within rounding may flip a label; more than 1 in 1000 is a wrong export


@dataclass
class _ExportedRun(LoadedRun):
    """A LoadedRun whose forward pass is the exported file: `scores_uint8` runs `scorer` over the images, batch
    1 first (the dynamic batch axis), then batches of `batch_size`; `outputs` keeps every output of the file."""

    scorer: Callable | None = None
    label: str = "the exported file"  # for errors: "<network>: the <format> file"
    outputs: list = field(default_factory=list)
    batch_sizes: set = field(default_factory=set)

    def scores_uint8(self, images: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        batch_size = batch_size or self.config.train.eval_batch_size
        x = images.numpy()
        starts = [0, 1, *range(1 + batch_size, len(x), batch_size)] if len(x) > 1 else [0]
        spans = progress(list(zip(starts, [*starts[1:], len(x)])), desc=f"check ({self.label.split(': ')[-1]})")
        parts = [self._run(np.ascontiguousarray(x[a:b])) for a, b in spans]
        self.outputs = [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
        return self.outputs[0]  # (N, K) probabilities, or margins when an SVM decides

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        """The file's outputs for one batch; an ExportError when it fails or returns other shapes (a trace that
        fixed the example's batch size, say)."""
        expected = (len(batch), len(self.class_names))
        try:
            outs = [np.asarray(o, np.float32) for o in self.scorer(batch)]
        except Exception as exc:  # onnxruntime and TorchScript raise their own types
            raise ExportError(f"{self.label} fails on a batch of {len(batch)} images: "
                              f"{str(exc).strip().splitlines()[0][:300]}; nothing was written") from None
        if any(o.shape != expected for o in outs):
            raise ExportError(f"{self.label} returns shapes {[o.shape for o in outs]} for a batch of "
                              f"{len(batch)} images, expected {expected}; nothing was written")
        self.batch_sizes.add(len(batch))
        return outs


def _float32_run(loaded: LoadedRun) -> LoadedRun:
    cfg = loaded.config
    return dataclasses.replace(loaded, config=dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp="none")))


def _reference(loaded: LoadedRun, data_cfg, batch_size: int | None) -> tuple:
    """(Predictions the export is compared with, what they are in words, bf16 predictions.npz or None)."""
    from dlstudy.predictions import read_predictions

    saved_path = loaded.path / "predictions.npz"
    saved = read_predictions(saved_path) if saved_path.is_file() else None
    amp = loaded.config.train.amp if loaded.kind == "network" else "none"
    if saved is not None and amp == "none":
        return saved, "the run's predictions.npz", None
    why = (f"train.amp={amp}: predictions.npz holds {amp} scores" if saved is not None else
           "the run has no predictions.npz")
    ref, _ = evaluate_run(_float32_run(loaded), data_cfg, "test", batch_size)
    return ref, f"a float32 scoring of the run through LoadedRun.scores ({why})", saved


def _aligned(ref, got, what: str):
    """`ref` in the row order of `got` (by sample id); DataError when the two are not the same images."""
    if np.array_equal(ref.sample_ids, got.sample_ids):
        return ref
    order = {sid: i for i, sid in enumerate(ref.sample_ids.tolist())}
    missing = [s for s in got.sample_ids.tolist() if s not in order]
    if missing or len(order) != len(got.sample_ids):
        raise DataError(f"{what}: the rebuilt test split ({len(got.sample_ids)} images) is not the one the run "
                        f"scored ({len(order)}; e.g. {missing[:3]} not among them): the data changed since "
                        f"training; pass --data-root to the run's data")
    rows = np.array([order[s] for s in got.sample_ids.tolist()])
    return dataclasses.replace(ref, y_true=ref.y_true[rows], scores=ref.scores[rows], sample_ids=ref.sample_ids[rows])


def _compare(loaded: LoadedRun, ref_scores: np.ndarray, got_scores: np.ndarray, got_probs: np.ndarray) -> dict:
    ref_probs = loaded.probabilities(ref_scores)
    out = {"max_abs_probability_diff": float(np.abs(got_probs - ref_probs).max()),
           "identical_labels": float((got_scores.argmax(1) == ref_scores.argmax(1)).mean())}
    if loaded.score_kind == "margins":
        out["max_abs_margin_diff"] = float(np.abs(got_scores - ref_scores).max())
    return out


def check_export(loaded: LoadedRun, scorer: Callable, runtime: str, data_cfg, batch_size: int | None = None,
                 label: str = "the exported file") -> dict:
    """Score the run's test split with `scorer` (the written file run by `runtime`) and compare (see module)."""
    exported = _ExportedRun(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(LoadedRun)},
                            scorer=scorer, label=label)
    got, notes = evaluate_run(exported, data_cfg, "test", batch_size)
    ref, reference, saved = _reference(loaded, data_cfg, batch_size)
    ref = _aligned(ref, got, str(loaded.path / "predictions.npz"))
    numbers = _compare(loaded, ref.scores, got.scores, exported.outputs[-1])
    check = {"runtime": runtime, "split": "test", "n_images": int(len(got.y_true)), "reference": reference,
             "batch_sizes": sorted(exported.batch_sizes), **numbers,
             "probability_tolerance": PROBABILITY_TOL, "label_agreement_required": LABEL_AGREEMENT,
             "accuracy_export": float((got.scores.argmax(1) == got.y_true).mean()),
             "accuracy_reference": float((ref.scores.argmax(1) == ref.y_true).mean()), "data": notes[0]}
    if saved is not None:  # how far the run's own reduced-precision scores are from float32, for the record
        saved = _aligned(saved, got, str(loaded.path / "predictions.npz"))
        check["run_predictions_vs_float32"] = _compare(loaded, ref.scores, saved.scores,
                                                       loaded.probabilities(saved.scores))
    check["passed"] = bool(numbers["max_abs_probability_diff"] <= PROBABILITY_TOL
                           and numbers["identical_labels"] >= LABEL_AGREEMENT)
    return check


def format_check(check: dict) -> str:
    """One line: the numbers, the thresholds and the verdict."""
    margin = (f", max |margin diff| {check['max_abs_margin_diff']:.2e}" if "max_abs_margin_diff" in check else "")
    return (f"check: {check['n_images']} test images through {check['runtime']} vs {check['reference']}: "
            f"max |probability diff| {check['max_abs_probability_diff']:.2e} (<= {check['probability_tolerance']:g})"
            f"{margin}, identical labels {100 * check['identical_labels']:.2f}% "
            f"(>= {100 * check['label_agreement_required']:g}%), accuracy {check['accuracy_export']:.4f} vs "
            f"{check['accuracy_reference']:.4f}: {'passed' if check['passed'] else 'FAILED'}")
