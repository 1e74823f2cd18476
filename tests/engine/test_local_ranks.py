"""engine.local_ranks: the spawned gloo ranks that benchmarks and tests drive the product on."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from raytrain_eff.engine import local_ranks


def _sum_of_ranks(rank, world, offset):
    total = torch.tensor([float(rank + offset)])
    dist.all_reduce(total)
    return rank, world, total.item()


def _raises_on_rank_1(rank, world):
    if rank == 1:
        raise ValueError("rank one's bad value")
    return rank


def _dies_silently(rank, world):
    os._exit(9)  # as a memory cap's kill would: no traceback, no message


def _reads_env(rank, world):
    return os.environ.get("RAYTRAIN_EFF_LOCAL_RANKS_PROBE")


def test_results_come_back_in_rank_order_over_one_group():
    assert local_ranks.spawn(_sum_of_ranks, 3, 10) == [(r, 3, 33.0) for r in range(3)]


def test_a_rank_that_raises_is_named_with_its_traceback():
    with pytest.raises(local_ranks.RankFailed) as failure:
        local_ranks.spawn(_raises_on_rank_1, 2)
    assert failure.value.rank == 1
    assert "ValueError: rank one's bad value" in failure.value.error


def test_a_rank_killed_without_a_word_fails_the_run_with_its_exit_code():
    with pytest.raises(local_ranks.RankFailed, match="exited with code 9"):
        local_ranks.spawn(_dies_silently, 1)


def test_env_reaches_the_ranks_and_leaves_the_caller_as_it_was():
    assert local_ranks.spawn(_reads_env, 1, env={"RAYTRAIN_EFF_LOCAL_RANKS_PROBE": "x"}) == ["x"]
    assert "RAYTRAIN_EFF_LOCAL_RANKS_PROBE" not in os.environ
