"""Typed experiment configuration: YAML files, packaged presets, dotted ``key=value`` overrides.

Torch-free and ray-free by design (a subprocess test checks ``sys.modules``): a typo'd key,
a negative step count or an unknown method fails here in milliseconds, naming the field, the
value and what is allowed.

Layout of an experiment file::

    task:    {name: lm, ...task hyper-parameters}
    data:    {dataset: kjv, batch_size: 32, ...}
    methods: {adamw: {lr: 3.0e-3}}          # ordered; several may combine (mst + adamw)
    train:   {warmup_steps: 50, decay: cosine, grad_clip: 1.0, ...}
    scaling: {num_workers: 2, ...}
    run:     {steps: 1500, eval_interval: 250, ...}
    monitor: {enabled: true, ...}
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from raytrain_eff import catalog
from raytrain_eff.typed import ConfigError, build, check, coerce, nearest, to_dict

PRESET_PACKAGE = "raytrain_eff.presets"
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(kw_only=True)
class DataConfig:
    # built-in name (kjv, pydoc, digits) or Parquet path / pyarrow.fs URI
    dataset: str = "kjv"
    batch_size: int = 32  # per worker and micro-batch
    val_fraction: float = 0.05  # held-out tail of the data, never trained on
    # the held-out tail's last test_fraction: a test split that training's evaluations never
    # score (only task.evaluate_test reads it); bundled in-memory data (kjv, digits ...) only
    test_fraction: float = 0.0
    text_column: str = "text"  # Parquet text corpora
    label_column: str = "label"  # Parquet classification data
    feature_columns: list[str] | None = None  # None: every column but the label
    # Parquet path / URI scored at evaluations; None: the last val_fraction of dataset's rows
    val_dataset: str | None = None
    shuffle_window: int = 4096  # streamed Parquet: rows a rank shuffles together (data/plan.py)
    # streamed Parquet: decoded row groups a worker keeps (LRU), or more when one batch and
    # the next touch more (data/stream.py)
    cache_row_groups: int = 4

    def __post_init__(self):
        check(
            self.val_dataset is None or bool(self.val_dataset),
            "val_dataset",
            self.val_dataset,
            "null or a Parquet path / pyarrow.fs URI",
        )
        check(self.shuffle_window >= 1, "shuffle_window", self.shuffle_window, "an integer >= 1")
        check(
            self.cache_row_groups >= 1, "cache_row_groups", self.cache_row_groups, "an integer >= 1"
        )
        check(self.batch_size > 0, "batch_size", self.batch_size, "an integer > 0")
        check(
            0 <= self.val_fraction < 1,
            "val_fraction",
            self.val_fraction,
            "in [0, 1) (0: nothing held out, task erm only)",
        )
        check(bool(self.dataset), "dataset", self.dataset, "a built-in name or a Parquet path")
        check(0 <= self.test_fraction < 1, "test_fraction", self.test_fraction, "in [0, 1)")


@dataclass(kw_only=True)
class TrainConfig:
    warmup_steps: int = 0  # linear LR warm-up from 0
    decay: Literal["constant", "cosine", "linear"] = "cosine"
    min_lr_ratio: float = 0.1  # decay floor as a fraction of the peak LR
    grad_accum: int = 1  # micro-batches per optimizer step (batch sweeps beyond memory)
    grad_clip: float | None = None  # max global gradient norm
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast where the device supports it
    threads_per_worker: int = 1  # torch intra-op threads; 1 avoids oversubscribing small nodes
    # torch.compile the task's loss in the training step (its backward too, by AOTAutograd);
    # FLOP counting, evaluation and methods' extra passes stay eager
    compile: bool = False

    def __post_init__(self):
        check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "an integer >= 0")
        check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", self.min_lr_ratio, "in [0, 1]")
        check(self.grad_accum >= 1, "grad_accum", self.grad_accum, "an integer >= 1")
        check(
            self.grad_clip is None or self.grad_clip > 0, "grad_clip", self.grad_clip, "> 0 or null"
        )
        check(
            self.threads_per_worker >= 1,
            "threads_per_worker",
            self.threads_per_worker,
            "an integer >= 1",
        )


@dataclass(kw_only=True)
class ScalingConfig:
    num_workers: int = 2  # 0: Ray Train local mode (one process, no Ray workers)
    # elastic: start (and restart after a lost node) with as many workers as the cluster holds
    # between min_workers and num_workers; None keeps the worker count fixed
    min_workers: int | None = None
    resize_interval_s: float = 60.0  # elastic: how often a healthy group checks to grow
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl with GPUs, else gloo
    # ddp: every worker holds the whole model; fsdp: each holds a 1/P slice (FSDP2)
    strategy: Literal["ddp", "fsdp"] = "ddp"

    def __post_init__(self):
        check(self.num_workers >= 0, "num_workers", self.num_workers, "an integer >= 0")
        check(
            self.min_workers is None or 1 <= self.min_workers <= self.num_workers,
            "min_workers",
            self.min_workers,
            f"unset, or an integer from 1 to num_workers ({self.num_workers})",
        )
        check(self.resize_interval_s >= 0, "resize_interval_s", self.resize_interval_s, ">= 0")
        check(self.cpus_per_worker > 0, "cpus_per_worker", self.cpus_per_worker, "> 0")
        check(
            self.backend != "nccl" or self.use_gpu,
            "backend",
            self.backend,
            "gloo or auto unless use_gpu is true (NCCL needs GPUs)",
        )
        check(
            self.strategy == "ddp" or self.num_workers >= 1,
            "strategy",
            self.strategy,
            "ddp when num_workers is 0 (local mode has no process group to shard over)",
        )


@dataclass(kw_only=True)
class RunConfig:
    steps: int = 1000  # optimizer steps (the LR schedule spans all of them)
    stop_after: int | None = None  # pause after this step with a checkpoint; --resume goes on
    eval_interval: int = 250  # steps between held-out evaluations (0: only at the end)
    eval_batches: int = 20  # batches per evaluation
    report_interval: int = 50  # steps between ray.train.report calls
    checkpoint_interval: int = 250  # steps between checkpoints (a multiple of report_interval)
    num_to_keep: int = 2  # checkpoints kept
    # write checkpoint shards in the background while training goes on (one save at a time)
    checkpoint_async: bool = False
    max_failures: int = 0  # worker-group restarts from the latest checkpoint
    storage_path: str = "~/raytrain_runs"  # local dir, shared filesystem or pyarrow.fs URI
    name: str | None = None  # run name; default: <preset or task>-<timestamp>
    seed: int = 0

    def __post_init__(self):
        check(self.steps > 0, "steps", self.steps, "an integer > 0")
        check(
            self.stop_after is None or 0 < self.stop_after <= self.steps,
            "stop_after",
            self.stop_after,
            f"null or an integer in 1..steps ({self.steps})",
        )
        check(self.eval_interval >= 0, "eval_interval", self.eval_interval, "an integer >= 0")
        check(self.eval_batches > 0, "eval_batches", self.eval_batches, "an integer > 0")
        check(self.report_interval > 0, "report_interval", self.report_interval, "an integer > 0")
        check(
            self.checkpoint_interval > 0 and self.checkpoint_interval % self.report_interval == 0,
            "checkpoint_interval",
            self.checkpoint_interval,
            f"a positive multiple of report_interval "
            f"({self.report_interval}): checkpoints travel with reports",
        )
        check(self.num_to_keep >= 1, "num_to_keep", self.num_to_keep, "an integer >= 1")
        check(
            self.max_failures >= -1,
            "max_failures",
            self.max_failures,
            "an integer >= 0, or -1 for unlimited",
        )
        check(
            self.name is None or bool(RUN_NAME_PATTERN.match(self.name)),
            "name",
            self.name,
            "letters, digits, '_', '.', '-' (starting with a letter or digit), <= 128 chars",
        )


@dataclass(kw_only=True)
class MonitorConfig:
    enabled: bool = True  # per-node Prometheus exporter
    host: str = "127.0.0.1"  # bind address of the exporter; 0.0.0.0 exposes it
    port: int = 9464  # first port tried; the next free one is used if taken
    progress: bool = True  # live progress line on the driver
    grace_period_s: float = 300.0  # series of finished runs dropped after this long

    def __post_init__(self):
        check(0 < self.port < 65536, "port", self.port, "in 1..65535")
        check(self.grace_period_s >= 0, "grace_period_s", self.grace_period_s, ">= 0")


@dataclass(kw_only=True)
class TaskSpec:
    name: str
    params: Any  # the task's hyper-parameter dataclass (see catalog.TASKS)


@dataclass(kw_only=True)
class ExperimentConfig:
    task: TaskSpec
    methods: dict[str, Any]  # method name -> its hyper-parameter dataclass, in hook order
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    preset: str | None = None  # where it came from, for names and reports

    def to_dict(self) -> dict:
        """Plain data that ``from_dict`` reads back to an equal config."""
        return {
            "task": {"name": self.task.name, **to_dict(self.task.params)},
            "methods": {name: to_dict(p) for name, p in self.methods.items()},
            **{k: to_dict(getattr(self, k)) for k in SECTIONS},
            "preset": self.preset,
        }


SECTIONS = {
    "data": DataConfig,
    "train": TrainConfig,
    "scaling": ScalingConfig,
    "run": RunConfig,
    "monitor": MonitorConfig,
}
TOP_KEYS = ["task", "methods", *SECTIONS, "preset"]


def from_dict(raw: dict, where: str = "") -> ExperimentConfig:
    """Validate plain data into an ExperimentConfig; ``where`` prefixes errors (a file name)."""
    prefix = f"{where}: " if where else ""
    try:
        return _from_dict(raw)
    except ConfigError as err:
        raise ConfigError(prefix + str(err)) from None


def _from_dict(raw: dict) -> ExperimentConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(raw).__name__}")
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(
                f"{key}: unknown key{nearest(key, TOP_KEYS)}; valid keys: {', '.join(TOP_KEYS)}"
            )
    task_raw = dict(raw.get("task") or {})
    if "name" not in task_raw:
        raise ConfigError(f"task.name: missing; registered tasks: {', '.join(catalog.TASKS)}")
    task_name = task_raw.pop("name")
    entry = catalog.lookup(catalog.TASKS, "task", task_name)
    task = TaskSpec(
        name=task_name, params=build(catalog.load_object(entry.config), task_raw, "task")
    )
    methods_raw = raw.get("methods")
    if not methods_raw or not isinstance(methods_raw, dict):
        raise ConfigError(
            "methods: expected a mapping of method name -> hyper-parameters, "
            f"e.g. {{adamw: {{lr: 0.001}}}}; registered: "
            f"{', '.join(catalog.METHODS)}"
        )
    methods = {}
    for name, params in methods_raw.items():
        entry = catalog.lookup(catalog.METHODS, "method", name)
        methods[name] = build(catalog.load_object(entry.config), params, f"methods.{name}")
    sections = {k: build(cls, raw.get(k), k) for k, cls in SECTIONS.items()}
    preset = coerce(str | None, raw.get("preset"), "preset")
    refused = catalog.refusal(task_name, list(methods))
    if refused:
        raise ConfigError(refused)
    if sections["scaling"].strategy == "fsdp":
        _check_shardable(task_name, methods)
    if sections["data"].val_fraction == 0 and task_name != "erm":
        raise ConfigError(
            f"data.val_fraction: 0 is allowed for task erm only (an optimisation "
            f"task); task {task_name} evaluates on held-out rows, so use > 0"
        )
    return ExperimentConfig(task=task, methods=methods, preset=preset, **sections)


def _check_shardable(task: str, methods: dict) -> None:
    """scaling.strategy=fsdp: refuse, before launch, what cannot train on model shards."""
    for kind, table, names in (
        ("task", catalog.TASKS, [task]),
        ("methods", catalog.METHODS, list(methods)),
    ):
        for name in names:
            why = table[name].unsharded
            if why:
                where = "task.name" if kind == "task" else f"methods.{name}"
                raise ConfigError(
                    f"{where}: {name} cannot run under scaling.strategy=fsdp: "
                    f"{why}; use scaling.strategy=ddp"
                )


def parse_override(text: str) -> tuple[list[str], Any]:
    """'run.steps=200' -> (['run', 'steps'], 200); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': expected dotted.key=value, e.g. run.steps=200")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': value is not valid YAML ({err})") from None
    return key.split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a copy of ``raw``; a missing method name adds that method."""
    import copy

    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            if isinstance(node, list):
                node = node[_index(part, text)]
                continue
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
        if isinstance(node, list):
            node[_index(path[-1], text)] = value
        else:
            node[path[-1]] = value
    return out


def _index(part: str, text: str) -> int:
    if not part.isdigit():
        raise ConfigError(f"override '{text}': '{part}' must be a list index")
    return int(part)


def read_yaml(path: str | pathlib.Path) -> dict:
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def preset_names() -> list[str]:
    files = importlib.resources.files(PRESET_PACKAGE).iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".yaml"))


def preset_raw(name: str) -> dict:
    names = preset_names()
    if name not in names:
        raise ConfigError(
            f"unknown preset '{name}'{nearest(name, names)}; "
            f"available: {', '.join(names)} (see `raytrain-eff presets`)"
        )
    text = importlib.resources.files(PRESET_PACKAGE).joinpath(f"{name}.yaml").read_text()
    raw = yaml.safe_load(text)
    raw.setdefault("preset", name)
    return raw


def preset_description(name: str) -> str:
    """The preset file's first comment line."""
    text = importlib.resources.files(PRESET_PACKAGE).joinpath(f"{name}.yaml").read_text()
    first = text.splitlines()[0] if text else ""
    return first.lstrip("# ").strip() if first.startswith("#") else ""


