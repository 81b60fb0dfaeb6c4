"""GPU readiness: every CUDA-only path of dlstudy once, in under 10 minutes, as one table.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--work DIR] [--budget-s 570]
    python benchmarks/gpu_check.py --allow-cpu --tiny     # the same logic on CPU at tiny sizes (no speed meaning)

It needs no install: where dlstudy is not installed it runs from this checkout's src/ with the machine's own torch,
torchvision, numpy, SciPy, scikit-learn, matplotlib, PyYAML, tqdm and Pillow (a GPU image's torch need not be the pinned
2.14.1: `pip install -e .` there would try to fetch it; the environment line and --out JSON record the versions used).

Rows, each in its own try/except under its own time limit; every ratio is measured in this run:
  train-fp32              bench_train: engine step, ResNet18 32 px b128 fp32; ratio = engine / hand-written loop
  train-bf16-cl           the same step with AMP bf16 + channels_last; ratio = vs train-fp32 (the AMP speed-up)
  train-resnet50-bf16-cl  bench_train's ResNet50 224 px b128 bf16 + channels_last row; ratio = engine / hand loop
  svm-cuda                bench_svm: our LinearSVM on CUDA (synthetic 10,000 x 512); ratio = LinearSVC fit s / ours
  finetune                a `dlstudy train` job (jobs.run_job): ResNet18 on digits at 32 px, bf16 + channels_last,
                          one head-only epoch then the whole network
  loss-study              studies/losses-quick.yaml through the study runner at the tiny budget, bf16 + channels_last
  train-compile           torch.compile(model) vs eager, ResNet18 32 px b128 bf16 + channels_last (last: slowest)
Exit status: 0 when no row failed, 1 when one did, 2 when there is no CUDA device and no --allow-cpu.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import logging
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("MPLBACKEND", "Agg")  # the jobs save figures; a GPU box usually has no display
os.environ.setdefault("DLSTUDY_NO_PROGRESS", "1")  # one line per row, not tqdm bars from every epoch
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_train, bench_svm beside this file
try:
    import dlstudy
except ImportError:  # a GPU image with its own torch (pip install would fetch the pinned torch): run from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import dlstudy

import bench_svm  # noqa: E402
import bench_train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOSSES_QUICK = REPO / "studies" / "losses-quick.yaml"
MIN_ROW_S = 20.0  # a row is not started with less than this left of the total budget: it would only time out

# The fine-tuning job: finetune-quick.yaml's resnet18-freeze1 arm at 32 px with the CUDA-only switches on.
FINETUNE = {"task": "train", "name": "finetune", "data": {"name": "digits", "image_size": 32},
            "model": {"name": "resnet18", "weights": "none", "small_input_stem": True},
            "optim": {"name": "adam", "lr": 0.003},
            "train": {"epochs": 2, "batch_size": 64, "freeze_backbone_epochs": 1, "backbone_lr_mult": 0.1,
                      "amp": "bf16", "channels_last": True, "evaluate_before": True, "train_eval_subset": 256}}


@dataclass(frozen=True)
class Sizes:
    size: int  # ResNet18 training-step rows: image side, batch, timed steps, timed repeats (bench_train's CUDA rows)
    batch: int
    steps: int
    repeats: int
    r50_size: int  # ResNet50 row
    r50_batch: int
    r50_steps: int
    svm_n: int  # synthetic SVM data: rows (80% train) x features
    svm_d: int
    finetune: dict = field(default_factory=dict)  # config layer over FINETUNE


FULL = Sizes(32, 128, 30, 3, 224, 128, 30, 12500, 512)  # bench_train's CUDA rows; bench_svm --quick's synthetic
# CPU smoke test: every path once in seconds on 2 cores; the finetune layer is reproduce's tiny budget with two
# epochs kept, so the head-only epoch and the unfreeze both happen.
TINY = Sizes(16, 8, 2, 1, 16, 4, 1, 1500, 64, finetune={
    "data": {"image_size": 16, "max_train": 240, "max_eval": 120},
    "train": {"batch_size": 32, "max_steps_per_epoch": 4, "train_eval_subset": 64, "eval_batch_size": 256}})


@dataclass
class Context:
    device: str  # cuda | cpu
    sizes: Sizes
    work: Path  # run and study folders of the finetune and loss-study rows
    results: dict = field(default_factory=dict)  # check name -> finished row (train-bf16-cl reads train-fp32)


@dataclass(frozen=True)
class Check:
    name: str
    ran: str  # what it runs, formatted with the Sizes fields
    run: Callable[[Context], dict]  # -> row fields: images_per_s | fit_s, ratio, baseline, note
    limit_s: float  # this row's own time limit; past it the row is FAILED (timed out)
    cpu_skip: str = ""  # when set, the row is skipped on CPU with this note


class RowTimeout(BaseException):
    """Raised by SIGALRM. A BaseException so the study runner's per-arm `except Exception` cannot swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise RowTimeout in the main thread after `seconds` (where SIGALRM exists; elsewhere no limit)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise RowTimeout(f"timed out after {seconds:.0f} s (this row's limit)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer_left, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:  # an enclosing alarm (e.g. pytest-timeout's) keeps what was left of it
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - start), 1e-3))


