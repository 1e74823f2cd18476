"""Every packaged preset as shipped: its own workers, strategy and placement on a real Ray Train
worker group, with only the step counts shortened.

Each preset trains 4 steps with an evaluation and a checkpoint every 2. One preset per method
(the one with the most workers) pauses at step 2 and is resumed to step 4; the others, whose
method's resume that run already covers, train the 4 steps straight. This is what a new user
meets first, so the tier runs in the README's test command (`-m presets` runs it alone).
"""

import json
import pathlib

import pyarrow.parquet as pq
import pytest

from raytrain_eff import config
from raytrain_eff.engine import launch

pytestmark = [pytest.mark.presets, pytest.mark.usefixtures("ray_session")]

# the step counts only: every other key (scaling above all) stays as shipped
SHORTENED = [
    "run.steps=4",
    "run.eval_interval=2",
    "run.report_interval=2",
    "run.checkpoint_interval=2",
]


def _resumed_per_method() -> list[str]:
    """One preset per set of methods, the one with the most workers (a worker group's resume
    is the harder case), ties to the first name: its run pauses and resumes."""
    chosen: dict[tuple[str, ...], tuple[int, str]] = {}
    for name in config.preset_names():
        cfg = config.load(preset=name)
        key = tuple(sorted(cfg.methods))
        rank = (-cfg.scaling.num_workers, name)
        chosen[key] = min(chosen.get(key, rank), rank)
    return sorted(name for _, name in chosen.values())


RESUMED = _resumed_per_method()
STRAIGHT = [name for name in config.preset_names() if name not in RESUMED]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("preset", RESUMED)
def test_preset_as_shipped_evaluates_checkpoints_and_resumes(preset, run_cfg):
    paused = launch.fit(run_cfg(preset, *SHORTENED, "run.stop_after=2"))
    resumed = launch.fit(launch.load_run_config(paused.run_dir), resume=True)
    _check_run(preset, resumed, attempts=[0, 0, 1, 1])  # paused, then resumed


@pytest.mark.timeout(240)
@pytest.mark.parametrize("preset", STRAIGHT)
def test_preset_as_shipped_evaluates_and_checkpoints(preset, run_cfg):
    _check_run(preset, launch.fit(run_cfg(preset, *SHORTENED)), attempts=[0] * 4)


def _check_run(preset: str, last: launch.FitResult, attempts: list[int]) -> None:
    """Steps 0-3 logged with a loss, evaluations at steps 1 and 3, checkpoints at 2 and 4, the
    last one returned, and the preset's own scaling untouched."""
    shipped = config.load(preset=preset)
    run_dir = pathlib.Path(last.run_dir)
    table = pq.read_table(run_dir / "metrics.parquet").to_pandas()
    assert table["step"].tolist() == [0, 1, 2, 3]
    assert table["attempt"].tolist() == attempts
    assert table["world_size"].tolist() == [max(shipped.scaling.num_workers, 1)] * 4
    if shipped.data.val_fraction == 0:  # nothing held out (erm-digits: the objective is
        assert not any(c.startswith("val_") for c in table.columns)  # the measure)
    else:
        evaluated = table.dropna(subset=["val_loss"])["step"].tolist()
        assert evaluated == [1, 3], f"evaluations at steps {evaluated}"
    assert table["loss"].notna().all()
    checkpoints = sorted(p.name for p in run_dir.glob("checkpoint_step*"))
    assert checkpoints == ["checkpoint_step00000002", "checkpoint_step00000004"]
    assert last.checkpoint_path and last.checkpoint_path.endswith(checkpoints[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["scaling"] == json.loads(
        json.dumps(shipped.to_dict()["scaling"])
    )  # the preset's own scaling, untouched
