"""One typed config tree: dataclasses filled from YAML or dicts, unknown keys rejected, `--set a.b=v` overrides.

The schema below is the single source of truth for every job (SVM, training, loss and optimizer arms). A study file
(`studies/*.yaml`) holds a `base` RunConfig and a list of arms, each a partial RunConfig merged over the base.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from dlstudy.errors import ConfigError

# ----------------------------------------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    name: str = "digits"  # a key of dlstudy.data.DATASETS
    root: str | None = None  # where the files are; None searches the dataset's default places
    val_fraction: float = 0.1  # of the training pool, held out for model selection (never test)
    test_fraction: float = 0.2  # only for datasets without an official test split (digits, train-only folders)
    split_seed: int = 0  # fixed so every arm of a study sees the same split
    image_size: int | None = None  # resize to this square size; None keeps the native size
    normalize: str = "dataset"  # dataset | imagenet | none
    augment: str = "none"  # a key of dlstudy.data.AUGMENT_PRESETS, applied to training batches only
    max_train: int | None = None  # cap on training images (stratified), for quick budgets
    max_eval: int | None = None  # cap on val and test images (stratified)
    download: bool = False  # use torchvision's downloader where one exists (needs network)
    cache: bool = True  # keep decoded uint8 tensors on disk so the next load skips decoding
    cache_dir: str | None = None  # None: $DLSTUDY_CACHE, else ~/.cache/dlstudy


@dataclass
class ModelConfig:
    # ours (smallcnn, resnet18, ... in dlstudy.models.MODELS), tv:<name> (any torchvision classification model) or
    # timm:<name> (any timm model); `dlstudy models PATTERN` lists them, docs/models.md
    name: str = "smallcnn"
    # none | imagenet (torchvision's $TORCH_HOME cache; timm's Hugging Face cache, never downloaded) |
    # PATH (.safetensors / .pth state dict or checkpoint) | RUN_DIR
    weights: str = "none"
    small_input_stem: bool | None = None  # ours only: 3x3 stem without max-pool; None: on for inputs <= 64 px
    embedding_dim: int | None = None  # L2-normalised embedding head for metric learning; None: no embedding head
    dropout: float = 0.0


@dataclass
class OptimConfig:
    name: str = "adam"  # a key of dlstudy.optim.OPTIMIZERS (sgd, momentum, nesterov, adam, adamw, rmsprop)
    lr: float = 1e-3  # peak lr of the head group; schedules scale it, train.backbone_lr_mult scales the backbone's
    weight_decay: float = 0.0  # L2 for sgd/adam/rmsprop, decoupled for adamw
    momentum: float | None = None  # None: the optimizer's registry default (0.9 for momentum/nesterov)
    betas: list[float] | None = None  # adam/adamw [beta1, beta2]; None: (0.9, 0.999)
    eps: float | None = None  # adam/adamw/rmsprop; None: 1e-8
    lr_grid: list[float] | None = None  # equal-effort learning-rate search on the val split (studies only)


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 64  # per process under DDP (torchrun): the global batch is batch_size x world size
    eval_batch_size: int = 512
    schedule: str = "constant"  # constant | step | cosine | linear | onecycle
    warmup_epochs: float = 0.0
    step_size: int = 30  # epochs between decays for `step`
    gamma: float = 0.1
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    amp: str = "none"  # none | bf16 | fp16 (CUDA only)
    channels_last: bool = False
    compile: bool = False
    freeze_backbone_epochs: int = 0  # head-only epochs before the backbone is unfrozen
    backbone_lr_mult: float = 1.0  # discriminative LR: backbone lr = lr * this once unfrozen
    deterministic: bool = False
    # torch CPU threads for this run; None: chosen by the work per step (dlstudy.engine.threads: one thread for
    # tiny steps such as a batch-1 MLP, whose ops cost less than a thread hand-off; every core for conv nets).
    # env.json records the count used (torch_threads) and why (torch_threads_rule)
    num_threads: int | None = None
    max_steps_per_epoch: int | None = None
    train_eval_subset: int = 1000  # fixed train subset whose loss/accuracy is measured each epoch
    evaluate_before: bool = True  # evaluate the untrained (new-head) model on test first
    frozen_bn: bool = False  # allow BatchNorm models at batch size 1 by freezing BN statistics
    checkpoint: bool = True
    # keep checkpoints/last.pt (optimizer state etc., ~3x the weights) once the run is finished (DONE); best.pt, what
    # `dlstudy evaluate` / load_run use, is always kept. True lets `--resume --set train.epochs=N` extend it later
    keep_last_checkpoint: bool = False
    # also log the run's curves and results to these (--log; docs/tracking.md): tensorboard (RUN/tensorboard/),
    # mlflow (OUT/mlflow.db, or --mlflow-uri); pip install 'dlstudy[tracking]'. Names: dlstudy.tracking.TRACKERS
    log: list[Literal["tensorboard", "mlflow"]] = field(default_factory=list)


@dataclass
class LossConfig:
    name: str = "ce"  # ce | triplet+ce | center+ce | triplet
    ce_weight: float = 1.0
    triplet_weight: float = 1.0
    triplet_margin: float = 0.2
    triplet_mining: str = "semihard"  # all | hard | semihard
    triplet_squared: bool = False
    triplet_soft: bool = False
    triplet_normalize: bool = True  # L2-normalise before distances (then a 0.2 margin is on a [0, 2] scale)
    triplet_distance: str = "euclidean"  # euclidean | cosine (1 - cos similarity)
    center_weight: float = 0.01  # lambda of Wen et al. 2016
    center_lr: float = 0.5  # alpha, the centres' own update rate
    classes_per_batch: int = 16  # P of the P x K sampler (triplet objectives)
    samples_per_class: int = 4  # K of the P x K sampler


@dataclass
class SVMConfig:
    features: str = "raw"  # raw | a backbone of dlstudy.models.MODELS (embedding arms use eval.classifier=svm)
    weights: str = "imagenet"  # weights of the feature backbone
    multi_class: str = "ovr"  # ovr | crammer_singer | weston_watkins
    loss: str = "squared_hinge"  # squared_hinge | hinge (ovr only)
    C: list[float] = field(default_factory=lambda: [1.0])  # several: chosen on val
    kernel: str = "linear"  # linear | rbf (random Fourier features)
    gamma: float | None = None  # rbf width; None: 1 / (n_features * X.var())
    n_components: int = 2000
    fit_intercept: bool = True  # unregularised bias per class
    class_weight: str | None = None  # None | balanced
    tol: float = 1e-3  # relative duality gap at which fitting stops: objective within 0.1% of the optimum
    max_iter: int = 1000  # Newton iterations (a ConvergenceWarning when reached)
    batch_size: int | None = None  # stream X through the solver in row chunks of this size (data > device memory)
    dtype: str = "float64"  # solver precision; float32 is faster for squared hinge, float64 safer for the others


# eval.tta's modes, the one list: models.forward applies them
TtaMode = Literal["none", "flip"]
TTA_MODES: tuple[str, ...] = typing.get_args(TtaMode)


@dataclass
class EvalConfig:
    classifier: str = "head"  # head | svm | knn  (svm/knn fit on train embeddings)
    knn_k: int = 5
    # test-time augmentation of the head's logits: flip averages each image's and its mirror image's (twice the
    # evaluation cost; for data whose classes are mirror-symmetric, not digits)
    tta: TtaMode = "none"
    retrieval_metrics: bool = True  # embedding arms: precision@1, recall@k, MAP@R of test queries vs train
    save_embeddings: bool = True  # embedding arms: keep test embeddings (embeddings_test.pt) for the PCA figure


@dataclass
class RunConfig:
    task: str = "train"  # train | svm
    name: str | None = None  # run folder name; None: derived from task, data and model
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    svm: SVMConfig = field(default_factory=SVMConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class ArmConfig:
    name: str
    set: dict[str, Any] = field(default_factory=dict)  # partial RunConfig (nested or dotted keys) over the base


@dataclass
class StatsConfig:
    """`stats:` of a study file: how its report's intervals and significance tests are computed."""

    confidence: float = 0.95  # of every interval; 1 - confidence is the significance level of the tests
    resamples: int = 10000  # bootstrap resamples over the test samples (single-seed arms)
    seed: int = 0  # of the bootstrap: the same seed gives the same report

    def __post_init__(self) -> None:
        if not (isinstance(self.confidence, float) and 0 < self.confidence < 1):
            raise ConfigError(f"stats.confidence: expected a number in (0, 1), got {self.confidence!r}")
        if self.resamples < 100:
            raise ConfigError(f"stats.resamples: expected >= 100, got {self.resamples}")
        if self.seed < 0:
            raise ConfigError(f"stats.seed: expected >= 0, got {self.seed}")


