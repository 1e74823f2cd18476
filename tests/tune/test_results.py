"""Trial records: honest statuses, PBT segments stitched with the config each ran with."""

import pandas as pd
import pytest
import yaml

from raytrain_eff.tune import results
from raytrain_eff.tune.space import Entry, SweepSpec


@pytest.mark.parametrize(
    "tune_status, done, started, status",
    [
        ("TERMINATED", 20, True, "completed"),
        ("TERMINATED", 10, True, "early_stopped"),  # a scheduler's STOP
        ("ERROR", 3, True, "errored"),
        ("RUNNING", 7, True, "interrupted"),
        ("RUNNING", 0, False, "interrupted"),  # started, stopped before its first report
        ("PAUSED", 10, True, "interrupted"),
        ("PENDING", 5, True, "interrupted"),  # restored, not yet running again
        ("PENDING", 0, True, "interrupted"),  # its function ran, Tune had not noted it
        ("PENDING", 0, False, "not_started"),
    ],
)
def test_status_of(tune_status, done, started, status):
    assert results.status_of(tune_status, done, 20, started) == status
    assert status in results.STATUSES


def test_expected_trials_count_grid_points_but_not_conditional_grids():
    spec = SweepSpec(path="s.yaml", base="b", num_samples=3)
    spec.entries = [
        Entry(key="a", kind="grid", args=[1, 2]),
        Entry(key="b", kind="grid", args=[1, 2, 3], when={"a": 1}),
        Entry(key="c", kind="uniform", args=[0.0, 1.0]),
    ]
    assert results.expected_trials(spec) == 6


def write_segment(trials_dir, name: str, steps: range, lr: float) -> None:
    run = trials_dir / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"methods": {"adamw": {"lr": lr}}}))
    pd.DataFrame(
        {
            "step": list(steps),
            "samples": [32] * len(steps),
            "val_loss": [1.0 / (s + 1) for s in steps],
        }
    ).to_parquet(run / "metrics.parquet")


def test_pbt_segments_replace_what_followed_their_start_and_carry_their_config(tmp_path):
    write_segment(tmp_path, "sw-t1", range(0, 12), 0.1)  # ran past the exploit
    write_segment(tmp_path, "sw-t1-from00000008", range(8, 16), 0.2)
    write_segment(tmp_path, "sw-t1-from00000012", range(12, 20), 0.2)  # its own checkpoint
    write_segment(tmp_path, "sw-t10", range(0, 20), 0.3)  # another trial's prefix
    frame, history = results.stitched(str(tmp_path), "sw-t1", ["methods.adamw.lr"])
    assert frame.step.tolist() == list(range(20))
    assert frame["config/methods.adamw.lr"].tolist() == [0.1] * 8 + [0.2] * 12
    assert frame.samples_seen.tolist() == [32 * (s + 1) for s in range(20)]
    assert history == [
        {"from_step": 0, "methods.adamw.lr": 0.1},
        {"from_step": 8, "methods.adamw.lr": 0.2},
    ]