# ------------------------------------------------------------------------------------------------ the checks


def _train_step(ctx: Context, name: str, size: int, batch: int, steps: int, amp: str, sides: dict | None = None):
    """bench_train.measure; amp implies channels_last, as in bench_train's CUDA rows."""
    return bench_train.measure(name, name, size, batch, steps, ctx.sizes.repeats, ctx.device, amp, amp != "none",
                               sides=sides)


def check_train_fp32(ctx: Context) -> dict:
    s = ctx.sizes
    r = _train_step(ctx, "resnet18", s.size, s.batch, s.steps, "none")
    return {"images_per_s": r["ours_img_s"], "ratio": r["ratio"], "peak_mib": r["ours_peak_mib"],
            "baseline": f"hand-written loop, {r['peer_img_s']:.0f} img/s"}


def check_train_bf16(ctx: Context) -> dict:
    s = ctx.sizes
    r = _train_step(ctx, "resnet18", s.size, s.batch, s.steps, "bf16")
    fp32 = ctx.results.get("train-fp32", {}).get("images_per_s")
    note = f"engine / hand-written loop {r['ratio']:.2f}"
    return {"images_per_s": r["ours_img_s"], "ratio": r["ours_img_s"] / fp32 if fp32 else None,
            "peak_mib": r["ours_peak_mib"],
            "baseline": "train-fp32 (engine)" if fp32 else "train-fp32 failed: no ratio", "note": note}


def check_train_resnet50(ctx: Context) -> dict:
    s = ctx.sizes
    r = _train_step(ctx, "resnet50", s.r50_size, s.r50_batch, s.r50_steps, "bf16")
    note = "published: ~2,500 img/s on one A100 (NVIDIA DeepLearningExamples)" if ctx.device == "cuda" else ""
    return {"images_per_s": r["ours_img_s"], "ratio": r["ratio"], "peak_mib": r["ours_peak_mib"],
            "baseline": f"hand-written loop, {r['peer_img_s']:.0f} img/s", "note": note}


def check_train_compile(ctx: Context) -> dict:
    s = ctx.sizes
    # Both sides are the engine; the first (warm-up) call of the compiled side pays the compilation.
    sides = {"ours": functools.partial(bench_train.ours, compile=True), "peer": bench_train.ours}
    r = _train_step(ctx, "resnet18", s.size, s.batch, s.steps, "bf16", sides=sides)
    return {"images_per_s": r["ours_img_s"], "ratio": r["ratio"], "peak_mib": r["ours_peak_mib"],
            "baseline": f"eager engine, {r['peer_img_s']:.0f} img/s"}


def check_svm(ctx: Context) -> dict:
    from dlstudy.svm import LinearSVM

    s, C = ctx.sizes, 0.01  # bench_svm's default C
    data = bench_svm.synthetic(s.svm_n, s.svm_d)
    Xtr, Xte = bench_svm.standardise(data[0], data[2])
    if ctx.device == "cuda":  # first-use costs (cuBLAS handles, kernels) are not fit time
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 5 iterations do not converge, and need not
            LinearSVM(C=C, dtype="float32", device="cuda", max_iter=5).fit(Xtr[:500], data[1][:500])
    ours, peer = bench_svm.compare("synthetic", data, C, ctx.device)
    note = f"test acc {ours['acc']:.3f} (LinearSVC {peer['acc']:.3f})"
    note += " ConvergenceWarning" if ours["warned"] else ""
    if ctx.device == "cuda":
        cpu = bench_svm.fit_one("ours (cpu)", lambda: LinearSVM(C=C, dtype="float32", device="cpu"),
                                Xtr, data[1], Xte, data[3])
        note += f"; our CPU fit {cpu['fit_s']:.2f} s, CUDA {cpu['fit_s'] / ours['fit_s']:.1f}x faster"
    return {"fit_s": ours["fit_s"], "ratio": ours["speedup"], "baseline": f"LinearSVC fit {peer['fit_s']:.2f} s",
            "note": note}


