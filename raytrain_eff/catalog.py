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
    config: str   # "module:Class" of the hyper-parameter dataclass (torch-free)
    impl: str     # "module:Class" of the implementation
    summary: str  # one line for `raytrain-eff presets` and error messages
    # why it cannot train under scaling.strategy=fsdp (model shards); empty: it can
    unsharded: str = ""


_H = "raytrain_eff.hparams"
_WHOLE_VECTOR = ("Lanczos and the Newton step work on the whole flattened parameter vector, "
                 "which FSDP never holds on one worker; dho2 runs FOSI on FSDP shards")
_SOLVER = ("the ERM solvers keep whole snapshots and dual-averaging sums of the weight vector "
           "outside the model")
_OUTSIDE_FORWARD = ("its loss reads the model's weights outside forward(), where FSDP holds only "
                    "this worker's slice")
METHODS: dict[str, Entry] = {
    "sgd": Entry(f"{_H}.baselines:SGDConfig", "raytrain_eff.methods.baselines:SGD",
                 "SGD with (Nesterov) momentum and decoupled weight decay"),
    "adamw": Entry(f"{_H}.baselines:AdamWConfig", "raytrain_eff.methods.baselines:AdamW",
                   "AdamW (decoupled weight decay)"),
    "fosi": Entry(f"{_H}.fosi:FOSIConfig", "raytrain_eff.methods.fosi:FOSI",
                  "FOSI: Newton step in the top-k Hessian eigenspace + AdamW/heavy-ball on the "
                  "rest (1 process)",
                  unsharded=_WHOLE_VECTOR),
    "dho2": Entry(f"{_H}.fosi:DHO2Config", "raytrain_eff.methods.dho2:DHO2",
                  "DHO2: FOSI with Lanczos vectors, eigenvectors and optimizer state sharded "
                  "1/P across workers (under fsdp its slice is the worker's FSDP shard)"),
    "mr-dho2": Entry(f"{_H}.fosi:MRDHO2Config", "raytrain_eff.methods.dho2:MRDHO2",
                     "MR-DHO2: DHO2 with the curvature refresh spread over model updates "
                     "(bounded staleness)"),
    "mst": Entry(f"{_H}.mst:MSTConfig", "raytrain_eff.methods.mst.method:MST",
                 "Mixed Sparsity Training: dense -> sparse -> dense DST + hybrid sparse "
                 "attention (add adamw)"),
    "sublinear": Entry(f"{_H}.sublinear:SublinearConfig",
                       "raytrain_eff.methods.sublinear.method:Sublinear",
                       "shifted-ReLU wide layers whose active neurons come from an exact "
                       "max-tree or LSH index, so a step touches few neurons (arXiv 2208.04508)",
                       unsharded="its neuron index holds whole rows of the wide layer"),
    "dasvrda": Entry(f"{_H}.dasvrda:DASVRDAConfig", "raytrain_eff.methods.dasvrda:DASVRDAMethod",
                     "DASVRDA: doubly accelerated variance-reduced dual averaging for "
                     "regularised ERM, sqrt(n) mini-batches", unsharded=_SOLVER),
    "prox-svrg": Entry(f"{_H}.dasvrda:ProxSVRGConfig",
                       "raytrain_eff.methods.dasvrda:ProxSVRGMethod",
                       "Prox-SVRG baseline for regularised ERM", unsharded=_SOLVER),
    "katyusha": Entry(f"{_H}.dasvrda:KatyushaConfig", "raytrain_eff.methods.dasvrda:KatyushaMethod",
                      "Katyusha baseline for regularised ERM", unsharded=_SOLVER),
    "lowdim": Entry(f"{_H}.lowdim:LowDimConfig", "raytrain_eff.methods.lowdim:LowDim",
                    "width-2r compressed deep linear layer, spectral init from the step-0 "
                    "gradient (arXiv 2311.05061)",
                    unsharded="its spectral init and layer swap need whole weight matrices"),
}

TASKS: dict[str, Entry] = {
    "lm": Entry(f"{_H}.tasks:LMConfig", "raytrain_eff.tasks.lm:LanguageModelTask",
                "character-level GPT language model on a text corpus"),
    "classify": Entry(f"{_H}.tasks:ClassifyConfig", "raytrain_eff.tasks.classify:ClassifyTask",
                      "image / feature classification (MLP or small CNN)"),
    "custom": Entry(f"{_H}.tasks:CustomTaskConfig", "raytrain_eff.tasks.custom:CustomTask",
                    "your own model: a 'package.module:function' returning model, loss, eval"),
    "erm": Entry(f"{_H}.tasks:ERMConfig", "raytrain_eff.tasks.erm:ERMTask",
                 "regularised ERM: linear model, logistic/squared/smoothed-hinge + elastic net "
                 "(kjv bag-of-words, sklearn sets, Parquet)", unsharded=_OUTSIDE_FORWARD),
    "wide": Entry(f"{_H}.tasks:WideConfig", "raytrain_eff.tasks.wide:WideTask",
                  "two-layer wide shifted-ReLU net on unit-norm synthetic regression or digits",
                  unsharded="its shifted-ReLU layer keeps an index over whole weight rows"),
    "lowrank": Entry(f"{_H}.tasks:LowRankConfig", "raytrain_eff.tasks.lowrank:LowRankTask",
                     "deep matrix factorisation / completion / sensing with deep linear networks",
                     unsharded=_OUTSIDE_FORWARD),
}


def lookup(table: dict[str, Entry], kind: str, name: str) -> Entry:
    if name not in table:
        raise ConfigError(f"unknown {kind} '{name}'{nearest(name, table)}; "
                          f"registered: {', '.join(sorted(table))}")
    return table[name]


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
