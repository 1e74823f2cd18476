"""How n things (rows, neurons, characters) split over the P ranks of a group: one rule for
tasks and methods alike."""

from __future__ import annotations


def shard_rows(num_rows: int, rank: int, world: int) -> range:
    """Contiguous, near-equal row ranges per rank; every row belongs to exactly one rank."""
    per, extra = divmod(num_rows, world)
    start = rank * per + min(rank, extra)
    return range(start, start + per + (1 if rank < extra else 0))