def _cpu_amp() -> str:
    """What train.amp=bf16 does in a CPU job: the engine decides (per CPU in newer engines, never in older ones)."""
    try:
        from dlstudy.engine.loop import amp_dtype_for
    except ImportError:
        return "CPU: amp is CUDA only in this engine, float32"
    dtype, why_not = amp_dtype_for("bf16", "cpu")
    return f"CPU: {why_not}, float32" if why_not else "CPU: bf16 autocast (native bf16 CPU)"


def check_finetune(ctx: Context) -> dict:
    from dlstudy.config import build_run_config
    from dlstudy.jobs import run_job
    from dlstudy.runs import RunDir

    cfg = build_run_config(FINETUNE, ctx.sizes.finetune, {"device": ctx.device})
    metrics = run_job(cfg, RunDir(ctx.work / "finetune"))
    note = f"test acc {metrics['before']['accuracy']:.3f} before -> {metrics['accuracy']:.3f} after"
    if ctx.device == "cpu":
        note += f"; {_cpu_amp()}"
    return {"images_per_s": metrics.get("images_per_s"), "baseline": "— (end-to-end job)", "note": note}


def check_loss_study(ctx: Context) -> dict:
    import statistics

    from dlstudy.config import deep_merge
    from dlstudy.studies.running.reproduce import BUDGETS
    from dlstudy.studies.running.runner import run_study

    tiny = BUDGETS["tiny"]  # `dlstudy reproduce --budget tiny`: every code path once, numbers meaningless
    layer = deep_merge(tiny["overrides"], {"device": ctx.device, "train": {"amp": "bf16", "channels_last": True}})
    _, results = run_study(LOSSES_QUICK, ctx.work / "studies", layer, seeds=tiny["seeds"])
    failed = [f"{r.arm}: {r.error}" for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)}/{len(results)} arm(s) failed; first {failed[0]}")
    speeds = [r.metrics["images_per_s"] for r in results if (r.metrics or {}).get("images_per_s")]
    accs = ", ".join(f"{(r.metrics or {}).get('accuracy', float('nan')):.2f}" for r in results)
    return {"images_per_s": statistics.mean(speeds) if speeds else None, "baseline": "— (end-to-end study)",
            "note": f"{len(results)} arms ok, mean img/s over arms; test acc {accs}"}


CHECKS = (
    Check("train-fp32", "engine step resnet18 {size}px b{batch} fp32, steps {steps} x {repeats}", check_train_fp32,
          120),
    Check("train-bf16-cl", "engine step resnet18 {size}px b{batch} bf16 + channels_last", check_train_bf16, 90),
    Check("train-resnet50-bf16-cl", "engine step resnet50 {r50_size}px b{r50_batch} bf16 + channels_last, "
          "steps {r50_steps} x {repeats}", check_train_resnet50, 120),
    Check("svm-cuda", "LinearSVM float32 OvR, synthetic {svm_n}x{svm_d} (80% train)", check_svm, 120),
    Check("finetune", "dlstudy train job: resnet18 digits, head-only epoch + unfreeze, bf16 + channels_last",
          check_finetune, 120),
    Check("loss-study", "run_study losses-quick.yaml, tiny budget, bf16 + channels_last", check_loss_study, 180),
    Check("train-compile", "torch.compile engine step resnet18 {size}px b{batch} bf16 + channels_last",
          check_train_compile, 300, cpu_skip="compile: CUDA only in this check"),
)


# ------------------------------------------------------------------------------------------------ running


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def run_check(check: Check, ctx: Context, limit_s: float) -> dict:
    """One row: its fields, status ok or FAILED with the one-line error (the traceback goes to stderr)."""
    row: dict = {}
    try:
        with time_limit(limit_s):
            row = check.run(ctx)
        row["status"] = "ok"
    except (Exception, RowTimeout) as exc:  # noqa: BLE001 - one failed row must not hide the others
        traceback.print_exc(file=sys.stderr)
        row = {"status": "FAILED", "error": one_line(exc)}
    finally:
        gc.collect()  # the next row measures speed and memory: drop this row's models and CUDA blocks first
        if ctx.device == "cuda":
            import torch

            torch.cuda.empty_cache()
    return row


