"""Weights resolution: `none | imagenet | PATH | RUN_DIR` into a `Classifier`, offline-friendly.

- `imagenet`, our backbones and `tv:` models: torchvision's weight enum gives the file name; the file is looked for
  in torchvision's standard cache `$TORCH_HOME/hub/checkpoints/<file>` (torch.hub.get_dir()), downloaded only when
  missing and a network is there (`DLSTUDY_OFFLINE=1` forbids it).
- `imagenet`, `timm:` models: the model's pretrained config names a Hugging Face repo (`timm/<name>.<tag>`); its
  `model.safetensors` (else `pytorch_model.bin`) is looked up in the Hugging Face cache ($HF_HUB_CACHE, else
  $HF_HOME/hub, else ~/.cache/huggingface/hub) with `huggingface_hub.try_to_load_from_cache`, which reads the disk
  only; never downloaded. A few old timm configs name a URL only: its file in torchvision's cache folder then.
- `PATH`: a `.safetensors` file or a torch file (`.pth` / `.pt`) holding the zoo's own state dict (torchvision keys
  `conv1.weight`, timm keys, ...; a backbone's `state_dict()`), a `Classifier` state dict (`backbone.*`), or a
  dlstudy checkpoint (`{"model": state_dict, ...}`).
- `RUN_DIR`: a previous run folder; its `checkpoints/best.pt` (else `last.pt`) is used.

Every torch file loads with `weights_only=True`. The classification head is never taken from ImageNet files, and from
a checkpoint only when its shape matches (so a different number of classes gets a new head). A 3-channel kernel
that meets a 1-channel model (grey images) is summed over its input channels: the same response to a grey image.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dlstudy.errors import WeightsError


@dataclass
class WeightsReport:
    source: str  # what was loaded: the file path
    loaded: list[str] = field(default_factory=list)  # model keys filled from the file
    missing: list[str] = field(default_factory=list)  # model keys left at their fresh initialisation
    skipped: list[str] = field(default_factory=list)  # file keys not used (unknown or shape mismatch)

    def summary(self) -> str:
        def short(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... (+{len(keys) - 8})" if len(keys) > 8 else "")
        return (f"weights {self.source}: loaded {len(self.loaded)} tensors; new (not in file): {len(self.missing)}"
                f" [{short(self.missing)}]; skipped from file: {len(self.skipped)} [{short(self.skipped)}]")


def imagenet_file(spec) -> tuple[str, str, Path]:
    """(url, file name, cache folder) of `spec`'s torchvision ImageNet weights (ours and `tv:` models)."""
    import torchvision.models

    if spec.weights_enum is None:
        raise WeightsError(f"model.weights=imagenet: model {spec.name!r} has no ImageNet weights; use weights=none "
                           f"or a model with them (resnet18, resnet50, densenet121, any tv:<name>, timm models "
                           f"that `dlstudy models` lists with weights)")
    url = getattr(torchvision.models, spec.weights_enum).DEFAULT.url
    return url, url.rsplit("/", 1)[-1], Path(torch.hub.get_dir()) / "checkpoints"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once, at import)."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _timm_files(spec) -> tuple[str | None, list[str], str | None]:
    """(Hugging Face repo id, file names in the order tried, URL) of a timm model's pretrained weights."""
    from dlstudy.models.zoo import timm_pretrained_cfg

    cfg = timm_pretrained_cfg(spec.arch)
    repo = (cfg.get("hf_hub_id") or "").split("@")[0] or None
    names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
    return repo, names, cfg.get("url") or None


