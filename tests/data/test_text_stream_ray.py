"""Streamed Parquet text on real Ray Train worker groups: a paused and resumed 2-worker run
equals a straight one, and a run resumed on another worker count goes on streaming."""

import pathlib

import pyarrow.parquet as pq
import pytest
import torch

from raytrain_eff import config
from raytrain_eff.data.corpus import kjv_verses
from raytrain_eff.engine import launch

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import pyarrow as pa

    path = tmp_path_factory.mktemp("corpus") / "kjv.parquet"
    verses = [v["text"] for v in kjv_verses()[:3000]]  # real text, 6 row groups
    pq.write_table(pa.table({"text": verses}), path, row_group_size=500)
    return str(path)


def _table(run_dir):
    return pq.read_table(pathlib.Path(run_dir) / "metrics.parquet").to_pandas()


def _cfg(run_cfg, corpus, *extra):
    return run_cfg(
        "default",
        f"data.dataset={corpus}",
        "data.batch_size=8",
        "data.shuffle_window=64",
        "scaling.num_workers=2",
        "run.steps=6",
        "run.report_interval=3",
        "run.checkpoint_interval=3",
        "run.eval_interval=3",
        "run.eval_batches=2",
        "task.seq_len=16",
        "task.n_layer=1",
        "task.n_embd=32",
        "task.n_head=2",
        "train.warmup_steps=0",
        "monitor.progress=false",
        *extra,
    )


def test_a_resumed_streamed_run_equals_a_straight_one_and_changes_worker_count(run_cfg, corpus):
    straight = launch.fit(_cfg(run_cfg, corpus))
    paused = launch.fit(_cfg(run_cfg, corpus, "run.stop_after=3"))
    launch.fit(
        config.apply_resume_overrides(
            launch.load_run_config(paused.run_dir), ["run.stop_after=null"]
        ),
        resume=True,
    )
    a, b = _table(straight.run_dir), _table(paused.run_dir)
    assert b["step"].tolist() == list(range(6)) and b["attempt"].tolist() == [0] * 3 + [1] * 3
    torch.testing.assert_close(
        torch.tensor(b["loss"].values), torch.tensor(a["loss"].values), rtol=1e-6, atol=1e-7
    )

    # the same run again from its step-3 checkpoint, now on one worker
    launch.fit(
        config.apply_resume_overrides(
            launch.load_run_config(paused.run_dir), ["scaling.num_workers=1"]
        ),
        resume=True,
        from_checkpoint="3",
    )
    c = _table(paused.run_dir)
    assert c["step"].tolist() == list(range(6)) and c["world_size"].tolist() == [2] * 3 + [1] * 3
    assert (c["samples"].iloc[3:] == 8).all() and torch.isfinite(torch.tensor(c["loss"])).all()
    # the first three steps are the straight run's: the change of world size came after them
    torch.testing.assert_close(
        torch.tensor(c["loss"].values[:3]), torch.tensor(a["loss"][:3]), rtol=1e-6, atol=1e-7
    )
