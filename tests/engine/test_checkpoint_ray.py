"""Corrupted checkpoints with Ray workers: the engine, not Ray, picks the newest good one."""

import os
import pathlib

import pyarrow.parquet as pq
import pytest
import torch

from raytrain_eff import config
from raytrain_eff.engine import checkpoint, launch

pytestmark = pytest.mark.usefixtures("ray_session")

COMMON = [
    "run.steps=24",
    "run.report_interval=4",
    "run.checkpoint_interval=4",
    "run.eval_interval=0",
]


def _table(run_dir):
    return pq.read_table(pathlib.Path(run_dir) / "metrics.parquet").to_pandas()


def _flip_a_byte(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _paused_with_a_bad_newest(run_cfg):
    paused = launch.fit(run_cfg("digits-sgd", *COMMON, "run.stop_after=12"))
    run = pathlib.Path(paused.run_dir)
    manifest = checkpoint.read_manifest(run / "checkpoint_step00000012")
    assert {"rng_rank0.pt", "rng_rank1.pt"} <= set(manifest["files"])  # both ranks' RNG
    _flip_a_byte(run / "checkpoint_step00000012" / "rng_rank1.pt")
    resumed = config.apply_resume_overrides(
        launch.load_run_config(str(run)), ["run.stop_after=null"]
    )
    return run, resumed


def _same_trajectory(run, straight, attempts):
    table, reference = _table(run), _table(straight.run_dir)
    assert table["step"].tolist() == list(range(24))
    assert table["attempt"].tolist() == attempts
    torch.testing.assert_close(
        torch.tensor(table["loss"].values),
        torch.tensor(reference["loss"].values),
        rtol=1e-6,
        atol=1e-7,
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory, ray_session):
    """The uninterrupted run both fallbacks must reproduce (one fit for the module: on a
    loaded machine each 2-worker fit takes minutes)."""
    storage = tmp_path_factory.mktemp("straight")
    return launch.fit(
        config.load(
            preset="digits-sgd",
            overrides=[
                f"run.storage_path={storage}",
                f"run.name=straight-{os.getpid()}",
                "monitor.enabled=false",
                *COMMON,
            ],
        )
    )


def test_two_workers_fall_back_past_a_corrupted_checkpoint(run_cfg, capsys, straight):
    run, resumed = _paused_with_a_bad_newest(run_cfg)
    capsys.readouterr()
    result = launch.fit(resumed, resume=True)
    assert (
        f"warning: {run}/checkpoint_step00000012/rng_rank1.pt does not match its manifest "
        f"checksum; resuming from the previous good checkpoint, checkpoint_step00000008"
    ) in capsys.readouterr().err
    _same_trajectory(run, straight, [0] * 8 + [1] * 16)
    # Ray deletes retired checkpoints by path: new names keep it off the ones it keeps
    assert result.checkpoint_path.endswith("checkpoint_step00000024-r1")
    checkpoint.read_manifest(result.checkpoint_path)
    assert checkpoint.listing(str(run)) == [
        "checkpoint_step00000020-r1",
        "checkpoint_step00000024-r1",
    ]


def test_ray_hands_a_restart_a_bad_checkpoint_and_the_workers_fall_back(run_cfg, straight):
    """Ray hands a restart its latest checkpoint, however bad: the workers fall back."""
    run, resumed = _paused_with_a_bad_newest(run_cfg)
    launch.build_trainer(resumed, resumed.run.name).fit()  # no driver-side choice
    _same_trajectory(run, straight, [0] * 8 + [1] * 16)
    assert checkpoint.listing(str(run))[-1] == "checkpoint_step00000024-r1"
