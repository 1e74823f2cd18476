"""A small real sweep on the shared Ray session: 4 trials, ASHA, 1 worker each."""

import json
import pathlib
import textwrap

import pandas as pd
import pytest
import yaml

from raytrain_eff import config
from raytrain_eff.tune import reported, space
from raytrain_eff.tune.sweep import run_sweep

pytestmark = pytest.mark.usefixtures("ray_session")


def test_asha_sweep_writes_table_best_yaml_and_plots_and_survives_a_failing_trial(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(
        textwrap.dedent("""\
        base: digits-adamw
        overrides: [run.steps=40, run.report_interval=10, run.checkpoint_interval=20,
                    scaling.num_workers=1, monitor.enabled=false]
        metric: val_loss
        mode: min
        num_samples: 2
        scheduler: {type: asha, grace_period: 640}
        space:
          methods.adamw.lr: {loguniform: [1.0e-3, 1.0e-2]}
          data.val_fraction: {grid: [0.2, 0.99999]}   # the second cannot split 1,797 rows
        """)
    )
    sweep_dir = pathlib.Path(run_sweep(str(space_file), name="s1", storage_path=str(tmp_path)))
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(trials) == 4
    failed = trials[trials["config/data.val_fraction"] > 0.9]
    assert (failed.status == "errored").all()
    assert failed.error.str.contains("cannot be split").all()
    ok = trials[trials.status.isin(["completed", "early_stopped"])]
    assert len(ok) == 2 and ok.val_loss.notna().all()
    assert (ok.steps_done[ok.status == "completed"] == 40).all()
    assert (ok.steps_done[ok.status == "early_stopped"] < 40).all()
    steps = pd.read_parquet(sweep_dir / "results.parquet")
    assert set(steps.trial_id) == set(ok.trial_id)
    for _tid, frame in steps.groupby("trial_id"):
        assert frame.step.tolist() == list(range(len(frame)))  # one row per step
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    cfg = config.from_dict(best)
    best_row = ok[ok.status == "completed"].sort_values("val_loss").iloc[0]
    assert cfg.methods["adamw"].lr == pytest.approx(best_row["config/methods.adamw.lr"])
    assert cfg.run.name is None
    check_reported_keys(sweep_dir, space_file, set(ok.trial_id))
    assert (sweep_dir / "plots" / "pareto.png").stat().st_size > 1000
    assert (sweep_dir / "plots" / "val_loss_vs_wall_s.png").exists()
    assert "data:image/png;base64," in (sweep_dir / "report.html").read_text()


def check_reported_keys(sweep_dir: pathlib.Path, space_file, trial_ids: set) -> None:
    """tune.reported's names are the keys a real trial reports (its checks must not lag)."""
    _, base = space.load(str(space_file))
    evals, unknown = reported.eval_metrics(base)
    assert unknown is None
    for trial_id in trial_ids:
        (trial_dir,) = sweep_dir.glob(f"run_trial_{trial_id}_*")
        keys = set(json.loads((trial_dir / "result.json").read_text().splitlines()[-1]))
        assert set(reported.ENGINE_METRICS) | evals | set(reported.COUNTERS) <= keys
        assert {k for k in keys if k.startswith("val_")} == evals
