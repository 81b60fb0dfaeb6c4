"""`dlstudy predict` (batched) vs a one-image-at-a-time loop over the same files, with the same run.

    .venv/bin/python benchmarks/bench_predict.py [--images 1000] [--data-root ../shared/data]

The images are 32x32 RGB JPEGs taken out of the CIFAR-10 tar when ../shared/data has it (else CIFAR-sized
random PNGs); the run is a smallcnn trained for a few steps on them (the weights do not change the cost).
Rows: the `predict` command (decode in chunks + batched forward + CSV), the same through `load_run` in Python,
and the loop users write without it (read one file, `run.predict` it, next). Target: >= 5x for the command.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from timing import best_time


def make_images(folder: Path, n: int, data_root: Path | None) -> list[Path]:
    """n image files under folder/train/<class>/ (so the folder also trains a run)."""
    from PIL import Image

    files = []
    if data_root is not None and (data_root / "cifar10-train-jpg.tar.gz").is_file():
        from dlstudy.data.sources import find_prefix, open_tree

        tree = open_tree(data_root / "cifar10-train-jpg.tar.gz")
        tree = tree.sub(find_prefix(tree, "train/") or "")
        names = [m for m in tree.names() if m.endswith(".jpg")]
        names = names[::max(1, len(names) // n)][:n]  # spread over every class folder
        for name in names:
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tree.read(name))
            files.append(path)
        return files
    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / "train" / f"class{i % 10}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        files.append(path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--model", default="smallcnn")
    args = parser.parse_args()

    import dlstudy
    from dlstudy.cli import main as cli
    from dlstudy.config import build_run_config
    from dlstudy.inference import load_images
    from dlstudy.jobs import run_job
    from dlstudy.runs import RunDir

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = Path(args.data_root)
        files = make_images(tmp / "images", args.images, root if root.is_dir() else None)
        cfg = build_run_config({"task": "train", "device": "cpu", "model": {"name": args.model},
                                "data": {"name": "imagefolder", "root": str(tmp / "images"), "cache": False},
                                "train": {"epochs": 1, "batch_size": 64, "max_steps_per_epoch": 3,
                                          "evaluate_before": False}})
        run_job(cfg, RunDir(tmp / "run"))
        run = dlstudy.load_run(tmp / "run")
        out = tmp / "labels.csv"

        def command():
            cli(["predict", str(tmp / "run"), str(tmp / "images"), "--out", str(out)])

        def api():
            images, ok, _ = load_images(files, run)
            run.predict(images)

        def loop():
            for f in files:
                images, ok, _ = load_images([f], run)
                run.predict(images)

        rows = [("dlstudy predict (command: decode + batched forward + CSV)", best_time(command, 3, warmup=False)),
                ("load_images + LoadedRun.predict, one batch", best_time(api, 3, warmup=False)),
                ("one image at a time (read, predict, next)", best_time(loop, 1, warmup=False))]
    loop_s = rows[-1][1]
    print(f"# predict on {len(files)} 32x32 RGB images, {args.model}, CPU ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__})")
    print(f"{'what':<60} {'s':>8} {'images/s':>10} {'x loop':>8}")
    for name, seconds in rows:
        print(f"{name:<60} {seconds:>8.3f} {len(files) / seconds:>10,.0f} {loop_s / seconds:>8.1f}")
    ratio = loop_s / rows[0][1]
    print(f"\ncommand vs one-at-a-time loop = {ratio:.1f}x  (target >= 5x: {'met' if ratio >= 5 else 'NOT met'})")


if __name__ == "__main__":
    main()
