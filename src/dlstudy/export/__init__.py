"""`dlstudy export`: a finished run's classifier as ONE graph (ONNX or TorchScript), checked against the run.

    result = export_run("runs/train-digits-smallcnn", "onnx")          # -> RUN_DIR/exports/model.onnx
    result.path, result.sidecar, result.check["passed"]

The graph takes uint8 (N, C, H, W) images at the run's channels and size (N dynamic) and does the rest itself:
/255, the run's training mean / std, the network (and the saved LinearSVM, standardisation included), softmax.
Outputs: "probabilities" (N, K) for a network; "margins" (N, K) and "probabilities" (softmax(margins / T), T the
SVM's fitted temperature) when an SVM decides. Resizing and channel conversion are not in the graph: the sidecar
`<file>.json` says the size, channels, class names and outputs, and holds the check (see export/check.py).
Any failure (missing package, weights, an exporter error, a failed check) is an ExportError / DataError (exit 2)
and leaves nothing written.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from dlstudy.export.check import check_export, format_check
from dlstudy.export.formats import FORMATS, ExportError, get_format, write_graph
from dlstudy.export.graph import ScoringGraph

__all__ = ["ExportError", "ExportResult", "FORMATS", "export_run", "format_check", "sidecar_path"]


@dataclass
class ExportResult:
    path: Path  # the exported file
    sidecar: Path  # <path>.json: inputs, outputs, class names, the check
    check: dict


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _describe_network(loaded) -> str:
    if loaded.kind == "svm":
        feats = loaded.inputs["features"]
        return "the LinearSVM on raw pixels" if feats == "raw" else f"backbone {feats} + the LinearSVM"
    head = "the embedding head + the LinearSVM" if loaded.svm is not None else "its classification head"
    return f"network {loaded.config.model.name} with {head}"


def _check_out(out: Path, fmt) -> None:
    if out.is_dir():
        raise ExportError(f"--out {out}: is a folder; name the file to write (e.g. {out / ('model' + fmt.suffix)})")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ExportError(f"--out {out}: {parent} is a file, not a folder")
            break


def export_run(run_dir: str | Path, fmt_name: str = "onnx", out: str | Path | None = None,
               data_root: str | None = None, batch_size: int | None = None) -> ExportResult:
    """Load the run -> build its ScoringGraph -> write it to a temporary file -> check it -> move it to `out`
    (default RUN_DIR/exports/model.<onnx|pt>) and write the sidecar. Raises before writing anything."""
    from dlstudy.inference import load_run
    from dlstudy.io import atomic_write_bytes, atomic_write_json
    from dlstudy.jobs.evaluate import data_config

    fmt = get_format(fmt_name)
    loaded = load_run(run_dir, device="cpu")  # DataError: not a run, no weights, a knn classifier
    out = Path(out) if out else loaded.path / "exports" / f"model{fmt.suffix}"
    _check_out(out, fmt)
    graph = ScoringGraph(loaded)
    h, w = (int(v) for v in loaded.inputs["image_size"])
    example = torch.zeros((2, int(loaded.inputs["channels"]), h, w), dtype=torch.uint8)
    what = _describe_network(loaded)
    with tempfile.TemporaryDirectory(prefix="dlstudy-export-") as tmp:
        written = Path(tmp) / f"model{fmt.suffix}"
        write_graph(fmt, graph, example, written, what)
        try:
            scorer = fmt.load(written)
        except Exception as exc:  # noqa: BLE001 - the runtime's own error types
            raise ExportError(f"{what}: {fmt.runtime} cannot load the {fmt.name} file: "
                              f"{str(exc).strip()[:300]}; nothing was written") from None
        check = check_export(loaded, scorer, fmt.runtime, data_config(loaded.config, None, data_root),
                             batch_size, label=f"{what}: the {fmt.name} file")
        if not check["passed"]:
            raise ExportError(f"{what}: the {fmt.name} file does not score as the run does; nothing was written. "
                              f"{format_check(check)}")
        meta = _sidecar(loaded, fmt, graph, out, what, check)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, written.read_bytes())
    try:
        sidecar = atomic_write_json(sidecar_path(out), meta)
    except BaseException:
        out.unlink(missing_ok=True)  # a file without its sidecar (inputs, classes, check) is not an export
        raise
    return ExportResult(out, sidecar, check)


def _sidecar(loaded, fmt, graph: ScoringGraph, out: Path, what: str, check: dict) -> dict:
    from dlstudy.runs import environment_info

    h, w = (int(v) for v in loaded.inputs["image_size"])
    channels = int(loaded.inputs["channels"])
    k = len(loaded.class_names)
    outputs = [{"name": name, "dtype": "float32", "shape": ["batch", k]} for name in graph.output_names]
    return {
        "file": out.name, "format": fmt.name, "run": str(loaded.path), "classifier": what,
        "score_kind": loaded.score_kind, "class_names": loaded.class_names,
        "input": {"name": "images", "dtype": "uint8", "layout": "NCHW", "shape": ["batch", channels, h, w],
                  "color": "gray" if channels == 1 else "RGB"},
        "outputs": outputs,
        "preprocessing": {
            "in_graph": "x / 255, then (x - mean) / std per channel"
                        + (", gray replicated to RGB for the backbone" if graph.channels else ""),
            "mean": graph.mean, "std": graph.std,
            "before_the_graph": f"decode to {'8-bit gray (L)' if channels == 1 else 'RGB'}, resize to {h}x{w} "
                                "(bilinear, antialiased, as dlstudy.data.registry.resize_images), stack as NCHW uint8",
        },
        "svm_temperature": graph.temperature if graph.svm is not None else None,
        "environment": environment_info("cpu"),  # versions (torch, torchvision, python), git commit, command
        "check": check,
    }
