"""The two loops: `train_one_epoch` (one pass over training batches) and `evaluate` (scores on a whole split).

Both are plain functions of a model, an objective and batches; the orchestration (epochs, checkpoints, files) is
in `dlstudy.engine.job`. Under DDP, `train_one_epoch` gets this rank's batches and sums its counts over ranks;
`evaluate` scores this rank's contiguous chunk and gathers the scores, so every rank returns the whole split's
metrics.
"""

from __future__ import annotations

import math
import time
from typing import Iterable

import numpy as np
import torch
from torch import nn

from dlstudy.engine.distributed import DistInfo, all_reduce_sum, gather_rows, shard_range
from dlstudy.errors import TrainingDiverged
from dlstudy.models.forward import autocast, iter_forward  # autocast: where amp_dtype_for allowed it
from dlstudy.progress import progress

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Steps between NaN/inf checks of the loss: each check is a host sync (and an all-reduce under DDP); a divergence
# is still reported at its exact step, at most this many steps later.
CHECK_EVERY = 16


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: oneDNN runs bf16 convolutions in hardware (a BatchNorm convnet trains ~3x faster than in
    float32 on 2 Sapphire Rapids cores); without them bf16 is emulated and slower than float32."""
    return any(getattr(torch.cpu, name, lambda: False)() for name in ("_is_amx_tile_supported",
                                                                      "_is_avx512_bf16_supported"))


def amp_dtype_for(amp: str, device: str | torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype `train.amp` gives on `device`, and why when it falls back to float32.

    CUDA: bf16 or fp16. CPU: bf16 where the CPU computes it natively; fp16 never (no CPU kernels worth it).
    """
    dtype = AMP_DTYPES[amp]
    if dtype is None or torch.device(device).type == "cuda":
        return dtype, ""
    if dtype is torch.bfloat16 and cpu_has_native_bf16():
        return dtype, ""
    return None, (f"train.amp={amp} needs CUDA" if dtype is torch.float16 else
                  "train.amp=bf16 needs a CPU with AMX or AVX512-BF16")


def _short(x: float) -> str:
    """A number as a user would type it: 1e8, 0.001, 1e-5 (not 100000000.0 or 1e+08)."""
    text = f"{x:g}"
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if e else text


def run_lr(optimizer) -> float | None:
    """optim.lr of the run: a group's lr before schedules (`initial_lr`, set by them) over its lr_mult."""
    for group in optimizer.param_groups:
        mult = group.get("lr_mult", 1.0)
        if mult:
            return group.get("initial_lr", group["lr"]) / mult
    return None


def diverged(epoch: int, step: int, what: str, value, lr: float | None = None,
             grad_clip: float | None = None) -> TrainingDiverged:
    """The one divergence error: where it was first seen, what became non-finite, and the two remedies."""
    lower = f"lower optim.lr (now {_short(lr)})" if lr is not None else "lower optim.lr"
    clip = f"lower train.grad_clip (now {_short(grad_clip)})" if grad_clip else "set train.grad_clip"
    return TrainingDiverged(f"training diverged at epoch {epoch} step {step} ({what} {value}); {lower} or {clip}")


# A step loss above this is a divergence even while it is finite (Adam at lr 1e8 keeps it finite): every objective
# here starts near ln(K) (cross-entropy) or a few units (triplet, center), so 1e6 means the weights have blown up.
LOSS_CEILING = 1e6


def _check_finite(pending: list[torch.Tensor], first_step: int, epoch: int, info: DistInfo, device,
                  remedy: dict) -> list[float]:
    """Move the pending per-step losses to the host; raise TrainingDiverged at the first NaN/inf one, or the first
    above LOSS_CEILING.

    Under DDP the sum is reduced over ranks first, so every rank stops together instead of hanging.
    remedy: {"lr", "grad_clip"} for the message.
    """
    values = torch.stack(pending).float().cpu().tolist()  # one host sync for len(pending) steps
    local = [math.fsum(values), float(sum(abs(v) > LOSS_CEILING for v in values))]
    total, above = all_reduce_sum(local, info, device) if info.enabled else local
    if not math.isfinite(total) or above:
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v) or abs(v) > LOSS_CEILING), None)
        if bad is None:
            bad, value = 0, "non-finite or above the ceiling on another rank"
        else:
            value = values[bad] if not math.isfinite(values[bad]) else \
                f"{values[bad]:.3g}, above the ceiling {LOSS_CEILING:g}"
        raise diverged(epoch, first_step + bad, "loss", value, **remedy)
    return values


