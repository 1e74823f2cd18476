"""The explicit registry of methods and tasks, kept free of torch.

Each entry names its hyper-parameter dataclass (a torch-free module under ``hparams/``, so a
config validates before torch loads) and its implementation (imported only when a run
starts). The engine never names a method: it looks entries up here.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any

from raytrain_eff.typed import ConfigError, nearest

if TYPE_CHECKING:  # the implementations import torch; the registry itself must not
    from raytrain_eff.methods.base import Method


@dataclasses.dataclass(frozen=True)
class Entry:
    config: str  # "module:Class" of the hyper-parameter dataclass (torch-free)
    impl: str  # "module:Class" of the implementation
    summary: str  # one line for `raytrain-eff presets` and error messages
    # why it cannot train under scaling.strategy=fsdp (model shards); empty: it can
    unsharded: str = ""
    # methods only: the tasks whose models have what it needs (empty: every task), and why
    tasks: tuple[str, ...] = ()
    tasks_why: str = ""
    # methods only: whether it builds the run's optimizer (exactly one method of a run does);
    # one that does not names the optimizer methods it may run beside
    optimizer: bool = True
    beside: tuple[str, ...] = ()


_H = "raytrain_eff.hparams"
_WHOLE_VECTOR = (
    "Lanczos and the Newton step work on the whole flattened parameter vector, "
    "which FSDP never holds on one worker; dho2 runs FOSI on FSDP shards"
)
_SOLVER = (
    "the ERM solvers keep whole snapshots and dual-averaging sums of the weight vector "
    "outside the model"
)
_ERM = (
    "it solves regularised ERM: a linear model with one weight vector and the task's "
    "l1/l2 objective"
)
_OUTSIDE_FORWARD = (
    "its loss reads the model's weights outside forward(), where FSDP holds only "
    "this worker's slice"
)
METHODS: dict[str, Entry] = {
    "sgd": Entry(
        f"{_H}.baselines:SGDConfig",
        "raytrain_eff.methods.baselines:SGD",
        "SGD with (Nesterov) momentum and decoupled weight decay",
    ),
    "adamw": Entry(
        f"{_H}.baselines:AdamWConfig",
        "raytrain_eff.methods.baselines:AdamW",
        "AdamW (decoupled weight decay)",
    ),
    "fosi": Entry(
        f"{_H}.fosi:FOSIConfig",
        "raytrain_eff.methods.fosi:FOSI",
        "FOSI: Newton step in the top-k Hessian eigenspace + AdamW/heavy-ball on the "
        "rest (1 process)",
        unsharded=_WHOLE_VECTOR,
    ),
    "dho2": Entry(
        f"{_H}.fosi:DHO2Config",
        "raytrain_eff.methods.dho2:DHO2",
        "DHO2: FOSI with Lanczos vectors, eigenvectors and optimizer state sharded "
        "1/P across workers (under fsdp its slice is the worker's FSDP shard)",
    ),
    "mr-dho2": Entry(
        f"{_H}.fosi:MRDHO2Config",
        "raytrain_eff.methods.dho2:MRDHO2",
        "MR-DHO2: DHO2 with the curvature refresh spread over model updates (bounded staleness)",
    ),
    "mst": Entry(
        f"{_H}.mst:MSTConfig",
        "raytrain_eff.methods.mst.method:MST",
        "Mixed Sparsity Training: dense -> sparse -> dense DST + hybrid sparse "
        "attention (add adamw)",
        tasks=("lm", "classify", "custom"),
        tasks_why="it sparsifies nn.Linear layers and attention, which the other "
        "tasks' models do not have",
        optimizer=False,
        beside=("sgd", "adamw", "fosi", "dho2", "mr-dho2"),
    ),
    "sublinear": Entry(
        f"{_H}.sublinear:SublinearConfig",
        "raytrain_eff.methods.sublinear.method:Sublinear",
        "shifted-ReLU wide layers whose active neurons come from an exact "
        "max-tree or LSH index, so a step touches few neurons (arXiv 2208.04508)",
        unsharded="its neuron index holds whole rows of the wide layer",
        tasks=("wide",),
        tasks_why="it needs a ShiftedReLU wide layer",
    ),
    "dasvrda": Entry(
        f"{_H}.dasvrda:DASVRDAConfig",
        "raytrain_eff.methods.dasvrda:DASVRDAMethod",
        "DASVRDA: doubly accelerated variance-reduced dual averaging for "
        "regularised ERM, sqrt(n) mini-batches",
        unsharded=_SOLVER,
        tasks=("erm",),
        tasks_why=_ERM,
    ),
    "prox-svrg": Entry(
        f"{_H}.dasvrda:ProxSVRGConfig",
        "raytrain_eff.methods.dasvrda:ProxSVRGMethod",
        "Prox-SVRG baseline for regularised ERM",
        unsharded=_SOLVER,
        tasks=("erm",),
        tasks_why=_ERM,
    ),
    "katyusha": Entry(
        f"{_H}.dasvrda:KatyushaConfig",
        "raytrain_eff.methods.dasvrda:KatyushaMethod",
        "Katyusha baseline for regularised ERM",
        unsharded=_SOLVER,
        tasks=("erm",),
        tasks_why=_ERM,
    ),
    "lowdim": Entry(
        f"{_H}.lowdim:LowDimConfig",
        "raytrain_eff.methods.lowdim:LowDim",
        "width-2r compressed deep linear layer, spectral init from the step-0 "
        "gradient (arXiv 2311.05061)",
        unsharded="its spectral init and layer swap need whole weight matrices",
        tasks=("classify", "lowrank", "custom", "lm"),
        tasks_why="it compresses an nn.Linear (methods.lowdim.layer) or a deep linear network",
    ),
}

TASKS: dict[str, Entry] = {
    "lm": Entry(
        f"{_H}.tasks:LMConfig",
        "raytrain_eff.tasks.lm:LanguageModelTask",
        "character-level GPT language model on a text corpus",
    ),
    "classify": Entry(
        f"{_H}.tasks:ClassifyConfig",
        "raytrain_eff.tasks.classify:ClassifyTask",
        "image / feature classification (MLP or small CNN)",
    ),
    "custom": Entry(
        f"{_H}.tasks:CustomTaskConfig",
        "raytrain_eff.tasks.custom:CustomTask",
        "your own model: a 'package.module:function' returning model, loss, eval",
    ),
    "erm": Entry(
        f"{_H}.tasks:ERMConfig",
        "raytrain_eff.tasks.erm:ERMTask",
        "regularised ERM: linear model, logistic/squared/smoothed-hinge + elastic net "
        "(kjv bag-of-words, sklearn sets, Parquet)",
        unsharded=_OUTSIDE_FORWARD,
    ),
    "wide": Entry(
        f"{_H}.tasks:WideConfig",
        "raytrain_eff.tasks.wide:WideTask",
        "two-layer wide shifted-ReLU net on unit-norm synthetic regression or digits",
        unsharded="its shifted-ReLU layer keeps an index over whole weight rows",
    ),
    "lowrank": Entry(
        f"{_H}.tasks:LowRankConfig",
        "raytrain_eff.tasks.lowrank:LowRankTask",
        "deep matrix factorisation / completion / sensing with deep linear networks",
        unsharded=_OUTSIDE_FORWARD,
    ),
}


def lookup(table: dict[str, Entry], kind: str, name: str) -> Entry:
    if name not in table:
        raise ConfigError(
            f"unknown {kind} '{name}'{nearest(name, table)}; registered: {', '.join(sorted(table))}"
        )
    return table[name]


def refusal(task: str, methods: list[str]) -> str | None:
    """Why the catalog refuses to run ``methods`` on ``task`` (None: it accepts them), with
    the key to change first."""
    makers = [m for m in methods if METHODS[m].optimizer]
    for name in methods:
        entry = METHODS[name]
        if entry.tasks and task not in entry.tasks:
            return (
                f"methods.{name}: {name} cannot train task {task}: {entry.tasks_why}; "
                f"it meets task {' or '.join(entry.tasks)}"
            )
        if not entry.optimizer and not set(makers) <= set(entry.beside):
            return (
                f"methods.{name}: {name} runs beside one of {', '.join(entry.beside)}, "
                f"not {', '.join(makers)}"
            )
    if len(makers) != 1:
        alone = [m for m, e in METHODS.items() if e.optimizer]
        return (
            f"methods: exactly one method must build the optimizer, and "
            f"{len(makers)} here do ({', '.join(makers) or 'none'}); those that do: "
            f"{', '.join(alone)}"
        )
    return None


def accepted_runs() -> list[tuple[str, tuple[str, ...]]]:
    """Every (task, methods) the catalog accepts: each optimizer method alone, and each other
    method beside each optimizer method it names."""
    combos: list[tuple[str, ...]] = [(m,) for m, e in METHODS.items() if e.optimizer]
    combos += [(m, o) for m, e in METHODS.items() if not e.optimizer for o in e.beside]
    return [(t, c) for t in TASKS for c in combos if refusal(t, list(c)) is None]


def load_object(path: str):
    """Import 'package.module:attr'."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def create_methods(methods: dict[str, Any]) -> list[Method]:
    """Method objects for a validated config's ``methods`` mapping, in hook order."""
    made = []
    for name, params in methods.items():
        method = load_object(lookup(METHODS, "method", name).impl)(params)
        method.name = name
        made.append(method)
    return made
