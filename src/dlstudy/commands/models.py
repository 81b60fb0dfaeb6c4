"""`dlstudy models [PATTERN]`: every name model.name / svm.features take (ours, tv:, timm:), with parameters, feature
size and whether ImageNet weights are on this disk.

    dlstudy models                      # all ~1,450 names, fast: nothing is instantiated
    dlstudy models convnext_atto        # few matches: each is built (on the meta device) and measured
    dlstudy models 'timm:vit_*' --details
"""

from __future__ import annotations

import argparse
import fnmatch

DETAIL_LIMIT = 20  # a PATTERN matching at most this many names builds and measures each one


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "List the backbones model.name and svm.features accept: our own short names, tv:<name> (every torchvision "
        "classification model) and timm:<name> (every timm model; a pretrained tag may follow, e.g. "
        "timm:resnet18.a1_in1k), with the parameters and the size F of the pooled features, and whether "
        "model.weights=imagenet finds its file on this disk (never downloaded here). Fast: the full list builds "
        f"no model (params of tv: models come from torchvision's metadata); when PATTERN matches at most "
        f"{DETAIL_LIMIT} names, or with --details, each is built on PyTorch's meta device (no memory, no weights) "
        "and measured at its default input size.")
    parser.add_argument("pattern", nargs="?", default=None,
                        help="glob on the full name, case-insensitive (timm:convnext_*); without * ? [ a substring")
    parser.add_argument("--source", choices=["ours", "tv", "timm"], default=None, help="only this source")
    parser.add_argument("--details", action="store_true",
                        help=f"build and measure every match, however many (slow for hundreds); otherwise only "
                             f"when at most {DETAIL_LIMIT} names match")


def _matches(pattern: str | None, source: str | None) -> list[str]:
    from dlstudy.models.backbones import OWN_MODELS
    from dlstudy.models.zoo import TIMM, TV, timm_names, tv_names

    names = {"ours": list(OWN_MODELS), "tv": [TV + n for n in tv_names()], "timm": [TIMM + n for n in timm_names()]}
    pool = [n for key, group in names.items() if source in (None, key) for n in group]
    if not pattern:
        return pool
    glob = pattern.lower() if any(c in pattern for c in "*?[") else f"*{pattern.lower()}*"
    return [n for n in pool if fnmatch.fnmatchcase(n.lower(), glob)]


def _spec(name: str):
    from dlstudy.models.backbones import OWN_MODELS
    from dlstudy.models.zoo import TIMM, TV, timm_spec, tv_spec

    if name.startswith(TV):
        return tv_spec(name[len(TV):])
    if name.startswith(TIMM):
        return timm_spec(name[len(TIMM):])
    return OWN_MODELS[name]


def default_size(spec) -> int:
    """The input size a model is listed at: 32 px for ours (small stem), timm's pretrained size, else 224."""
    if spec.source == "dlstudy":
        return 32
    if spec.source == "timm":
        from dlstudy.models.zoo import timm_pretrained_cfg

        return int((timm_pretrained_cfg(spec.arch).get("input_size") or (3, 224, 224))[-1])
    return 224


def measure(spec, size: int) -> tuple[int, int]:
    """(backbone parameters, F) of `spec` built for 3 x size^2 images, on the meta device when it can be."""
    import torch

    from dlstudy.models.backbones import build_backbone

    try:
        with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
            backbone, dim = build_backbone(spec, 3, size, spec.source == "dlstudy")
    except Exception:  # noqa: BLE001 - an initialiser that reads values (torchvision's RegNet): build it for real
        backbone, dim = build_backbone(spec, 3, size, spec.source == "dlstudy")
    return sum(p.numel() for p in backbone.parameters()), dim


def _metadata_params(spec) -> str:
    if spec.source != "torchvision":
        return "-"
    import torchvision.models

    n = getattr(torchvision.models, spec.weights_enum).DEFAULT.meta.get("num_params")
    return f"{n / 1e6:.1f}M*" if n else "-"


def row(name: str, detailed: bool) -> dict:
    """One listing row: model, source, params, features, input, weights (found / missing / -), where."""
    from dlstudy.errors import DlstudyError
    from dlstudy.models.weights import find_imagenet

    spec = _spec(name)
    size = default_size(spec)
    params, features = _metadata_params(spec), str(spec.feature_dim or "-")
    if detailed or spec.source == "dlstudy":  # our eight are cheap to measure
        try:
            n, dim = measure(spec, size)
            params, features = f"{n / 1e6:.2f}M", str(dim)
        except DlstudyError as exc:
            features = f"error: {str(exc)[:60]}"
    try:
        found, where = find_imagenet(spec)
    except Exception as exc:  # noqa: BLE001 - a zoo config without pretrained weights must not stop the listing
        found, where = None, f"no pretrained config ({type(exc).__name__})"
    has_file = spec.source == "timm" or spec.weights_enum is not None
    weights = "found" if found else ("missing" if has_file and "no pretrained" not in where else "-")
    return {"model": name, "source": {"dlstudy": "ours"}.get(spec.source, spec.source), "params": params,
            "features": features, "input": str(size), "imagenet weights": weights,
            "where": str(found) if found else where}


def run(args: argparse.Namespace) -> int:
    from dlstudy.commands.datasets import format_table
    from dlstudy.errors import ConfigError

    names = _matches(args.pattern, args.source)
    if not names:
        raise ConfigError(f"no model name matches {args.pattern!r}" + (f" in --source {args.source}" if args.source
                          else "") + "; `dlstudy models` lists them all")
    detailed = args.details or len(names) <= DETAIL_LIMIT
    table = [row(n, detailed) for n in names]
    columns = ["model", "source", "params", "features", "input", "imagenet weights"]
    print(format_table(table, columns + (["where"] if detailed else [])))
    found = sum(r["imagenet weights"] == "found" for r in table)
    print(f"\n{len(table)} model{'s' if len(table) != 1 else ''}; ImageNet weights found on this disk for {found}.")
    if not detailed:
        print(f"params / features: measured when PATTERN matches at most {DETAIL_LIMIT} names, or with --details; "
              f"* = torchvision's metadata (with the 1000-class head); ours at 32 px (small stem).")
    print("Weights are looked up in $TORCH_HOME/hub/checkpoints (ours, tv:) and the Hugging Face cache (timm:), "
          "never downloaded by this command; docs/models.md explains the lookup.")
    return 0
