"""`dlstudy export`: a finished run's classifier as one ONNX or TorchScript graph, checked against the run.

    dlstudy export runs/train-digits-smallcnn --format onnx                 # RUN_DIR/exports/model.onnx (+ .json)
    dlstudy export runs/svm-digits-raw --format torchscript --out svm.pt

The graph takes uint8 (N, C, H, W) images at the run's channels and size and returns probabilities (networks) or
margins and probabilities (SVMs); the preprocessing is built in. The file is scored on the run's own test images
and compared with its predictions.npz before it is written (docs/export.md); the check is printed and kept in the
sidecar `<file>.json`. Needs `pip install 'dlstudy[export]'` for ONNX.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished train or svm run folder")
    parser.add_argument("--format", default="onnx", choices=["onnx", "torchscript"], dest="fmt",
                        help="onnx (checked with onnxruntime) or torchscript (checked with torch.jit.load)")
    parser.add_argument("--out", default=None,
                        help="file to write (default RUN_DIR/exports/model.onnx or .pt); the sidecar is FILE.json")
    parser.add_argument("--data-root", default=None,
                        help="folder holding the run's dataset, when it is not where the run found it")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass in the check (default: the run's train.eval_batch_size)")


def run(args: argparse.Namespace) -> int:
    from dlstudy.errors import ConfigError
    from dlstudy.export import export_run, format_check

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size: expected >= 1, got {args.batch_size}")
    result = export_run(args.run_dir, args.fmt, args.out, args.data_root, args.batch_size)
    print(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.2f} MB) and {result.sidecar}")
    print(format_check(result.check))
    return 0
