"""Run totals: restored from the checkpoint, summed over kept steps, shared out over ranks."""

import pytest

from raytrain_eff.engine.totals import RankShare, RunTotals
from raytrain_eff.monitor import keys as K

ROW = {K.SAMPLES: 64, K.TOKENS: 640, K.DENSE_FLOPS: 1e9, K.EFFECTIVE_FLOPS: 4e8, K.STEP_TIME: 0.5}


def test_totals_round_trip_through_the_manifest_and_add_the_new_attempt():
    first = RunTotals()
    for _ in range(10):
        first.add_step(ROW)
    manifest = {"step": 10, "totals": first.to_manifest(attempt_seconds=7.0)}
    resumed = RunTotals.from_manifest(manifest)
    assert resumed.samples == 640 and resumed.effective_flops == pytest.approx(4e9)
    assert resumed.train_seconds == pytest.approx(5.0) and resumed.wall_seconds == 7.0
    resumed.add_step(ROW)
    summary = resumed.summary(attempt_seconds=3.0)
    assert summary["samples"] == 704 and summary["wall_seconds"] == 10.0
    assert summary["train_seconds"] == pytest.approx(5.5)


def test_old_checkpoints_restore_samples_only_and_unknown_keys_fail():
    assert RunTotals.from_manifest({"samples_seen": 96}) == RunTotals(samples=96)
    assert RunTotals.from_manifest({}, samples_fallback=32) == RunTotals(samples=32)
    with pytest.raises(ValueError, match=r"unknown keys \['flops'\]"):
        RunTotals.from_manifest({"totals": {"flops": 1.0}})


def test_rank_shares_sum_to_the_run_total_after_a_world_size_change():
    restored = RunTotals(samples=1200, tokens=12000, dense_flops=3e9, effective_flops=1e9)
    shares = [RankShare(restored, world=3, start_step=10) for _ in range(3)]
    per_rank = {K.SAMPLES: 10, K.TOKENS: 100, K.DENSE_FLOPS: 1e8, K.EFFECTIVE_FLOPS: 5e7}
    values = [share.add_step(per_rank) for share in shares]
    assert sum(v[K.SAMPLES] for v in values) == 1200 + 30
    assert sum(v[K.EFFECTIVE_FLOPS] for v in values) == pytest.approx(1e9 + 1.5e8)
    assert all(v[K.STEPS] == 11 for v in values)
