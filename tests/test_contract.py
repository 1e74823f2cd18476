"""Contract tests over the registry and the packaged presets.

Every registered method has a preset; a preset of every (methods, task) pairing trains through
the engine in one process, and a run paused half-way and resumed reaches exactly the loss of the
uninterrupted run (model, optimizer, method state, schedules and RNG all round-trip through the
checkpoint).
"""

import pathlib

import pyarrow.parquet as pq
import pytest
import torch

from raytrain_eff import catalog, config
from raytrain_eff.engine import launch

SHORT = [
    "scaling.num_workers=0",
    "run.steps=6",
    "run.report_interval=1",
    "run.checkpoint_interval=1",
    "run.eval_interval=0",
    "monitor.enabled=false",
    "monitor.progress=false",
]


def test_every_registered_method_has_a_preset():
    used = {m for name in config.preset_names() for m in config.load(preset=name).methods}
    assert set(catalog.METHODS) <= used, f"methods without a preset: {set(catalog.METHODS) - used}"


def test_every_entry_imports():
    for table in (catalog.METHODS, catalog.TASKS):
        for entry in table.values():
            catalog.load_object(entry.config)
            catalog.load_object(entry.impl)


def _losses(run_dir):
    return torch.tensor(
        pq.read_table(pathlib.Path(run_dir) / "metrics.parquet").column("loss").to_pylist()
    )


def _one_preset_per_methods_and_task() -> list[str]:
    """The first preset of each (methods, task) pairing: exact resume is a property of the
    methods' and the task's state, so presets that differ only in settings add nothing here
    (every preset as shipped also trains and resumes on Ray: tests/test_presets.py)."""
    seen: set = set()
    chosen = []
    for name in config.preset_names():
        cfg = config.load(preset=name)
        key = (tuple(sorted(cfg.methods)), cfg.task.name)
        if key not in seen:
            seen.add(key)
            chosen.append(name)
    return chosen


@pytest.mark.parametrize("preset", _one_preset_per_methods_and_task())
def test_preset_trains_and_resumes_exactly(preset, tmp_path):
    overrides = SHORT + [f"run.storage_path={tmp_path}"]
    straight = launch.fit(config.load(preset=preset, overrides=overrides + ["run.name=a"]))
    paused = launch.fit(
        config.load(preset=preset, overrides=overrides + ["run.name=b", "run.stop_after=3"])
    )
    resumed = config.apply_resume_overrides(
        launch.load_run_config(paused.run_dir), ["run.stop_after=null"]
    )
    launch.fit(resumed, resume=True)
    a, b = _losses(straight.run_dir), _losses(paused.run_dir)
    assert len(a) == len(b) == 6 and torch.isfinite(a).all()
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
