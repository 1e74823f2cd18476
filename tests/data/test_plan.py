"""The seeded plan over row groups: disjoint epochs across ranks at any world size, a pure
function of the position, splits that partition the rows; all from footers alone."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytrain_eff.data.parquet import DataError
from raytrain_eff.data.plan import Plan, Segments
from raytrain_eff.ranks import shard_rows


@pytest.fixture
def segments(tmp_path):
    """Two files in a directory, row groups of uneven sizes (97 rows in all)."""
    start = 0
    for name, sizes in (("a.parquet", [10, 3, 25]), ("b.parquet", [40, 19])):
        with pq.ParquetWriter(tmp_path / name, pa.schema({"text": pa.string()})) as w:
            for n in sizes:
                w.write_table(pa.table({"text": [str(i) for i in range(start, start + n)]}))
                start += n
    return Segments.from_footers(str(tmp_path))


def _ids(segments, rows):
    """Global row numbers (file order) of located rows."""
    firsts, total = {}, 0
    for f, g, n in zip(
        segments.file.tolist(), segments.group.tolist(), segments.stop.tolist(), strict=True
    ):
        firsts[(f, g)] = total
        total += n
    return [
        firsts[(f, g)] + r
        for f, g, r in zip(rows.file.tolist(), rows.group.tolist(), rows.row.tolist(), strict=True)
    ]


def test_footers_give_row_groups_without_reading_rows(segments):
    assert segments.num_rows == 97 and len(segments.files) == 2
    assert segments.lengths.tolist() == [10, 3, 25, 40, 19]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_an_epoch_reads_no_row_twice_across_ranks(segments, world):
    plan, B = Plan(segments, seed=7, shuffle_window=8), 4
    for epoch in range(2):
        seen = []
        for rank in range(world):
            per_epoch = len(shard_rows(97, rank, world)) // B
            for p in range(epoch * per_epoch, (epoch + 1) * per_epoch):
                seen += _ids(segments, plan.rows(p, rank, world, B))
        assert len(seen) == len(set(seen)), f"world {world} epoch {epoch} repeats rows"
        assert len(seen) > 97 - world * B  # only each rank's last partial batch is dropped


def test_epochs_reorder_row_groups_and_shuffle_inside_windows(segments):
    plan = Plan(segments, seed=7, shuffle_window=8)
    first = _ids(segments, plan.rows(0, 0, 1, 24))
    again = _ids(segments, plan.rows(4, 0, 1, 24))  # epoch 1: 97 // 24 = 4 batches an epoch
    assert first != again and first != sorted(first)
    assert plan.rows(3, 1, 2, 5).row.tolist() == Plan(segments, 7, 8).rows(3, 1, 2, 5).row.tolist()
    other = Plan(segments, seed=8, shuffle_window=8).rows(0, 0, 1, 24)
    assert _ids(segments, other) != first


def test_a_rank_smaller_than_a_batch_wraps(segments):
    rows = Plan(segments, 0, 4096).rows(0, 0, 4, 40)  # 25 rows on rank 0
    ids = _ids(segments, rows)
    assert len(ids) == 40 and len(set(ids)) == 25


def test_split_partitions_rows_in_file_order(segments):
    head, tail = segments.split(50)
    assert head.num_rows == 50 and tail.num_rows == 47
    assert head.lengths.tolist() == [10, 3, 25, 12] and tail.start.tolist() == [12, 0]
    whole = segments.in_file_order(np.arange(97))
    assert _ids(segments, whole) == list(range(97))
    assert _ids(segments, tail.in_file_order(np.arange(47))) == list(range(50, 97))


def test_bad_inputs_are_named(tmp_path, segments):
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="x.parquet: not a Parquet file"):
        Segments.from_footers(str(tmp_path / "x.parquet"))
    with pytest.raises(ValueError, match="data.shuffle_window: 0"):
        Plan(segments, 0, 0)
    with pytest.raises(ValueError, match="position -1"):
        Plan(segments, 0, 8).rows(-1, 0, 1, 2)
