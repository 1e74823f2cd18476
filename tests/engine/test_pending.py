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
        match=r"pending values \['grad_norm', 'loss'\] differ from "
        r"the earlier steps' \['loss'\]",
    ):
        pending.add({}, {}, {"loss": torch.tensor(1.0), "grad_norm": torch.tensor(2.0)})
