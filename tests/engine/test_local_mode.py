"""The engine in Train's local mode (one process): records, checkpoints, pause and resume."""

import json
import pathlib

import pyarrow.parquet as pq
import pytest
import torch

from raytrain_eff.engine import checkpoint, finished_runs, launch
from raytrain_eff.typed import ConfigError


def _table(run_dir):
    return pq.read_table(pathlib.Path(run_dir) / "metrics.parquet").to_pandas()


def test_local_run_leaves_table_summary_and_checkpoint(run_cfg):
    cfg = run_cfg(
        "digits-adamw",
        "scaling.num_workers=0",
        "run.steps=120",
        "run.eval_interval=60",
        "run.report_interval=20",
        "run.checkpoint_interval=60",
    )
    result = launch.fit(cfg)
    table = _table(result.run_dir)
    assert table["step"].tolist() == list(range(120))
    assert set(table["attempt"]) == {0}
    assert (table["effective_flops"] > 0).all() and (table["dense_flops"] > 0).all()
    assert table["loss"].iloc[-5:].mean() < table["loss"].iloc[:5].mean()
    assert table["val_accuracy"].dropna().iloc[-1] > 0.5  # 10 classes: chance is 0.1
    summary = json.loads((pathlib.Path(result.run_dir) / "summary.json").read_text())
    for key in ("config", "commit", "data_checksum", "machine", "totals", "final"):
        assert key in summary
    assert summary["totals"]["samples"] == 120 * 64
    assert summary["model_build"] == "meta"  # built on the meta device (engine.materialize)
    assert result.metrics["step"] == 120 and "val_loss" in result.metrics
    ckpts = sorted(p.name for p in pathlib.Path(result.run_dir).glob("checkpoint_step*"))
    assert ckpts == ["checkpoint_step00000060", "checkpoint_step00000120"]


def test_pause_and_resume_follow_the_straight_trajectory(run_cfg):
    common = [
        "scaling.num_workers=0",
        "run.steps=30",
        "run.report_interval=5",
        "run.checkpoint_interval=5",
        "run.eval_interval=0",
    ]
    straight = launch.fit(run_cfg("digits-sgd", *common))
    paused_cfg = run_cfg("digits-sgd", *common, "run.stop_after=15")
    paused = launch.fit(paused_cfg)
    assert _table(paused.run_dir)["step"].max() == 14
    from raytrain_eff import config

    resumed_cfg = config.apply_resume_overrides(
        launch.load_run_config(paused.run_dir), ["run.stop_after=null"]
    )
    launch.fit(resumed_cfg, resume=True)
    a, b = _table(straight.run_dir), _table(paused.run_dir)
    assert b["step"].tolist() == list(range(30))
    assert b["attempt"].tolist() == [0] * 15 + [1] * 15
    torch.testing.assert_close(
        torch.tensor(b["loss"].values), torch.tensor(a["loss"].values), rtol=1e-6, atol=1e-7
    )


def test_existing_run_name_is_never_silently_resumed(run_cfg):
    cfg = run_cfg(
        "digits-adamw",
        "scaling.num_workers=0",
        "run.steps=5",
        "run.report_interval=5",
        "run.checkpoint_interval=5",
    )
    launch.fit(cfg)
    with pytest.raises(ConfigError, match="already exists"):
        launch.fit(cfg)


def test_eval_export_and_corrupted_checkpoint_fallback(run_cfg, tmp_path):
    cfg = run_cfg(
        "digits-adamw",
        "scaling.num_workers=0",
        "run.steps=20",
        "run.report_interval=10",
        "run.checkpoint_interval=10",
        "run.eval_interval=20",
    )
    result = launch.fit(cfg)
    metrics = finished_runs.evaluate_run(result.run_dir)
    assert metrics["val_loss"] == pytest.approx(result.metrics["val_loss"], rel=1e-6)
    out = tmp_path / "model.pt"
    finished_runs.export_run(result.run_dir, str(out))
    state = torch.load(out, weights_only=True)
    assert any(k.startswith("head.") for k in state)
    newest = pathlib.Path(result.run_dir) / "checkpoint_step00000020"
    (newest / "shards" / "__0_0.distcp").write_bytes(b"truncated")
    with pytest.raises(checkpoint.CheckpointError, match="checksum"):
        checkpoint.read_manifest(newest)
    assert finished_runs.latest_checkpoint(result.run_dir).name == "checkpoint_step00000010"