def find_imagenet(spec) -> tuple[Path | None, str]:
    """(the ImageNet weights file of `spec` found on this disk, or None; where it was looked for, in words).

    Reads the disk only: never downloads, never opens a connection (the Hugging Face lookup is
    `try_to_load_from_cache`, a cache read by contract)."""
    if spec.source != "timm":
        if spec.weights_enum is None:
            return None, "no ImageNet weights"
        _, name, folder = imagenet_file(spec)
        return ((folder / name) if (folder / name).is_file() else None), f"{name} in {folder}"
    from huggingface_hub import try_to_load_from_cache

    repo, names, url = _timm_files(spec)
    cache, places = hf_cache_dir(), []
    if repo:
        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=str(cache))
            if isinstance(found, str):  # else None (never cached) or a marker (known missing upstream)
                return Path(found), f"{name} of {repo} in {cache}"
        places.append(f"{' or '.join(names)} of the Hugging Face repo {repo} in the cache {cache}")
    if url:
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        if (folder / url.rsplit("/", 1)[-1]).is_file():
            return folder / url.rsplit("/", 1)[-1], f"{url.rsplit('/', 1)[-1]} in {folder}"
        places.append(f"{url.rsplit('/', 1)[-1]} in {folder}")
    return None, " and ".join(places) or "no pretrained weights in timm's config"


_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip format; a legacy (protocol >= 2) pickle


def load_torch_file(path: str | Path, what: str = "weights file") -> object:
    """torch.load(weights_only=True) of `path`: tensors, containers and numbers only, no code runs.

    WeightsError naming the file and what it holds instead of torch's own message, which suggests retrying with
    weights_only=False: a file that refers to other Python objects cannot be loaded safely and is refused.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise WeightsError(f"{what} {path} cannot be opened: {exc.strerror or exc}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for files it cannot read
        if not head:
            problem = "is empty (0 bytes)"
        elif not head.startswith(_TORCH_MAGIC):
            problem = f"is not a file written by torch.save (it starts with {head!r})"
        elif "GLOBAL" in str(exc) or "Unsupported global" in str(exc):
            found = re.search(r"GLOBAL ([\w.]+)|global: ([\w.]+)", str(exc))
            name = f" ({next(g for g in found.groups() if g)})" if found else ""
            problem = (f"is not a plain state dict or checkpoint: it refers to Python objects{name} beyond "
                       f"tensors and containers, so it cannot be loaded safely and is refused")
        else:
            problem = (f"cannot be read safely ({type(exc).__name__}: truncated, damaged, or a pickle torch.save "
                       f"did not write)")
        raise WeightsError(f"{what} {path} {problem}; expected a state dict (name -> tensor) or a dlstudy "
                           f"checkpoint") from None


def load_safetensors(path: str | Path) -> dict:
    """{name: tensor} of a .safetensors file (no code can run from it); WeightsError naming the file otherwise."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"weights file {path} is not a readable .safetensors file ({exc}); expected a "
                           f"safetensors state dict (name -> tensor)") from None


def _load_file(path: Path) -> dict:
    if Path(path).suffix == ".safetensors":
        return load_safetensors(path)
    obj = load_torch_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # a dlstudy checkpoint
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path}: expected a state dict (name -> tensor) or a dlstudy checkpoint "
                           f"with a 'model' state dict, got {type(obj).__name__}")
    return obj


def _fetch_imagenet(spec) -> tuple[Path, dict]:
    if spec.source == "timm":
        path, where = find_imagenet(spec)
        if path is None:
            raise WeightsError(
                f"ImageNet weights for {spec.name} not found on this machine: looked for {where}. dlstudy never "
                f"downloads timm weights: on a machine with a network run `hf download {_timm_files(spec)[0]}` "
                f"(or timm.create_model('{spec.arch}', pretrained=True)) and copy the cache folder here, set "
                f"HF_HOME / HF_HUB_CACHE to where it is, or give model.weights a .safetensors / .pth file")
        return path, _load_file(path)
    url, name, folder = imagenet_file(spec)
    path = folder / name
    if not path.is_file():
        offline = os.environ.get("DLSTUDY_OFFLINE")
        try:
            if offline:
                raise OSError("DLSTUDY_OFFLINE is set")
            folder.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=False)
        except Exception as exc:
            raise WeightsError(
                f"ImageNet weights for {spec.name} not found: expected the file {name} in {folder} "
                f"(torchvision's cache, $TORCH_HOME/hub/checkpoints), and downloading {url} failed ({exc}). "
                f"Copy {name} into {folder}, or set TORCH_HOME to the folder above hub/.") from None
    return path, _load_file(path)


