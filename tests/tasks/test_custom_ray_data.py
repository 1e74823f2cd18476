"""A user's model on a Ray Data dataset: Parquet text read with ray.data.read_parquet and
tokenised in map_batches (examples/my_ray_data_task.py), trained through Ray Train."""

import math
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.data

from raytrain_eff import config
from raytrain_eff.data.shard_stream import SequentialShard
from raytrain_eff.engine import launch, resources

REPO = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("ray_session")


def _texts(path, lengths):
    pq.write_table(pa.table({"text": ["x" * n for n in lengths]}), path)
    return str(path)


def _cfg(run_cfg_dir, name, path, *overrides, val=None):
    options = f"{{path: {path}, seq_len: 32, dim: 16" + (f", val_path: {val}}}" if val else "}")
    return config.load(
        path=str(REPO / "examples" / "my_ray_data_task.yaml"),
        overrides=[
            f"run.storage_path={run_cfg_dir}",
            f"run.name={name}",
            "monitor.enabled=false",
            f"task.options={options}",
            "data.batch_size=4",
            "run.report_interval=1",
            "run.checkpoint_interval=1",
            "run.eval_interval=0",
            "run.eval_batches=2",
            *overrides,
        ],
    )


def _table(run_dir):
    return pq.read_table(pathlib.Path(run_dir) / "metrics.parquet").to_pandas()


def test_positions_are_sequential_and_a_new_reader_starts_a_fresh_pass():
    ds = ray.data.range(10, override_num_blocks=1)
    shard = SequentialShard(ds.iterator())
    first = shard.at(6, 4)  # an attempt may start anywhere: its first ask opens a pass
    assert first["id"].tolist() == [0, 1, 2, 3]
    assert shard.at(6, 4) is first  # the same position again is served from memory
    assert shard.at(7, 4)["id"].tolist() == [4, 5, 6, 7]
    assert shard.at(8, 4)["id"].tolist() == [0, 1, 2, 3]  # drop_last: rows 8, 9 wait; pass 2
    assert shard.passes == 2
    with pytest.raises(
        ValueError, match="read in order, but micro-batch position 10 was asked after 8"
    ):
        shard.at(10, 4)
    with pytest.raises(ValueError, match="batch size 2 asked"):
        shard.at(9, 2)
    resumed = SequentialShard(ds.iterator())  # a resumed attempt: its pass starts again
    assert resumed.at(8, 4)["id"].tolist() == [0, 1, 2, 3]


def test_local_resume_starts_a_fresh_pass_with_tokens_from_the_mask(tmp_path):
    # 12 rows of distinct lengths, batches of 4: a pass is 3 steps, and a step's tokens
    # (the attention mask's sum, one worker) say which rows it trained on
    path = _texts(tmp_path / "t.parquet", [3, 5, 7, 11, 13, 17, 19, 23, 29, 2, 4, 6])
    common = ["scaling.num_workers=0", "run.steps=5"]
    straight = launch.fit(_cfg(tmp_path, "straight", path, *common))
    paused = launch.fit(_cfg(tmp_path, "paused", path, *common, "run.stop_after=2"))
    launch.fit(launch.load_run_config(paused.run_dir), resume=True)
    a, b = _table(straight.run_dir), _table(paused.run_dir)
    one_pass = a["tokens"].tolist()[:3]
    assert sorted(one_pass) == sorted([3 + 5 + 7 + 11, 13 + 17 + 19 + 23, 29 + 2 + 4 + 6])
    assert a["tokens"].tolist() == one_pass + one_pass[:2]  # passes follow one another
    assert b["attempt"].tolist() == [0, 0, 1, 1, 1]
    # the resumed attempt began a fresh pass at step 2: rows 0..7 again, rows 8..11 after
    assert b["tokens"].tolist() == one_pass[:2] + one_pass
    assert (a["samples"] == 4).all() and all(math.isfinite(x) for x in b["loss"])


def test_two_workers_train_a_streamed_hf_style_batch(tmp_path):
    # every row 20 bytes in windows of 32: tokens are the mask's 20 per row, not 32; 2 workers
    # x 1 CPU leave the session's other 2 CPUs to Ray Data's read and tokeniser
    path = _texts(tmp_path / "t.parquet", [20] * 48)
    result = launch.fit(
        _cfg(
            tmp_path,
            "two",
            path,
            "scaling.num_workers=2",
            "scaling.cpus_per_worker=1",
            "run.steps=3",
            "run.report_interval=3",
            "run.checkpoint_interval=3",
            val=path,
        )
    )
    table = _table(result.run_dir)
    assert table["step"].tolist() == [0, 1, 2]
    assert (table["samples"] == 2 * 4).all() and (table["tokens"] == 2 * 4 * 20).all()
    assert all(math.isfinite(x) for x in table["loss"])
    assert math.isfinite(result.metrics["val_loss"])


def test_workers_that_take_every_cpu_are_refused_before_launch(tmp_path):
    import ray

    cpus = int(ray.cluster_resources()["CPU"])
    cfg = _cfg(
        tmp_path,
        "greedy",
        _texts(tmp_path / "t.parquet", [20] * 8),
        f"scaling.num_workers={cpus}",
        "scaling.cpus_per_worker=1",
    )
    with pytest.raises(
        resources.ResourcesUnavailable,
        match=rf"{cpus} workers x scaling.cpus_per_worker=1 = {cpus} CPU of the "
        rf"cluster's {cpus} leave 0; fix it with scaling.cpus_per_worker=",
    ):
        launch.fit(cfg)
    assert not (tmp_path / "greedy" / "config.yaml").exists()
