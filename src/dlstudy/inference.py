"""Use a finished run on new images: `load_run(RUN_DIR)` rebuilds its classifier and its preprocessing.

    run = dlstudy.load_run("runs/train-cifar10-smallcnn-ce-sgd")
    labels, probabilities = run.predict(images)      # uint8 (N, C, H, W) / (H, W, C) arrays, or PIL images
    run.class_names[labels[0]]

What a run folder holds for this (written by the train and svm jobs): `model.json` (kind, class names, the image
size, channels and per-channel mean / std of its training split), `config.yaml`, and the weights: the best
checkpoint (`checkpoints/best.pt`, loaded with weights_only=True) and / or `svm_model.npz` (LinearSVM.load, no
pickle). Images are converted to the run's channels and size and normalised with the statistics saved at training
time, never recomputed on the new data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from dlstudy.config import RunConfig, build_run_config, drop_retired_keys, load_yaml_mapping
from dlstudy.errors import DataError
from dlstudy.runs import MODEL_CARD
from dlstudy.io import read_json


@dataclass
class LoadedRun:
    """A run's classifier, ready for new images. `model` is the network (in eval mode) or, for an svm run on
    backbone features, that backbone (None on raw pixels); `svm` the fitted LinearSVM when the run has one."""

    path: Path
    config: RunConfig
    kind: str  # "network" | "svm"
    class_names: list[str]
    inputs: dict  # image_size [H, W], channels, mean, std (per channel, [0, 1] scale)
    model: nn.Module | None
    svm: Any | None
    device: str = "cpu"

    @property
    def score_kind(self) -> str:
        """'margins' when an SVM decides, else 'probabilities' (softmax of the head's logits)."""
        return "margins" if self.svm is not None else "probabilities"

    def preprocess(self, images) -> torch.Tensor:
        """uint8 images -> float32 (N, C, H, W) at the run's channels and size, normalised with its statistics."""
        from dlstudy.data import to_float

        return to_float(self.to_uint8(images), self.inputs["mean"], self.inputs["std"])

    def to_uint8(self, images) -> torch.Tensor:
        """(N, C, H, W) uint8 at the run's channels and size from a tensor / array ((N, C, H, W), (C, H, W) or
        (H, W, C) / (H, W) for one image), a PIL image, or a list of PIL images / arrays."""
        from dlstudy.data import ensure_channels
        from dlstudy.data.registry import resize_images

        x = _as_uint8_batch(images, self.inputs["channels"])
        x = ensure_channels(x, int(self.inputs["channels"]))
        h, w = self.inputs["image_size"]
        if tuple(x.shape[-2:]) != (h, w):
            x = resize_images(x, (h, w))
        return x.contiguous()

    @torch.no_grad()
    def scores(self, images, batch_size: int | None = None) -> np.ndarray:
        """(N, K) float32: softmax probabilities of a network, or SVM margins (see score_kind). `batch_size`
        defaults to the run's train.eval_batch_size: under bf16 autocast the scores depend on it in the last bits."""
        x = self.to_uint8(images)
        return self.scores_uint8(x, batch_size)

    @torch.no_grad()
    def scores_uint8(self, images: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        """scores() of images already at the run's channels and size ((N, C, H, W) uint8)."""
        batch_size = batch_size or self.config.train.eval_batch_size
        if self.svm is not None:
            return self._svm_scores(images, batch_size)
        if len(images) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        from dlstudy.models.forward import forward_batches

        # the engine's own forward pass, at the run's precision (bf16 autocast where it trained so) and memory
        # format: an evaluation of the run's test split gives the run's own numbers
        logits = forward_batches(self.model, images, output="logits", mean=self.inputs["mean"],
                                 std=self.inputs["std"], batch_size=batch_size, device=self.device,
                                 amp_dtype=self._amp_dtype(), channels_last=self.config.train.channels_last,
                                 tta=self.config.eval.tta)
        return torch.softmax(logits, dim=1).numpy()  # (N, K) float32

    def _amp_dtype(self):
        """The autocast dtype the run's train.amp gives on this device (None: float32), as the train job uses."""
        from dlstudy.engine.loop import amp_dtype_for

        return amp_dtype_for(self.config.train.amp, self.device)[0]

    def _svm_scores(self, images: torch.Tensor, batch_size: int) -> np.ndarray:
        from dlstudy.models.forward import forward_batches
        from dlstudy.svm.features import pixel_features
        from dlstudy.svm.selection import full_margins

        if self.model is None:  # raw pixels
            feats = pixel_features(images)
        else:  # an svm run: a backbone's pooled features (gray replicated to RGB, float32), as svm.features does;
            # a train run's embedding SVM: the embedding head (or the features without one), as its evaluate_test
            svm_run = self.kind == "svm"
            feats = forward_batches(self.model, images, output="features" if svm_run else "embedding",
                                    mean=self.inputs["mean"], std=self.inputs["std"], batch_size=batch_size,
                                    device=self.device, channels=3 if svm_run else None,
                                    amp_dtype=None if svm_run else self._amp_dtype(), desc="features").numpy()
        return full_margins(self.svm, feats, len(self.class_names))

    def predict(self, images, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(labels (N,) int64 indices into class_names, probabilities (N, K) float32).

        For an SVM the probabilities are softmax(margins / T) with the temperature fitted on held-out data.
        """
        scores = self.scores(images, batch_size)
        return scores.argmax(1).astype(np.int64), self.probabilities(scores)

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """(N, K) probabilities from scores(): themselves for a network, calibrated softmax for an SVM."""
        if self.svm is None:
            return scores
        z = torch.from_numpy(scores.astype(np.float64)) / float(getattr(self.svm, "temperature_", 1.0))
        return torch.softmax(z, dim=1).numpy().astype(np.float32)


def _as_uint8_batch(images, channels: int) -> torch.Tensor:
    """(N, C, H, W) uint8 tensor from the accepted image forms (see LoadedRun.to_uint8)."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("no images given")
        parts = [_as_uint8_batch(im, channels) for im in images]
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) > 1:
            from dlstudy.data.registry import resize_images

            parts = [resize_images(p, tuple(parts[0].shape[-2:])) for p in parts]
        return torch.cat(parts)
    if hasattr(images, "convert") and hasattr(images, "size"):  # a PIL image
        images = np.asarray(images.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))  # a writable copy
    if x.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0..255), got {x.dtype}; pass the pixels, not normalised floats")
    if x.ndim == 2:  # (H, W) gray
        return x[None, None]
    if x.ndim == 3:  # one image: (C, H, W) when the first axis looks like channels, else (H, W, C)
        return x[None] if x.shape[0] in (1, 3, 4) and x.shape[-1] not in (1, 3, 4) else x.permute(2, 0, 1)[None, :3]
    if x.ndim == 4:
        return x[:, :3]  # RGBA -> RGB
    raise ValueError(f"images must be (N, C, H, W), (C, H, W), (H, W, C) or (H, W); got shape {tuple(x.shape)}")


