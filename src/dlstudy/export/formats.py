"""Export formats: how a ScoringGraph is written, and how the written file is run back for the check.

    FORMATS["onnx"].write(graph, example, path)        # torch.onnx.export (the torch.export-based exporter)
    scorer = FORMATS["onnx"].load(path)                # onnxruntime on the CPU
    scorer(images_uint8_numpy) -> [outputs as float32 arrays]

Both formats take uint8 (N, C, H, W) with a dynamic batch axis N, named "images".
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dlstudy.errors import DlstudyError

INPUT_NAME = "images"
Scorer = Callable[[np.ndarray], list]  # uint8 (N, C, H, W) -> [(N, K) float32 per output]


class ExportError(DlstudyError):
    """The run cannot be exported: a package missing, a network the exporter cannot express, or an export
    that does not score as the run does. Nothing was written."""


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    packages: tuple[str, ...]  # needed to write and to check; imported before anything else is done
    runtime: str  # what the check runs the file with, in words
    write: Callable  # (graph, example uint8 batch, path) -> None
    load: Callable[[Path], Scorer]


@contextlib.contextmanager
def _quiet():
    """The exporters' notes (TorchScript's deprecation, tracer warnings on constants of the eval transform) are
    no news to a user of the command: the check says whether the file scores as the run does."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]  # INFO pass notes
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _exporter_message(exc: BaseException) -> str:
    """The informative lines of an exporter error: torch.onnx's 'Exception summary' when it has one."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    summary = [re.sub(r"^<class '(?:\w+\.)*(\w+)'>", r"\1", ln.strip()) for ln in text.splitlines()
               if ln.strip().startswith("<class ")]
    lines = summary or [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0][:400] if lines else type(exc).__name__


def _write_onnx(graph, example: torch.Tensor, path: Path) -> None:
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(graph, (example,), None, input_names=[INPUT_NAME],
                                    output_names=graph.output_names, dynamo=True, verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
        program.save(str(path), external_data=False)  # one file (models here are far below protobuf's 2 GB)


def _load_onnx(path: Path) -> Scorer:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {INPUT_NAME: images})


def _write_torchscript(graph, example: torch.Tensor, path: Path) -> None:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(graph, example, check_trace=False)  # the check below runs other batch sizes
        torch.jit.save(traced, str(path))


def _load_torchscript(path: Path) -> Scorer:
    with _quiet():
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def score(images: np.ndarray) -> list:
        with torch.no_grad(), _quiet():
            return [out.numpy() for out in module(torch.from_numpy(images))]
    return score


FORMATS: dict[str, Format] = {
    "onnx": Format("onnx", ".onnx", ("onnx", "onnxscript", "onnxruntime"), "onnxruntime", _write_onnx, _load_onnx),
    "torchscript": Format("torchscript", ".pt", (), "TorchScript (torch.jit.load)", _write_torchscript,
                          _load_torchscript),
}


def get_format(name: str) -> Format:
    """The format `name`, its packages imported; ExportError naming what to install when one is missing."""
    if name not in FORMATS:
        raise ExportError(f"--format: expected one of {list(FORMATS)}, got {name!r}")
    fmt = FORMATS[name]
    missing = []
    for package in fmt.packages:
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    if missing:
        raise ExportError(f"--format {name} needs the package(s) {', '.join(missing)}, not installed here: "
                          f"pip install 'dlstudy[export]' (onnx, onnxscript, onnxruntime); nothing was written")
    return fmt


def write_graph(fmt: Format, graph, example: torch.Tensor, path: Path, what: str) -> None:
    """fmt.write, any exporter failure an ExportError naming the network `what` and the exporter's reason."""
    try:
        fmt.write(graph, example, path)
    except Exception as exc:  # the exporters raise many types (torch.export, ONNX conversion, tracing)
        raise ExportError(f"{what} cannot be exported to {fmt.name}: {_exporter_message(exc)}; nothing was "
                          f"written" + ("" if fmt.name == "torchscript" else " (try --format torchscript)")) from None
