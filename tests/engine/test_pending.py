"""Pending per-step values: resolved in step order, into the rows they were added with."""

import pytest
import torch

from raytrain_eff.engine.pending import PendingSteps


def test_rows_are_filled_in_place_in_step_order_and_forgotten():
    pending = PendingSteps(group=None, world=1, distributed=False)
    assert pending.resolve() == []
    rows = [{"step": s, "loss": None} for s in range(3)]
    for s, row in enumerate(rows):
        pending.add(row, {"samples": s}, {"loss": torch.tensor(s / 3, dtype=torch.float32)})
    done = pending.resolve()
    assert all(a is b for (a, _), b in zip(done, rows, strict=True))
    # float32 values widen exactly, as float(loss) did
    assert [r["loss"] for r in rows] == [float(torch.tensor(s / 3)) for s in range(3)]
    assert [share for _, share in done] == [{"samples": s} for s in range(3)]
    assert len(pending) == 0 and pending.resolve() == []


def test_every_step_must_carry_the_same_values():
    pending = PendingSteps(group=None, world=1, distributed=False)
    pending.add({}, {}, {"loss": torch.tensor(1.0)})
    with pytest.raises(
        ValueError,
        match=r"pending values \['grad_norm', 'loss'\] and counts \[\] differ from "
        r"the earlier steps' \['loss'\] and \[\]",
    ):
        pending.add({}, {}, {"loss": torch.tensor(1.0), "grad_norm": torch.tensor(2.0)})


def _resolve_rank_counts(rank, world, group):
    """Each rank's step: its own loss and its own tokens (x world: the runner's convention for
    one distinct batch per rank), as a Hugging Face batch's mask sums would differ."""
    pending = PendingSteps(group=group, world=world, distributed=True)
    rows = [{"step": s} for s in range(2)]
    for s, row in enumerate(rows):
        tokens = (10 * (rank + 1) + s) * world
        pending.add(
            row,
            {},
            {"loss": torch.tensor(float(rank), dtype=torch.float32)},
            {"samples": 4 * world, "tokens": tokens},
        )
    pending.resolve()
    return rows


def test_counts_that_differ_between_ranks_resolve_to_their_sum_on_every_rank(gloo):
    # ranks 0, 1 count 10+s and 20+s tokens: every rank's row holds 30+2s, not its own x 2
    for rows in gloo.run(2, _resolve_rank_counts):
        assert rows == [
            {"step": s, "loss": 0.5, "samples": 8.0, "tokens": 30.0 + 2 * s} for s in range(2)
        ]