# ------------------------------------------------------------------------------------------------ loading


def read_model_card(run_dir: Path) -> dict:
    """model.json of a run folder; DataError saying what is wrong when the folder is not a usable run."""
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run folder")
    card_path = run_dir / MODEL_CARD
    if not card_path.is_file():
        if not (run_dir / "config.yaml").is_file():
            raise DataError(f"{run_dir}: not a dlstudy run folder (no config.yaml / {MODEL_CARD})")
        raise DataError(f"{run_dir}: the run has no {MODEL_CARD} (it failed before training started, or was made "
                        f"by an older dlstudy): nothing to load; train it again")
    try:
        card = read_json(card_path)
    except ValueError as exc:
        raise DataError(f"{card_path}: unreadable ({exc})") from None
    if not isinstance(card, dict) or card.get("kind") not in ("network", "svm"):
        raise DataError(f"{card_path}: not a dlstudy model card (expected kind 'network' or 'svm')")
    return card


def load_run(run_dir: str | Path, device: str = "cpu") -> LoadedRun:
    """The classifier of a train or svm run folder, on `device`, in eval mode (see the module docstring)."""
    run_dir = Path(run_dir)
    card = read_model_card(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{run_dir}: config.yaml missing; not a complete run folder")
    cfg = build_run_config(drop_retired_keys(load_yaml_mapping(config_path)), where=str(config_path))
    files, inputs = card.get("files", {}), card["inputs"]
    svm = _load_svm(run_dir / files["svm"]) if files.get("svm") else None
    if card["kind"] == "svm":
        model = None if inputs["features"] == "raw" else _svm_backbone(cfg, inputs, len(card["class_names"]))
        if inputs["features"] == "raw":
            inputs = {**inputs, "mean": [0.0] * inputs["channels"], "std": [1.0] * inputs["channels"]}
    else:
        if cfg.eval.classifier == "knn":
            raise DataError(f"{run_dir}: eval.classifier=knn needs the training embeddings, which a run does not "
                            f"keep; only head and svm classifiers can be loaded")
        model = _load_network(run_dir, cfg, card, files)
    if model is not None:
        model.eval().to(device)
        if cfg.train.channels_last and card["kind"] != "svm":  # as trained: oneDNN picks kernels by memory format
            model.to(memory_format=torch.channels_last)
    return LoadedRun(run_dir, cfg, card["kind"], list(card["class_names"]), inputs, model, svm, device)


def _load_svm(path: Path):
    from dlstudy.svm import LinearSVM

    if not path.is_file():
        raise DataError(f"{path}: the run's saved SVM is missing")
    try:
        return LinearSVM.load(path)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _load_network(run_dir: Path, cfg: RunConfig, card: dict, files: dict) -> nn.Module:
    from dlstudy.engine.checkpoint import load_checkpoint
    from dlstudy.models import build_model

    if not files.get("checkpoint"):
        raise DataError(f"{run_dir}: trained with train.checkpoint=false, so no weights were saved")
    path = run_dir / files["checkpoint"]
    if not path.is_file():
        raise DataError(f"{path}: no checkpoint (the run failed before its first epoch ended?): nothing to load")
    inputs = card["inputs"]
    model = build_model(dataclasses.replace(cfg.model, weights="none"), len(card["class_names"]),
                        int(inputs["channels"]), int(inputs["image_size"][0]))
    state = load_checkpoint(path)
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise DataError(f"{path}: not a dlstudy checkpoint (no 'model' state dict)")
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise DataError(f"{path}: its weights do not fit a {cfg.model.name} for {len(card['class_names'])} classes "
                        f"(checkpoint of another architecture?): {' '.join(first[:2])[:300]}") from None
    return model


def _svm_backbone(cfg: RunConfig, inputs: dict, num_classes: int) -> nn.Module:
    from dlstudy.config import ModelConfig
    from dlstudy.models import build_model

    mcfg = ModelConfig(name=inputs["features"], weights=inputs.get("weights", "none"),
                       small_input_stem=inputs.get("small_input_stem", cfg.model.small_input_stem))
    return build_model(mcfg, num_classes, 3, int(inputs["image_size"][0]))  # gray is replicated to RGB


def load_images(paths: Sequence[str | Path], run: LoadedRun) -> tuple[torch.Tensor, list[str], list[tuple[str, str]]]:
    """Decode image files to the run's channels and size: ((N, C, H, W) uint8, the paths read, [(path, why)] of
    the files that could not be read)."""
    from dlstudy.data.sources import decode_image

    h, w = run.inputs["image_size"]
    mode = "L" if int(run.inputs["channels"]) == 1 else "RGB"
    arrays, ok, failed = [], [], []
    for path in paths:
        try:
            data = Path(path).read_bytes()
            arrays.append(decode_image(data, str(path), mode, (w, h)))
            ok.append(str(path))
        except (OSError, DataError) as exc:
            failed.append((str(path), str(exc).removeprefix(f"{path}: ")))
    if not arrays:
        return torch.zeros((0, int(run.inputs["channels"]), h, w), dtype=torch.uint8), ok, failed
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), ok, failed


