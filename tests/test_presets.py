"""Every packaged preset as shipped: its own workers, strategy and placement on a real Ray Train
worker group, with only the step counts shortened.

Each preset trains 2 steps with an evaluation and a checkpoint, pauses, and is resumed to step 4
(a second evaluation and checkpoint). This is what a new user meets first, so the tier runs in
the README's test command (`-m presets` runs it alone).
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
    "run.stop_after=2",
]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("preset", config.preset_names())
def test_preset_as_shipped_evaluates_checkpoints_and_resumes(preset, run_cfg):
    shipped = config.load(preset=preset)
    paused = launch.fit(run_cfg(preset, *SHORTENED))
    resumed = launch.fit(launch.load_run_config(paused.run_dir), resume=True)

    run_dir = pathlib.Path(paused.run_dir)
    table = pq.read_table(run_dir / "metrics.parquet").to_pandas()
    assert table["step"].tolist() == [0, 1, 2, 3]
    assert table["attempt"].tolist() == [0, 0, 1, 1]  # paused, then resumed
    assert table["world_size"].tolist() == [max(shipped.scaling.num_workers, 1)] * 4
    if shipped.data.val_fraction == 0:  # nothing held out (erm-digits: the objective is
        assert not any(c.startswith("val_") for c in table.columns)  # the measure)
    else:
        evaluated = table.dropna(subset=["val_loss"])["step"].tolist()
        assert evaluated == [1, 3], f"evaluations at steps {evaluated}"
    assert table["loss"].notna().all()
    checkpoints = sorted(p.name for p in run_dir.glob("checkpoint_step*"))
    assert checkpoints == ["checkpoint_step00000002", "checkpoint_step00000004"]
    assert resumed.checkpoint_path and resumed.checkpoint_path.endswith(checkpoints[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["scaling"] == json.loads(
        json.dumps(shipped.to_dict()["scaling"])
    )  # the preset's own scaling, untouched
