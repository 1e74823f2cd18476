"""Search-space files: a YAML schema of our own, validated before any trial starts.

Schema (``tune_spaces/*.yaml``)::

    base: digits-adamw            # a preset name, or a config file path relative to this file
    overrides: [run.steps=200]    # applied to the base before sampling
    metric: val_loss              # a key trials report: checked against the task before Ray
    mode: min                     # min | max
    num_samples: 8                # samples of the space (each grid point this many times)
    scheduler:                    # fifo | asha | pbt
      type: asha
      time_attr: samples_seen     # default: steps are not comparable across batch sizes
      grace_period: 2000          # in time_attr units (default: 1/8 of the smallest budget)
      max_t: null                 # default: the largest trial's budget (needed for wall_s)
      reduction_factor: 2
    search: random                # random | grid | optuna | hyperopt
    resources: {driver_cpus: 0.1, max_concurrent: null}
    space:                        # dotted keys, exactly as on the command line
      methods.adamw.lr: {loguniform: [1.0e-4, 1.0e-2]}
      data.batch_size: {choice: [16, 32, 64]}
      train.warmup_steps: {randint: [0, 100]}     # high exclusive, like Ray Tune
      methods.adamw.beta2: {grid: [0.95, 0.99]}
      train.grad_clip: {uniform: [0.5, 2.0], when: {data.batch_size: 64}}

``when`` makes an entry conditional: it applies only in trials whose other entries take
the given values, and is left at the base value otherwise. Every entry is checked against the
base config at both ends of its range, so a typo'd key or an out-of-range bound fails here
with the file and key named.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from raytrain_eff import config as config_mod
from raytrain_eff.tune import reported
from raytrain_eff.typed import ConfigError, build, check, nearest

KINDS = ("uniform", "loguniform", "choice", "randint", "grid")


@dataclass(kw_only=True)
class SchedulerSpec:
    type: Literal["fifo", "asha", "pbt"] = "fifo"
    time_attr: str = "samples_seen"  # steps are not comparable across batch sizes
    grace_period: float | None = None  # ASHA: default 1/8 of the smallest trial budget
    max_t: float | None = None  # ASHA: default the largest trial budget
    reduction_factor: float = 2.0
    perturbation_interval: float | None = None  # PBT: default 1/4 of the budget
    quantile_fraction: float = 0.25  # PBT: bottom share that copies the top share
    synch: bool = False  # PBT: wait for every trial at each perturbation point

    def __post_init__(self):
        check(self.reduction_factor > 1, "reduction_factor", self.reduction_factor, "> 1")
        check(
            self.grace_period is None or self.grace_period > 0,
            "grace_period",
            self.grace_period,
            "> 0",
        )
        check(self.max_t is None or self.max_t > 0, "max_t", self.max_t, "null or > 0")
        check(
            self.perturbation_interval is None or self.perturbation_interval > 0,
            "perturbation_interval",
            self.perturbation_interval,
            "null or > 0",
        )
        check(
            0 < self.quantile_fraction <= 0.5,
            "quantile_fraction",
            self.quantile_fraction,
            "in (0, 0.5]",
        )


@dataclass(kw_only=True)
class ResourceSpec:
    driver_cpus: float = 0.1  # the trial's Tune function only waits on its TorchTrainer
    max_concurrent: int | None = None  # default: as many as the cluster's CPUs hold

    def __post_init__(self):
        check(
            self.driver_cpus > 0,
            "driver_cpus",
            self.driver_cpus,
            "> 0 (Tune cannot place a trial that asks for nothing)",
        )
        check(
            self.max_concurrent is None or self.max_concurrent >= 1,
            "max_concurrent",
            self.max_concurrent,
            "an integer >= 1",
        )


@dataclass(kw_only=True)
class Entry:
    key: str
    kind: str
    args: list
    when: dict = field(default_factory=dict)

    def extremes(self) -> list:
        """Values that must all validate: the ends of a range, every listed option."""
        if self.kind in ("uniform", "loguniform"):
            return list(self.args)
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return list(self.args)


@dataclass(kw_only=True)
class SweepSpec:
    path: str
    base: str
    overrides: list[str] = field(default_factory=list)
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    num_samples: int = 4
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    search: Literal["random", "grid", "optuna", "hyperopt"] = "random"
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    space: dict = field(default_factory=dict)  # raw; parsed into ``entries``
    entries: list[Entry] = field(default_factory=list, init=False)

    def __post_init__(self):
        check(self.num_samples >= 1, "num_samples", self.num_samples, "an integer >= 1")


def load(path: str, extra_overrides: list[str] | None = None) -> tuple[SweepSpec, dict]:
    """(spec, base config as plain data with all overrides) or ConfigError naming file and key."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise ConfigError(f"search-space file {path} does not exist")
    try:
        raw = yaml.safe_load(file.read_text())
        spec = build(SweepSpec, {"path": str(file), **(raw or {})}, "")
        spec.entries = [parse_entry(k, v) for k, v in spec.space.items()]
        if not spec.entries:
            raise ConfigError("space: no entries; add at least one dotted key to search")
        base_raw = _base_raw(spec, file)
        base_raw = config_mod.apply_overrides(base_raw, spec.overrides + (extra_overrides or []))
        base = config_mod.from_dict(base_raw)
        _check_entries(spec, base_raw)
        _check_scheduler(spec, base_raw)
    except (ConfigError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: {err}") from None
    return spec, base.to_dict()


def parse_entry(key: str, value: Any) -> Entry:
    if not isinstance(value, dict):
        raise ConfigError(
            f"space.{key}: expected a mapping like {{uniform: [low, high]}}, got {value!r}"
        )
    value = dict(value)
    when = value.pop("when", {}) or {}
    if len(value) != 1:
        raise ConfigError(
            f"space.{key}: expected exactly one of {', '.join(KINDS)}, "
            f"got {', '.join(value) or 'none'}"
        )
    kind, args = next(iter(value.items()))
    if kind not in KINDS:
        raise ConfigError(
            f"space.{key}: unknown entry type '{kind}'{nearest(kind, KINDS)}; "
            f"use one of {', '.join(KINDS)}"
        )
    if not isinstance(args, list) or not args:
        raise ConfigError(f"space.{key}.{kind}: expected a non-empty list, got {args!r}")
    if kind in ("uniform", "loguniform", "randint"):
        if (
            len(args) != 2
            or not all(isinstance(a, (int, float)) for a in args)
            or args[0] >= args[1]
        ):
            raise ConfigError(
                f"space.{key}.{kind}: expected [low, high] numbers with low < high, got {args!r}"
            )
        if kind == "loguniform" and args[0] <= 0:
            raise ConfigError(f"space.{key}.loguniform: bounds must be > 0, got {args!r}")
        if kind == "randint" and not all(isinstance(a, int) for a in args):
            raise ConfigError(f"space.{key}.randint: bounds must be integers, got {args!r}")
    if not isinstance(when, dict):
        raise ConfigError(f"space.{key}.when: expected a mapping of key: value")
    return Entry(key=key, kind=kind, args=args, when=when)


def _base_raw(spec: SweepSpec, file: pathlib.Path) -> dict:
    if spec.base in config_mod.preset_names():
        return config_mod.preset_raw(spec.base)
    candidate = (file.parent / spec.base).resolve()
    if candidate.is_file():
        return config_mod.read_yaml(candidate)
    hint = nearest(spec.base, config_mod.preset_names())
    raise ConfigError(
        f"base: '{spec.base}' is neither a preset{hint} nor a config file next to the space file"
    )


def _check_entries(spec: SweepSpec, base_raw: dict) -> None:
    keys = {e.key for e in spec.entries}
    for entry in spec.entries:
        for cond_key in entry.when:
            if cond_key not in keys:
                raise ConfigError(
                    f"space.{entry.key}.when: '{cond_key}' is not a space entry"
                    f"{nearest(cond_key, keys)}"
                )
        for value in entry.extremes():
            try:
                config_mod.from_dict(
                    config_mod.apply_overrides(base_raw, overrides_for({entry.key: value}))
                )
            except ConfigError as err:
                raise ConfigError(
                    f"space.{entry.key}: value {value!r} is rejected by the config: {err}"
                ) from None
    if spec.search == "grid" and any(e.kind != "grid" and e.kind != "choice" for e in spec.entries):
        raise ConfigError("search: grid needs every entry to be grid or choice")


def _check_scheduler(spec: SweepSpec, base_raw: dict) -> None:
    if spec.scheduler.type == "pbt" and spec.search != "random":
        raise ConfigError("scheduler.type: pbt mutates trials itself; use search: random")
    if spec.search in ("optuna", "hyperopt") and any(
        e.when or e.kind == "grid" for e in spec.entries
    ):
        raise ConfigError(
            f"search: {spec.search} supports neither 'when' nor 'grid' entries; use search: random"
        )
    if (base_raw.get("scaling") or {}).get("num_workers", 2) == 0:
        raise ConfigError("scaling.num_workers: trials run a TorchTrainer; use >= 1 worker")
    s = spec.scheduler
    reported.check_time_attr(s.time_attr)
    if s.time_attr not in reported.BUDGETED:
        needed = {
            "asha": ("max_t", s.max_t),
            "pbt": ("perturbation_interval", s.perturbation_interval),
        }.get(s.type)
        if needed and needed[1] is None:
            raise ConfigError(
                f"scheduler.{needed[0]}: required with time_attr: {s.time_attr}, "
                f"whose full-run value is unknown before the sweep (or use "
                f"one of {', '.join(reported.BUDGETED)})"
            )


def conditions(spec: SweepSpec) -> dict[str, dict]:
    return {e.key: e.when for e in spec.entries if e.when}


def effective(conds: dict[str, dict], sample: dict) -> dict:
    """A trial's draws with each conditional entry whose condition fails set to None (left at
    the base value); conditions on conditional entries see the masked values."""
    out = dict(sample)
    changed = True
    while changed:
        changed = False
        for key, when in conds.items():
            if out.get(key) is not None and any(out.get(k) != v for k, v in when.items()):
                out[key], changed = None, True
    return out


def base_value(base: dict, key: str) -> Any:
    """The value of a dotted key in a plain config."""
    node: Any = base
    for part in key.split("."):
        node = node[part]
    return node


def sample_value(base: dict, sample: dict, key: str) -> Any:
    """A trial's value of ``key``: its sample's, else the base config's (a conditional entry
    that was not drawn is None in the sample)."""
    value = sample.get(key)
    return base_value(base, key) if value is None else value


def overrides_for(sample: dict) -> list[str]:
    """A trial's sampled values -> dotted overrides (conditional misses are None: skipped)."""
    out = []
    for key, value in sample.items():
        if value is None:
            continue
        text = yaml.safe_dump(value, default_flow_style=True).strip()
        out.append(f"{key}={text.removesuffix('...').strip()}")
    return out