def _check_weights(model: nn.Module, epoch: int, step: int, remedy: dict) -> None:
    """TrainingDiverged when a weight or a running statistic is NaN/inf after the epoch's last step: its loss was
    still finite, but the evaluation that follows would score NaN. One host sync; every DDP rank holds the same
    weights, so all raise together."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point() and t.numel()]
    if not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        return
    first = next(t for t in tensors if not bool(torch.isfinite(t).all()))
    raise diverged(epoch, step, "weights", float(first[~torch.isfinite(first)].flatten()[0]), **remedy)


def _check_scores(logits: torch.Tensor, diverged_at: dict | None) -> None:
    """TrainingDiverged when (N, K) logits hold NaN/inf: the weights were finite after the last step, but large
    enough to overflow the forward pass."""
    finite = torch.isfinite(logits)
    if bool(finite.all()):
        return
    value = float(logits[~finite].flatten()[0])
    if diverged_at:
        raise diverged(**{"what": "scores", **diverged_at}, value=value)
    rows = int((~finite).any(1).sum())
    raise TrainingDiverged(f"training diverged: the model's scores are {value} on {rows} of {len(logits)} images "
                           f"(the training loss was still finite); lower optim.lr or set train.grad_clip")


def _count_correct(logits: list[torch.Tensor], labels: list[torch.Tensor]) -> int:
    """Correct top-1 predictions in a list of (B, K) logits and (B,) labels, in one batched op."""
    return int((torch.cat(logits).argmax(1) == torch.cat(labels)).sum())


def _backward_step(model: nn.Module, loss: torch.Tensor, optimizer, scaler, grad_clip: float | None) -> None:
    """Backward and optimizer step, with fp16 loss scaling and gradient-norm clipping when asked."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()


def train_one_epoch(model: nn.Module, objective: nn.Module, optimizer: torch.optim.Optimizer,
                    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, device: str | torch.device = "cpu",
                    epoch: int = 1, scheduler=None, scaler: torch.amp.GradScaler | None = None,
                    amp_dtype: torch.dtype | None = None, grad_clip: float | None = None,
                    channels_last: bool = False, max_steps: int | None = None, total: int | None = None,
                    check_every: int = CHECK_EVERY, info: DistInfo = DistInfo()) -> dict:
    """One pass of `batches` (images (B, C, H, W) float, labels (B,)); returns loss, accuracy and per-step logs.

    Returns {"loss", "acc", "n", "time_s", "images_per_s", "step_losses": [...], "step_times": [s since start]}.
    The loss is checked every `check_every` steps (each check is a host sync, so not every step), the weights once
    at the end; a NaN/inf one raises TrainingDiverged naming the epoch and step (1-based).
    """
    remedy = {"lr": run_lr(optimizer), "grad_clip": grad_clip}
    model.train()
    objective.train()
    start = time.perf_counter()
    # Per-step values stay on the device until a check (losses, detached logits and labels; batch sizes as ints),
    # then are reduced in a few batched ops. Batch-1 SGD runs 60,000 steps an epoch, so each per-step op shows.
    pending, pending_logits, pending_labels, batch_sizes, step_losses, step_times = [], [], [], [], [], []
    correct_total = n_seen = 0
    bar = progress(batches, desc=f"epoch {epoch}", total=total)
    show = not bar.disable
    for step, (images, labels) in enumerate(bar, start=1):
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            outputs = model(images)
            parts = objective(outputs, labels)
        loss = parts["loss"]
        _backward_step(model, loss, optimizer, scaler, grad_clip)
        if scheduler is not None:
            scheduler.step()
        objective.after_step()
        pending.append(loss.detach())
        pending_logits.append(outputs["logits"].detach())  # (B, K)
        pending_labels.append(labels)
        batch_sizes.append(labels.shape[0])
        n_seen += labels.shape[0]
        step_times.append(time.perf_counter() - start)
        if len(pending) >= check_every:
            step_losses += _check_finite(pending, step - len(pending) + 1, epoch, info, device, remedy)
            correct_total += _count_correct(pending_logits, pending_labels)
            pending, pending_logits, pending_labels = [], [], []
            if show:
                bar.set_postfix(loss=f"{step_losses[-1]:.4f}", img_s=f"{n_seen / step_times[-1]:.0f}")
        if max_steps is not None and step >= max_steps:
            break
    if pending:
        step_losses += _check_finite(pending, len(step_losses) + 1, epoch, info, device, remedy)
        correct_total += _count_correct(pending_logits, pending_labels)
    _check_weights(model, epoch, len(step_losses), remedy)
    loss_sum = math.fsum(v * b for v, b in zip(step_losses, batch_sizes))  # mean loss weighted by batch size
    loss_total, correct_total, n_total = all_reduce_sum([loss_sum, float(correct_total), n_seen], info,
                                                        device)
    elapsed = time.perf_counter() - start
    return {"loss": loss_total / max(n_total, 1), "acc": correct_total / max(n_total, 1), "n": int(n_total),
            "time_s": elapsed, "images_per_s": n_total / max(elapsed, 1e-9),
            "step_losses": step_losses, "step_times": step_times}