_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _torchvision_to_classifier(state: dict, spec) -> dict:
    """torchvision keys -> Classifier keys: `backbone.` prefix, old DenseNet names fixed, classifier dropped."""
    out = {}
    for key, value in state.items():
        if spec.head_prefix and key.startswith(spec.head_prefix + "."):
            continue  # ImageNet's 1000-class head: never reused
        match = _DENSENET_OLD_KEY.match(key)
        if match:
            key = match.group(1) + match.group(2)  # 'norm.1.weight' -> 'norm1.weight' (torchvision's own fix)
        out["backbone." + key] = value
    return out


def _adapt_stem(state: dict, own: dict, in_channels: int) -> dict:
    """Input kernels of another channel count -> `in_channels`, for every file conv kernel (O, 3 or 1, k, k) whose
    model tensor is (O, in_channels, k, k) (the stem: a ResNet's conv1, a ViT's patch embedding, ...), so that a
    grey image gives the same response as before:
      RGB file, grey model       summed over the 3 input channels (timm's adapt_input_conv does the same)
      grey file, C-channel model repeated C times and divided by C (a grey image replicated to C channels)
      RGB file, C-channel model  repeated and rescaled by 3 / C"""
    out = dict(state)
    for key, w in state.items():  # w: (O, C_file, k, k)
        mine = own.get(key)
        if (mine is None or w.ndim != 4 or mine.ndim != 4 or w.shape[1] not in (1, 3)
                or w.shape[1] == in_channels or mine.shape[1] != in_channels
                or (mine.shape[0], *mine.shape[2:]) != (w.shape[0], *w.shape[2:])):
            continue
        if w.shape[1] == 1:
            out[key] = w.repeat(1, in_channels, 1, 1) / in_channels
        elif in_channels == 1:
            out[key] = w.sum(dim=1, keepdim=True)
        else:  # repeat the RGB filters and rescale so the activation scale stays the same
            out[key] = w.repeat(1, (in_channels + 2) // 3, 1, 1)[:, :in_channels] * (3 / in_channels)
    return out


def _resolve_path(weights: str) -> Path:
    path = Path(weights).expanduser()
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise WeightsError(f"model.weights={weights!r}: folder has no checkpoint; expected a run folder with "
                           f"{path / 'checkpoints' / 'best.pt'} (or last.pt)")
    if not path.is_file():
        raise WeightsError(f"model.weights={weights!r}: no such file or run folder; expected none, imagenet, "
                           f"a .safetensors / .pth state-dict or checkpoint file, or a run folder holding "
                           f"checkpoints/best.pt")
    return path


def load_weights(model: nn.Module, spec, weights: str, in_channels: int) -> WeightsReport | None:
    """Load `weights` into `model` (a Classifier) non-strictly; shapes that differ keep the fresh tensors."""
    if weights in ("none", "", None):
        return None
    if weights == "imagenet":
        path, state = _fetch_imagenet(spec)
    else:
        path = _resolve_path(weights)
        state = _load_file(path)
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP-wrapped model
        state = {k[len("module."):]: v for k, v in state.items()}
    if not any(k.startswith("backbone.") for k in state):  # the zoo's own keys (a backbone's state_dict())
        if spec.state_filter is not None:
            state = spec.state_filter(state, model.backbone)
        state = _torchvision_to_classifier(state, spec)
    own = model.state_dict()
    state = _adapt_stem(state, own, in_channels)
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("backbone.") for k in usable):
        raise WeightsError(f"weights file {path}: none of its {len(state)} tensors fit model {spec.name!r} "
                           f"(e.g. {sorted(state)[:3]}); is it a checkpoint of another architecture?")
    model.load_state_dict(usable, strict=False)
    return WeightsReport(str(path), loaded=sorted(usable), missing=sorted(set(own) - set(usable)),
                         skipped=sorted(set(state) - set(usable)))