@dataclass
class ExecutorConfig:
    """`executor:` of a study file: where its runs execute; `dlstudy run` flags override it (docs/cluster.md)."""

    name: str = "local"  # local (--jobs processes) | ray | slurm: a key of dlstudy.studies.running.executors.EXECUTORS
    address: str | None = None  # ray: the cluster to join (HEAD_IP:6379, or auto on a cluster node); None: a local one
    cpus_per_run: int | None = None  # CPU cores (and torch threads) per run; None: 1 on ray/slurm, cores/--jobs here
    # GPUs per run; None: 1 for a cuda run (or device auto on a cluster with GPUs), else 0. Above 1, the run is one
    # DistributedDataParallel job of that many processes on one node (torchrun inside the task)
    gpus_per_run: int | None = None
    # is --out the same folder on every node? None: each task checks; false: each finished run folder is sent back
    # to the driver (a tar through Ray's object store)
    shared_out: bool | None = None
    retries: int = 2  # ray: times a run is retried when its worker or node dies
    partition: str | None = None  # slurm: --partition
    time_min: int = 60  # slurm: --time of each run, minutes
    array_parallelism: int = 256  # slurm: runs of the job array running at once
    slurm: dict[str, Any] = field(default_factory=dict)  # slurm: more sbatch options, e.g. {account: lab, qos: high}

    def __post_init__(self) -> None:
        for key in ("cpus_per_run", "retries", "time_min", "array_parallelism"):
            value = getattr(self, key)
            least = 0 if key == "retries" else 1
            if value is not None and value < least:
                raise ConfigError(f"executor.{key}: expected >= {least}, got {value}")
        if self.gpus_per_run is not None and self.gpus_per_run < 0:
            raise ConfigError(f"executor.gpus_per_run: expected >= 0, got {self.gpus_per_run}")