# ------------------------------------------------------------------------------------------------ evaluate


def match_classes(run_names: list[str], data_names: list[str], source) -> tuple[np.ndarray, list[int], list[str]]:
    """Map a dataset's classes onto a run's by name: (data label -> evaluation class index, the run's columns
    that are evaluated, notes). Another order is mapped; a subset is evaluated on the shared classes only; a
    name the run does not know is a DataError listing both sets."""
    unknown = [n for n in data_names if n not in run_names]
    if unknown:
        raise DataError(f"{source}: class(es) {unknown[:10]} are not classes of the run; the data has "
                        f"{data_names[:20]}{'...' if len(data_names) > 20 else ''}, the run knows "
                        f"{run_names[:20]}{'...' if len(run_names) > 20 else ''}")
    present = set(data_names)
    columns = [i for i, n in enumerate(run_names) if n in present]  # run order
    position = {run_names[c]: j for j, c in enumerate(columns)}
    label_map = np.array([position[n] for n in data_names], dtype=np.int64)
    notes = []
    if len(columns) < len(run_names):
        left = [n for n in run_names if n not in present]
        notes.append(f"the data has {len(columns)} of the run's {len(run_names)} classes: scores are restricted to "
                     f"those (left out: {', '.join(left[:10])}{', ...' if len(left) > 10 else ''})")
    elif data_names != run_names:
        notes.append("the data lists the run's classes in another order: labels were mapped by class name")
    return label_map, columns, notes


def evaluate_run(run: LoadedRun, data_cfg, split: str = "test", batch_size: int | None = None):
    """Score `run` on `split` of dataset `data_cfg` (a DataConfig; its image_size is set to the run's):
    (Predictions over the shared classes, notes). Nothing is written."""
    from dlstudy.data.registry import load_evaluation_split
    from dlstudy.predictions import make_predictions

    h, w = run.inputs["image_size"]
    data_cfg = dataclasses.replace(data_cfg, image_size=int(h) if h == w else None, augment="none")
    images, names, source, notes = load_evaluation_split(data_cfg, split)
    label_map, columns, class_notes = match_classes(run.class_names, names, source)
    notes = list(notes) + class_notes
    if images.images.shape[1] != int(run.inputs["channels"]):
        notes.append(f"the data's {images.images.shape[1]}-channel images were converted to the run's "
                     f"{run.inputs['channels']} channel(s) (gray replicated / BT.601 luma)")
    scores = run.scores(images.images, batch_size)[:, columns]  # (N, K_shared)
    y_true = label_map[images.labels.numpy()]
    preds = make_predictions(y_true, scores, run.score_kind, [run.class_names[c] for c in columns],
                             images.sample_ids())
    return preds, [f"source: {source}"] + notes