def load(
    preset: str | None = None, path: str | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Preset or file, then overrides, then validation: the one entry point the CLI uses."""
    if preset and path:
        raise ConfigError("give either --preset or --config, not both")
    raw = preset_raw(preset) if preset else read_yaml(path) if path else preset_raw("default")
    raw = apply_overrides(raw, overrides or [])
    return from_dict(raw, where=str(path) if path else f"preset '{raw.get('preset')}'")


RESUME_OVERRIDABLE = (
    "run.stop_after",
    "run.max_failures",
    "scaling.num_workers",
    "scaling.min_workers",
    "scaling.resize_interval_s",
    "scaling.cpus_per_worker",
    "scaling.placement",
    "scaling.strategy",
    "monitor.",
)


def apply_resume_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """A resumed run keeps its config; only where and how long it runs may change."""
    for text in overrides:
        key = text.partition("=")[0]
        if not any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUME_OVERRIDABLE):
            raise ConfigError(
                f"override '{text}': a resumed run keeps its config; on resume "
                f"only {', '.join(RESUME_OVERRIDABLE)} may change"
            )
    return from_dict(apply_overrides(cfg.to_dict(), overrides), where="resume overrides")


def dump(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def replace(config: ExperimentConfig, **sections) -> ExperimentConfig:
    return dataclasses.replace(config, **sections)
