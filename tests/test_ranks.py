"""One rule splits rows, neurons and characters over ranks."""

from raytrain_eff.ranks import shard_rows


def test_shards_cover_every_row_once_and_differ_by_at_most_one():
    for n, world in [(10, 3), (7, 7), (1000, 4), (2, 3)]:
        parts = [shard_rows(n, rank, world) for rank in range(world)]
        assert [r for part in parts for r in part] == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
