"""Every method x task run the catalog accepts trains through the engine past its first
curvature refresh or topology update; every other pair is refused before launch.

The runs come from ``catalog.accepted_runs()``, never from a list kept here: a method or task
added to the catalog is run (or refused) by this test without touching it. What is kept
here is how to make each run tiny and fast, and which metric proves each method's periodic
work happened.
"""

import math
import pathlib

import pyarrow.parquet as pq
import pytest

from raytrain_eff import catalog, config
from raytrain_eff.engine import launch
from raytrain_eff.typed import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 3
SHORT = [
    "scaling.num_workers=0",
    f"run.steps={STEPS}",
    "run.report_interval=1",
    f"run.checkpoint_interval={STEPS}",
    "run.eval_interval=0",
    "monitor.enabled=false",
    "monitor.progress=false",
]
# tiny models and data, so all runs together take seconds
TASK = {
    "lm": {
        "task": {"seq_len": 16, "n_layer": 1, "n_head": 2, "n_embd": 32},
        "data": {"batch_size": 4},
    },
    "classify": {"task": {"hidden": 8}, "data": {"dataset": "digits", "batch_size": 16}},
    "custom": {
        "task": {"factory": "examples.my_task:make_task", "options": {"hidden": 8}},
        "data": {"batch_size": 16},
    },
    "erm": {"data": {"dataset": "breast_cancer", "batch_size": 16}},
    "wide": {
        "task": {"width": 64, "dim": 8, "num_train": 32, "num_val": 16},
        "data": {"batch_size": 8},
    },
    "lowrank": {
        "task": {"d": 8, "rank": 2},
        "data": {"dataset": "lowrank-synthetic", "batch_size": 1_000_000},
    },
}
# each method's periodic work moved into the 3 steps, and the metric that shows it ran
CURVATURE = {"refresh_interval": 2, "warmup": 1, "k": 2}
METHOD = {
    "fosi": (CURVATURE, "eigenpairs"),
    "dho2": (CURVATURE, "eigenpairs"),
    "mr-dho2": ({**CURVATURE, "lanczos_per_step": 8}, "eigenpairs"),
    "mst": (
        {
            "update_every": 1,
            "attention_start": 0.0,
            "attention_stop": 1.0,
            "attention_window": 4,
            "attention_tile": 4,
        },
        "mst_pruned",
    ),
    "sublinear": ({}, "neurons_rekeyed"),
    "lowdim": ({"width": 2}, None),
}
# the layer lowdim compresses in each task's model (its default 'head' where absent)
LOWDIM_LAYER = {"lm": "transformer.h.0.mlp.c_fc", "custom": "2"}


def _config(task: str, methods: tuple[str, ...], tmp_path) -> config.ExperimentConfig:
    raw = {
        "task": {"name": task, **TASK[task].get("task", {})},
        "data": TASK[task]["data"],
        "methods": {m: dict(METHOD.get(m, ({}, None))[0]) for m in methods},
    }
    if "lowdim" in methods and task in LOWDIM_LAYER:
        raw["methods"]["lowdim"]["layer"] = LOWDIM_LAYER[task]
    name = "-".join((task, *methods))
    return config.from_dict(
        config.apply_overrides(raw, SHORT + [f"run.storage_path={tmp_path}", f"run.name={name}"])
    )


@pytest.mark.parametrize(
    "task,methods",
    catalog.accepted_runs(),
    ids=lambda x: "+".join(x) if isinstance(x, tuple) else x,
)
def test_accepted_run_trains_past_its_first_refresh(task, methods, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # the custom task's examples.my_task
    result = launch.fit(_config(task, methods, tmp_path))
    table = pq.read_table(pathlib.Path(result.run_dir) / "metrics.parquet").to_pydict()
    assert len(table["loss"]) == STEPS and all(math.isfinite(x) for x in table["loss"])
    for m in methods:
        proof = METHOD.get(m, ({}, None))[1]
        if proof is not None:
            assert max(table[proof]) > 0, f"{m} on {task}: no {proof} in {STEPS} steps"


def test_every_other_pair_is_refused_before_launch():
    accepted = set(catalog.accepted_runs())
    refused = [
        (t, (m,)) for t in catalog.TASKS for m in catalog.METHODS if (t, (m,)) not in accepted
    ]
    assert refused  # the ERM solvers, sublinear and mst alone at least
    for task, methods in refused:
        raw = {
            "task": {"name": task, **TASK[task].get("task", {})},
            "data": TASK[task]["data"],
            "methods": {m: {} for m in methods},
        }
        with pytest.raises(ConfigError, match=r"^methods"):
            config.from_dict(raw)


def test_a_refusal_names_the_method_the_task_and_why():
    with pytest.raises(
        ConfigError,
        match=r"^methods\.sublinear: sublinear cannot train task lm: "
        r"it needs a ShiftedReLU wide layer; it meets task "
        r"wide$",
    ):
        config.from_dict({"task": {"name": "lm"}, "methods": {"sublinear": {}}})
    with pytest.raises(
        ConfigError,
        match=r"^methods: exactly one method must build the "
        r"optimizer, and 0 here do \(none\)",
    ):
        config.from_dict({"task": {"name": "lm"}, "methods": {"mst": {}}})
