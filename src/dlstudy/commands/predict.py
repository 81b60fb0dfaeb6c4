"""`dlstudy predict`: label image files with a finished run, as CSV.

    dlstudy predict runs/train-cifar10-airbench-ce-sgd photo.jpg more_photos/ --out labels.csv

One row per readable image: path, predicted class, its probability, then the top-k classes with theirs.
Folders are searched recursively for images (any format Pillow reads; gray, RGB or RGBA). Files that cannot be
read are listed on stderr with the reason and the others are still predicted (exit code 1 if any failed).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished (or checkpointed) train or svm run folder")
    parser.add_argument("paths", metavar="PATH", nargs="+", help="image files and / or folders of images")
    parser.add_argument("--out", default=None, help="CSV file to write (default: stdout)")
    parser.add_argument("--top-k", type=int, default=5, help="classes listed per image with their probabilities")
    parser.add_argument("--batch-size", type=int, default=256, help="images decoded and scored at a time")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")


def image_files(paths: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """(image files in the order given, folders expanded sorted; [(path, why)] of paths that do not exist)."""
    from dlstudy.data.sources import is_image_name

    files, missing = [], []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and is_image_name(f.name)
                            and not f.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            missing.append((str(p), "no such file or folder"))
    return files, missing


def no_images_error(paths: list[str], files: list[Path], failed: list[tuple[str, str]]):
    """DataError naming what was searched when not one image could be predicted (exit 2, no CSV written)."""
    from dlstudy.data.sources import IMAGE_EXTENSIONS
    from dlstudy.errors import DataError

    searched = ", ".join(paths[:5]) + (f", ... ({len(paths)} paths)" if len(paths) > 5 else "")
    if not files:
        what = f"no image files found (folders are searched recursively for {', '.join(IMAGE_EXTENSIONS[:5])}, ...)"
    else:
        what = f"none of the {len(files)} image file(s) found could be read"
    reasons = "; ".join(f"{p}: {why}" for p, why in failed[:5]) + ("; ..." if len(failed) > 5 else "")
    return DataError(f"nothing to predict in {searched}: {what}" + (f" ({reasons})" if reasons else "") +
                     "; nothing was written")


def run(args: argparse.Namespace) -> int:
    from dlstudy.errors import ConfigError
    from dlstudy.inference import load_run
    from dlstudy.progress import progress
    from dlstudy.runs import resolve_device
    from dlstudy.io import atomic_write_text

    if args.top_k < 1 or args.batch_size < 1:
        raise ConfigError(f"--top-k and --batch-size: expected >= 1, got {args.top_k} and {args.batch_size}")
    if args.out and Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: is a folder; give a CSV file name")
    loaded = load_run(args.run_dir, device=resolve_device(args.device))
    files, failed = image_files(args.paths)
    k = min(args.top_k, len(loaded.class_names))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "predicted", "probability"] + [f"{c}{i}" for i in range(1, k + 1) for c in ("top", "p")])
    starts = range(0, len(files), args.batch_size)
    for start in progress(starts, desc="predict", total=len(starts)):
        _predict_chunk(loaded, files[start:start + args.batch_size], k, writer, failed)
    if len(files) == sum(1 for p, _ in failed if Path(p) in set(files)):  # nothing predicted: write nothing
        raise no_images_error(args.paths, files, failed)
    if args.out:
        atomic_write_text(args.out, buf.getvalue())
    else:
        sys.stdout.write(buf.getvalue())
    for path, why in failed:
        print(f"dlstudy predict: cannot read {path}: {why}", file=sys.stderr)
    done = len(files) - sum(1 for p, _ in failed if Path(p) in set(files))
    if args.out:
        print(f"{done} image(s) predicted -> {args.out}" + (f"; {len(failed)} failed" if failed else ""),
              file=sys.stderr)
    return 1 if failed else 0


def _predict_chunk(loaded, chunk: list[Path], k: int, writer, failed: list) -> None:
    import numpy as np

    from dlstudy.inference import load_images

    images, ok, bad = load_images(chunk, loaded)
    failed += bad
    if not ok:
        return
    labels, probs = loaded.predict(images)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (B, k) class indices, most probable first
    names = loaded.class_names
    for path, label, row, order in zip(ok, labels, probs, top):
        cells = [c for j in order for c in (names[j], f"{row[j]:.6f}")]
        writer.writerow([path, names[label], f"{row[label]:.6f}"] + cells)