def run_checks(checks, ctx: Context, budget_s: float) -> list[dict]:
    """Every check in order; a row that would start with under MIN_ROW_S of the budget left is skipped."""
    start, rows = time.perf_counter(), []
    for i, check in enumerate(checks, 1):
        left = budget_s - (time.perf_counter() - start)
        ran = f"{ctx.device}: " + check.ran.format(**dataclasses.asdict(ctx.sizes))
        row = {"check": check.name, "ran": ran, "images_per_s": None,
               "fit_s": None, "ratio": None, "baseline": "", "note": "", "error": ""}
        t0 = time.perf_counter()
        if check.cpu_skip and ctx.device == "cpu":
            row.update(status="skipped", note=check.cpu_skip)
        elif left < MIN_ROW_S:
            row.update(status="skipped", note=f"time budget: {max(left, 0):.0f} s of {budget_s:.0f} s left")
        else:
            row.update(run_check(check, ctx, min(check.limit_s, left)))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        ctx.results[check.name] = row
        rows.append(row)
        print(f"[{i}/{len(checks)}] {check.name}: {row['status']} ({row['seconds']:.1f} s) "
              f"{row['error'] or row['note']}", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ output


def environment(device: str) -> dict:
    import torch

    env = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
           "cpu_threads": torch.get_num_threads(), "dlstudy": str(Path(dlstudy.__file__).resolve().parent)}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
    else:
        env["device_name"] = f"CPU {platform.processor() or platform.machine()}"
    return env


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict]) -> str:
    lines = ["| check | ran | result | ratio | ratio vs | s | status | note |", "|" + "---|" * 8]
    for r in rows:
        if r["images_per_s"] is not None:
            result = f"{r['images_per_s']:,.0f} img/s"
        elif r["fit_s"] is not None:
            result = f"{r['fit_s']:.3f} s fit"
        else:
            result = "—"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "—"
        status = r["status"] + (f": {r['error']}" if r["error"] else "")
        cells = [r["check"], r["ran"], result, ratio, r["baseline"] or "—", f"{r['seconds']:.1f}", status, r["note"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the table (and environment) as JSON")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="without CUDA, run every row on CPU at tiny sizes instead of exiting 2 (tests the logic)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (always on for CPU): seconds, not speeds")
    parser.add_argument("--budget-s", type=float, default=570.0,
                        help="total seconds for the rows; later rows are skipped when it runs out (default 570: "
                             "under 10 minutes with start-up)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's on CUDA, 1 on CPU, where 2 threads on a shared "
                             "2-core machine ran the tiny rows 10x slower)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the finetune run and loss study here (default: a temporary folder, removed)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    if torch.cuda.is_available():
        device = "cuda"
    elif args.allow_cpu:
        device = "cpu"
    else:
        print(f"no CUDA device: torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no GPU; run this "
              f"on a CUDA machine, or pass --allow-cpu --tiny to check the script's logic on CPU", file=sys.stderr)
        return 2
    if args.threads or device == "cpu":
        torch.set_num_threads(args.threads or 1)
    sizes = TINY if args.tiny or device == "cpu" else FULL
    env = environment(device)
    print(f"device {env['device_name']}; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
          f"python {env['python']}; dlstudy from {env['dlstudy']}; sizes {'tiny' if sizes is TINY else 'full'}; "
          f"budget {args.budget_s:.0f} s",
          flush=True)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_check-")))
        rows = run_checks(CHECKS, Context(device, sizes, work), args.budget_s)
    total_s = time.perf_counter() - start
    failed = [r["check"] for r in rows if r["status"] == "FAILED"]
    skipped = sum(r["status"] == "skipped" for r in rows)
    print("\n" + markdown_table(rows))
    print(f"\n{len(rows) - len(failed) - skipped} ok, {skipped} skipped, {len(failed)} FAILED in {total_s:.0f} s"
          + (f": {', '.join(failed)}" if failed else ""))
    if args.out:
        from dlstudy.io import atomic_write_json

        atomic_write_json(args.out, {"env": env, "sizes": "tiny" if sizes is TINY else "full",
                                     "budget_s": args.budget_s, "total_s": round(total_s, 1), "rows": rows})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