@dataclass
class StudyConfig:
    name: str
    description: str = ""
    kind: str = "generic"  # svm | finetune | losses | optimizers | generic: which tables the report builds
    seeds: list[int] = field(default_factory=lambda: [0])
    base: dict[str, Any] = field(default_factory=dict)  # partial RunConfig shared by every arm
    arms: list[ArmConfig] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)  # dotted key -> values: arms x every combination
    reference: dict[str, Any] = field(default_factory=dict)  # the reference report's numbers, shown beside ours
    # wall minutes of the whole study measured on the reference machine (2 idle cores; the file's header says
    # which): `dlstudy reproduce` scales it by a short calibration to print an estimate before it starts
    minutes: float | None = None
    # time budget (`--minutes`, docs/studies.md): this study's share of a reproduce budget (None: `minutes`, else 1),
    # arm -> relative time of each of its runs (default 1), and the schedule that replaces a constant one in budgeted
    # runs (linear decay to zero at the last step, Li et al. 2020; "constant" keeps it)
    budget_share: float | None = None
    budget_weights: dict[str, float] = field(default_factory=dict)
    # arm -> the fewest epochs (full passes over its training split) each of its runs trains under --minutes: a
    # floor the equal-time split cannot go under (Q3's batch-1 arm sees every image at least once)
    budget_min_epochs: dict[str, float] = field(default_factory=dict)
    budget_schedule: str = "linear"
    stats: StatsConfig = field(default_factory=StatsConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    # a study of more than 1,000 runs (arms x grid x seeds) runs only when confirmed: --yes, or this >= the count
    confirm_runs: int | None = None

    def __post_init__(self) -> None:
        if self.budget_share is not None and not (math.isfinite(self.budget_share) and self.budget_share > 0):
            raise ConfigError(f"study.budget_share: expected a number > 0, got {self.budget_share!r}")
        bad = {k: v for k, v in self.budget_weights.items() if not (math.isfinite(v) and v > 0)}
        if bad:
            raise ConfigError(f"study.budget_weights: expected numbers > 0, got {bad}")
        bad = {k: v for k, v in self.budget_min_epochs.items() if not (math.isfinite(v) and v > 0)}
        if bad:
            raise ConfigError(f"study.budget_min_epochs: expected numbers > 0, got {bad}")
        if self.budget_schedule not in BUDGET_SCHEDULES:
            raise ConfigError(f"study.budget_schedule: expected one of {list(BUDGET_SCHEDULES)}, got "
                              f"{self.budget_schedule!r}")


BUDGET_SCHEDULES = ("linear", "cosine", "constant")  # what a budgeted run's constant schedule becomes


# ----------------------------------------------------------------------------------------------------------------
# Machinery: dict <-> dataclass with type checks
# ----------------------------------------------------------------------------------------------------------------


_FLOAT_STRING = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return `value` checked (and, for int -> float, converted) against the annotation `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r} ({type(value).__name__})")
        item_tp = args[0] if args else Any
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r} ({type(value).__name__})")
        value_tp = args[1] if len(args) == 2 else Any  # dict[str, X]: each value checked against X
        return {k: _coerce(v, value_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected bool (true/false), got {value!r} ({type(value).__name__})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {value!r} ({type(value).__name__})")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_STRING.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; users mean the number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected float, got {value!r} ({type(value).__name__})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected str, got {value!r} ({type(value).__name__})")
        return value
    raise ConfigError(f"{where}: unsupported annotation {tp!r}")  # a schema bug, not a user error


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError naming the key."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Plain nested dict/list form of a config dataclass (what config.yaml holds)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def set_dotted(tree: dict, dotted_key: str, value: Any) -> None:
    """Set tree['a']['b'] = value for 'a.b', creating intermediate mappings."""
    node = tree
    parts = dotted_key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def expand_dotted(partial: dict) -> dict:
    """{'train.lr': 1} -> {'train': {'lr': 1}}; nested keys are merged."""
    out: dict = {}
    for key, value in partial.items():
        if isinstance(value, dict):
            value = expand_dotted(value)
        if "." in str(key):
            set_dotted(out, str(key), value)
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def deep_merge(base: dict, override: dict) -> dict:
    """A new dict: `override` merged over `base`, recursively for mappings."""
    merged = dict(base)
    for key, value in expand_dotted(override).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_overrides(pairs: list[str] | None) -> dict:
    """['train.lr=0.1', 'svm.C=[0.1,1]'] -> nested dict; values parsed as YAML scalars/lists."""
    tree: dict = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. train.epochs=5")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {pair!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {pair!r}: cannot parse value: {exc}") from None
        set_dotted(tree, key, value)
    return tree


# Keys that earlier versions wrote into run folders' config.yaml and that no longer exist. Reading a saved run (load_run,
# `train --resume`, a study's finished runs) drops them; a new config naming one is an unknown-key error as usual.
RETIRED_KEYS = (
    "train.num_workers",  # never read: batches are sliced from in-memory uint8 tensors, there is no DataLoader
)


def drop_retired_keys(mapping: dict) -> dict:
    """A saved run's config mapping without RETIRED_KEYS (a copy; `mapping` is left as it is)."""
    if not isinstance(mapping, dict):
        return mapping  # not a config: left for build_run_config to report
    out = {section: dict(values) if isinstance(values, dict) else values for section, values in mapping.items()}
    for key in RETIRED_KEYS:
        section, name = key.split(".")
        if isinstance(out.get(section), dict):
            out[section].pop(name, None)
    return out


def load_yaml_mapping(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------------------------------------------
# Ranges: the valid values of every numeric field, checked in one place after the types (check_ranges)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    ok: typing.Callable[[float], bool]
    text: str  # what is expected, for the message: ">= 1", "in [0, 1)"


AT_LEAST_1 = Rule(lambda v: v >= 1, ">= 1")
AT_LEAST_2 = Rule(lambda v: v >= 2, ">= 2")
NON_NEGATIVE = Rule(lambda v: v >= 0, ">= 0")
POSITIVE = Rule(lambda v: v > 0, "> 0")
FRACTION = Rule(lambda v: 0 <= v < 1, "in [0, 1)")
UNIT = Rule(lambda v: 0 <= v <= 1, "in [0, 1]")
DECAY = Rule(lambda v: 0 < v <= 1, "in (0, 1]")
# 4096 px squared is already 50 MB per RGB image as uint8; beyond it a typo (60000) would try to allocate terabytes.
# Within it, data.registry still checks the whole dataset's size against the machine's memory before decoding.
MAX_IMAGE_SIZE = 4096
IMAGE_SIZE = Rule(lambda v: 1 <= v <= MAX_IMAGE_SIZE, f"in [1, {MAX_IMAGE_SIZE}] (pixels a side)")

# dotted RunConfig key -> rule. A None value (an optional field left unset) is not checked; a list is checked item
# by item. Every int/float field of the schema is listed (tests/test_config.py holds the table to that).
RANGES: dict[str, Rule] = {
    "seed": NON_NEGATIVE,
    "data.val_fraction": FRACTION, "data.test_fraction": FRACTION, "data.split_seed": NON_NEGATIVE,
    "data.image_size": IMAGE_SIZE, "data.max_train": AT_LEAST_1, "data.max_eval": AT_LEAST_1,
    "model.embedding_dim": AT_LEAST_1, "model.dropout": FRACTION,
    "optim.lr": POSITIVE, "optim.weight_decay": NON_NEGATIVE, "optim.momentum": FRACTION, "optim.betas": FRACTION,
    "optim.eps": POSITIVE, "optim.lr_grid": POSITIVE,
    "train.epochs": AT_LEAST_1, "train.batch_size": AT_LEAST_1, "train.eval_batch_size": AT_LEAST_1,
    "train.warmup_epochs": NON_NEGATIVE, "train.step_size": AT_LEAST_1, "train.gamma": DECAY,
    "train.label_smoothing": FRACTION, "train.grad_clip": POSITIVE, "train.freeze_backbone_epochs": NON_NEGATIVE,
    "train.backbone_lr_mult": NON_NEGATIVE, "train.num_threads": AT_LEAST_1,
    "train.max_steps_per_epoch": AT_LEAST_1, "train.train_eval_subset": NON_NEGATIVE,  # 0: not measured
    "loss.ce_weight": NON_NEGATIVE, "loss.triplet_weight": NON_NEGATIVE, "loss.triplet_margin": NON_NEGATIVE,
    "loss.center_weight": NON_NEGATIVE, "loss.center_lr": UNIT,
    # P x K sampler: a triplet needs a second image of its class and an image of another class
    "loss.classes_per_batch": AT_LEAST_2, "loss.samples_per_class": AT_LEAST_2,
    "svm.C": POSITIVE, "svm.gamma": POSITIVE, "svm.n_components": AT_LEAST_1, "svm.tol": POSITIVE,
    "svm.max_iter": AT_LEAST_1, "svm.batch_size": AT_LEAST_1,
    "eval.knn_k": AT_LEAST_1,
}


def _get_dotted(obj: Any, dotted_key: str) -> Any:
    for part in dotted_key.split("."):
        obj = getattr(obj, part)
    return obj


def check_ranges(cfg: RunConfig, where: str = "config") -> RunConfig:
    """`cfg` unchanged when every numeric field is in range (RANGES) and the fields agree; else ConfigError naming
    the field, the value and what was expected."""
    for key, rule in RANGES.items():
        value = _get_dotted(cfg, key)
        if value is None:
            continue
        each = isinstance(value, list)
        if not all(math.isfinite(v) and rule.ok(v) for v in (value if each else [value])):
            raise ConfigError(f"{where}.{key}: expected {'every value ' if each else ''}{rule.text}, got {value!r}")
    if not cfg.svm.C:
        raise ConfigError(f"{where}.svm.C: expected at least one value, got []")
    if cfg.eval.tta != "none" and cfg.eval.classifier != "head":
        raise ConfigError(f"{where}.eval.tta={cfg.eval.tta!r} averages the head's logits; with "
                          f"eval.classifier={cfg.eval.classifier!r} set eval.tta: none")
    if cfg.train.schedule in ("cosine", "linear") and cfg.train.warmup_epochs >= cfg.train.epochs:
        raise ConfigError(f"{where}.train.warmup_epochs={cfg.train.warmup_epochs} leaves no steps for the "
                          f"{cfg.train.schedule} decay (train.epochs={cfg.train.epochs}); use fewer warm-up epochs "
                          "than epochs")
    return cfg


def build_run_config(*layers: dict | None, where: str = "config") -> RunConfig:
    """Merge partial config dicts in order (later wins) and validate them (types, then ranges) into a RunConfig."""
    merged: dict = {}
    for layer in layers:
        if layer:
            merged = deep_merge(merged, layer)
    return check_ranges(from_dict(RunConfig, merged, where), where)


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=None)