@torch.no_grad()
def predict(model: nn.Module, split, *, mean, std, device, batch_size: int = 512, objective: nn.Module | None = None,
            info: DistInfo = DistInfo(), amp_dtype=None, channels_last: bool = False,
            output: str = "logits", tta: str = "none") -> tuple[torch.Tensor, torch.Tensor, float]:
    """(outputs (N, D) float32 on CPU in split order, labels (N,), mean loss) of `model` over the whole `split`.

    The batched forward pass of dlstudy.models.forward with a loss: the objective's, cross-entropy without one.
    `output` picks which model output is collected: logits, features or embedding; `tta` (eval.tta) averages the
    logits over test-time views (dlstudy.config.TTA_MODES). Under DDP each rank scores a
    contiguous chunk and the chunks are gathered in rank order (= split order).
    """
    if len(split.labels) < info.world_size:
        raise ValueError(f"cannot evaluate a split of {len(split.labels)} image(s) on {info.world_size} process(es): "
                         f"every process needs at least one (check data.val_fraction / data.max_eval)")
    start, stop = shard_range(len(split.labels), info)
    if objective is not None:
        objective.eval()
        loss_fn = lambda out, y: objective(out, y)["loss"]  # noqa: E731
    else:
        loss_fn = lambda out, y: nn.functional.cross_entropy(out["logits"], y)  # noqa: E731
    outs, labels_all, loss_sum = [], [], 0.0
    for out, labels, loss in iter_forward(model, split.rows(start, stop), output=output, mean=mean, std=std,
                                          batch_size=batch_size, device=device, amp_dtype=amp_dtype,
                                          channels_last=channels_last, loss_fn=loss_fn, tta=tta):
        loss_sum += float(loss) * labels.shape[0]
        outs.append(out)
        labels_all.append(labels)
    scores = gather_rows(torch.cat(outs), info).cpu()  # (N, D) in split order
    y_true = gather_rows(torch.cat(labels_all), info).cpu()
    loss_total = all_reduce_sum([loss_sum], info, device)[0]
    return scores, y_true, loss_total / max(len(y_true), 1)


def evaluate(model: nn.Module, split, *, mean, std, device, class_names: list[str], batch_size: int = 512,
             objective: nn.Module | None = None, info: DistInfo = DistInfo(), amp_dtype=None,
             channels_last: bool = False, diverged_at: dict | None = None,
             tta: str = "none") -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics of the classification head on `split`: (metrics with METRIC_KEYS + "loss", y_score (N, K), y_true).

    y_score holds softmax probabilities (what the ROC curves use); the loss is the objective's (cross-entropy
    without one), averaged over images. NaN/inf logits raise TrainingDiverged; `diverged_at` ({"epoch", "step",
    "what", "lr", "grad_clip"}, e.g. what="val scores") says in its message where training stood.
    """
    from dlstudy.metrics import Evaluator

    logits, y_true, loss = predict(model, split, mean=mean, std=std, device=device, batch_size=batch_size,
                                   objective=objective, info=info, amp_dtype=amp_dtype, channels_last=channels_last,
                                   tta=tta)
    _check_scores(logits, diverged_at)
    y_score = torch.softmax(logits, dim=1)
    evaluator = Evaluator(len(class_names), class_names)
    evaluator.update(y_score, y_true)
    metrics = evaluator.compute()
    metrics["loss"] = loss
    return metrics, y_score.numpy(), y_true.numpy()
