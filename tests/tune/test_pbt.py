"""PBT copies a better trial's engine checkpoint into a worse one and the tables stay whole."""
import pathlib
import textwrap

import pandas as pd
import pytest

from raytrain_eff.tune.sweep import run_sweep

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.mark.timeout(600)
def test_pbt_exploits_through_engine_checkpoints(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(textwrap.dedent("""\
        base: digits-adamw
        overrides: [run.steps=30, run.report_interval=5, run.checkpoint_interval=5,
                    scaling.num_workers=1, monitor.enabled=false]
        metric: val_loss
        mode: min
        num_samples: 2
        # synchronous: both trials meet at step 15, the worse copies the better
        scheduler: {type: pbt, perturbation_interval: 960, quantile_fraction: 0.5, synch: true}
        resources: {max_concurrent: 2}
        space:
          methods.adamw.lr: {loguniform: [1.0e-5, 1.0e-2]}
        """))
    sweep_dir = pathlib.Path(run_sweep(str(space_file), name="pbt", storage_path=str(tmp_path)))
    segments = sorted(p.name for p in (sweep_dir / "trials").glob("*-from*"))
    assert segments, "no trial exploited another"
    steps = pd.read_parquet(sweep_dir / "results.parquet")
    assert steps.trial_id.nunique() == 2
    for _, frame in steps.groupby("trial_id"):
        assert frame.step.tolist() == list(range(30))  # stitched: one row per step
