"""Text streamed from Parquet row groups: byte-level windows of real text, batches that are a
pure function of (seed, position, rank, world) whatever was read before, a held-out split or a
separate validation file, and a paused-and-resumed local run equal to a straight one."""

import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raytrain_eff import config
from raytrain_eff.data.corpus import kjv_verses
from raytrain_eff.data.parquet import DataError
from raytrain_eff.data.text import ByteVocab, StreamedText, decode_text, streamed_text
from raytrain_eff.engine import launch

T = 16


def write_corpus(path, verses, rows_per_group=500):
    pq.write_table(pa.table({"text": verses}), path, row_group_size=rows_per_group)
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Genesis to Leviticus (3,600 verses, real text) in row groups of 500 verses."""
    verses = [v["text"] for v in kjv_verses()[:3600]]
    return write_corpus(tmp_path_factory.mktemp("corpus") / "kjv.parquet", verses), verses


def _text(corpus, **data):
    cfg = config.load(
        overrides=[f"data.dataset={corpus[0]}", *(f"data.{k}={v}" for k, v in data.items())]
    )
    return streamed_text(cfg.data, T, seed=3)


def test_windows_are_bytes_of_the_text_and_predict_the_next(corpus):
    text = _text(corpus)
    x, y = text.batch(0, 0, 1, 8)
    assert x.shape == y.shape == (8, T) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and len(text.vocab) == 256
    joined = ("\n".join(corpus[1]) + "\n").encode()
    for row in torch.cat([x, y[:, -1:]], 1):
        assert bytes(row.tolist()) in joined
    assert text.num_train == int(3600 * 0.95)


def test_a_row_group_decodes_to_its_rows_each_ending_in_a_newline():
    g = decode_text(pa.table({"text": ["ab", None, "", "é"]}), "t", "text")
    joined = "ab\n\n\né\n".encode()
    assert g.size == len(joined) and g.raw.dtype == np.uint8
    assert bytes(g.windows(np.array([0]), g.size)[0].tolist()) == joined
    assert bytes(g.windows(np.array([2, 5]), 3).tolist()[1]) == joined[5:8]
    assert [a.tolist() for a in g.starts(np.arange(4))] == [[0, 3, 4, 5], [3, 4, 5, 8]]
    assert ByteVocab().decode(ByteVocab().encode("Jesus wept. é")) == "Jesus wept. é"


@pytest.mark.parametrize("world", [1, 2, 3])
def test_batches_do_not_depend_on_what_was_read_before(corpus, world):
    positions = [(p, r) for p in range(6, 9) for r in range(world)]
    fresh = _text(corpus, cache_row_groups=1)
    expected = [fresh.batch(p, r, world, 8) for p, r in positions]
    used = _text(corpus, cache_row_groups=3)  # another cache, and an earlier attempt that ran
    before = 4 - world  # positions 0..5 on another number of workers
    for p in range(6):
        for r in range(before):
            used.batch(p, r, before, 8)
    got = [used.batch(p, r, world, 8) for p, r in positions]
    for (x0, y0), (x1, y1) in zip(expected, got, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    fresh.close()
    used.close()


def test_each_row_group_is_decoded_once_a_pass_when_batches_span_more_than_the_cache(corpus):
    # windows of 2,000 rows over groups of 500 touch 4-5 groups a batch: a cache of 1 would
    # evict each group before its turn (every batch waiting for groups decoded again); the
    # reader grows to what one batch and the next touch, and decodes every group once
    text = _text(corpus, cache_row_groups=1, shuffle_window=2000)
    reader = text.readers["train"]
    decoded = []
    real = reader.decode
    reader.decode = lambda table, where: decoded.append(where) or real(table, where)
    batches = text.plan.num_rows // 8  # one pass over the single rank's rows; the last
    for p in range(batches - 1):  # batch comes prefetched (the pass after would be too)
        text.batch(p, 0, 1, 8)
    text.close()  # waits for the reader thread
    assert 1 < reader.capacity < len(text.train.file)
    assert len(decoded) == len(set(decoded)) == len(text.train.file)


def test_validation_is_the_tail_or_a_separate_file(corpus, tmp_path):
    tail = _text(corpus)
    assert tail.val.num_rows == 3600 - int(3600 * 0.95) and tail.train.num_rows == 3420
    first = list(tail.val_batches(4, 3))
    assert len(first) == 3 and all(
        torch.equal(a[0], b[0]) for a, b in zip(first, tail.val_batches(4, 3), strict=True)
    )
    held = write_corpus(tmp_path / "val.parquet", corpus[1][:50])
    separate = _text(corpus, val_dataset=held)
    assert separate.train.num_rows == 3600 and separate.val.num_rows == 50
    x, _ = next(separate.val_batches(4, 1))
    assert bytes(x[0].tolist()).startswith(corpus[1][0].encode()[:T])
    assert separate.checksum() != tail.checksum()


def test_bad_text_data_is_named(corpus, tmp_path):
    tiny = write_corpus(tmp_path / "tiny.parquet", ["a", "b", "c", "d"] * 5, rows_per_group=4)
    with pytest.raises(
        DataError,
        match=r"tiny.parquet: row group \d: 8 bytes of text, fewer "
        r"than task.seq_len\+1 \(17\)",
    ):
        _text((tiny,)).batch(0, 0, 1, 2)
    with pytest.raises(DataError, match="1 rows cannot be split with data.val_fraction=0.05"):
        _text((write_corpus(tmp_path / "one.parquet", ["x" * 40]),))
    with pytest.raises(DataError, match="missing.parquet: no such file"):
        _text(corpus, val_dataset=str(tmp_path / "missing.parquet"))


def test_streamed_reader_survives_pickling(corpus):
    import pickle

    text = _text(corpus)
    text.batch(0, 0, 1, 4)
    again = pickle.loads(pickle.dumps(text))
    assert torch.equal(again.batch(1, 0, 1, 4)[0], text.batch(1, 0, 1, 4)[0])
    assert isinstance(again, StreamedText)


def _losses(run_dir):
    return torch.tensor(
        pq.read_table(pathlib.Path(run_dir) / "metrics.parquet").column("loss").to_pylist()
    )


def test_paused_and_resumed_local_run_equals_a_straight_one(corpus, tmp_path):
    common = [
        f"data.dataset={corpus[0]}",
        "data.batch_size=8",
        "data.shuffle_window=64",
        "scaling.num_workers=0",
        "run.steps=6",
        "run.report_interval=1",
        "run.checkpoint_interval=1",
        "run.eval_interval=3",
        "run.eval_batches=2",
        "monitor.enabled=false",
        "monitor.progress=false",
        f"run.storage_path={tmp_path}",
        "task.seq_len=16",
        "task.n_layer=1",
        "task.n_embd=32",
        "task.n_head=2",
        "train.grad_accum=2",
        "train.warmup_steps=0",
    ]
    straight = launch.fit(config.load(overrides=common + ["run.name=a"]))
    paused = launch.fit(config.load(overrides=common + ["run.name=b", "run.stop_after=3"]))
    resumed = config.apply_resume_overrides(
        launch.load_run_config(paused.run_dir), ["run.stop_after=null"]
    )
    launch.fit(resumed, resume=True)
    a, b = _losses(straight.run_dir), _losses(paused.run_dir)
    assert len(a) == len(b) == 6 and torch.isfinite(a).all()
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_a_directory_or_uri_streams_and_the_task_reports_its_data_wait(corpus, tmp_path):
    from raytrain_eff.engine.runner import build_task

    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        write_corpus(shards / f"part-{i}.parquet", corpus[1][i * 1000 : (i + 1) * 1000])
    (shards / "_SUCCESS").write_text("")
    cfg = config.load(
        overrides=[
            f"data.dataset=file://{shards}",
            "task.seq_len=16",
            "task.n_layer=1",
            "task.n_embd=32",
            "task.n_head=2",
        ]
    )
    task = build_task(cfg)
    task.load()
    assert len(task.text.train.files) == 3 and task.num_train == 2850 and len(task.vocab) == 256
    assert task.data_wait_s() == 0.0
    task.train_batch(0, 0, 0, 2, 8)
    waited = task.data_wait_s()
    assert waited > 0 and task.data_wait_s() == 0.0  # asking resets it
    out = task.sample(task.build_model(), "In the", 5, 1.0, seed=0)
    assert out.startswith("In the")
