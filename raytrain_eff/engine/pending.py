"""Per-step values that stay on the device until a report.

Reading a loss on the host (``float(loss)``) waits for the device to finish the step, and an
all-reduce per step is one more round trip: both stall a GPU pipeline every step. So a step's
device-side values (this rank's loss) wait here, and at a report (``run.report_interval``, an
evaluation, the last step) ONE all-reduce of all of them, stacked, gives each its mean over
ranks and ONE copy brings them to the host; the rows of those steps are then complete and go
to the sinks in step order (``metrics.parquet``, the pusher; a burst at report time).
Host-side amounts that differ between ranks (a step's samples and tokens: a Hugging Face
batch's tokens are its attention mask's sum) ride in the same all-reduce, copied to the device
once per report, so rank 0's row holds the step's amounts over all ranks, not its own.

The values are summed in float64 and divided by the world size, so a row holds the same number
whether its step was resolved alone or with others.
"""

from __future__ import annotations

from typing import Any

import torch

from raytrain_eff import collectives


class PendingSteps:
    def __init__(self, group: Any, world: int, distributed: bool) -> None:
        self.group, self.world, self.distributed = group, world, distributed
        self._steps: list[tuple[dict, dict, dict[str, torch.Tensor], dict[str, float]]] = []

    def __len__(self) -> int:
        return len(self._steps)

    def add(
        self,
        row: dict,
        rank_share: dict,
        values: dict[str, torch.Tensor],
        counts: dict[str, float] | None = None,
    ) -> None:
        """A step's ``row`` (kept by reference) whose ``values`` (row keys -> this rank's 0-d
        tensor on the device) and ``counts`` (row keys -> this rank's host number) become
        their means over ranks at ``resolve``."""
        counts = counts or {}
        if self._steps and (values.keys(), counts.keys()) != (
            self._steps[0][2].keys(),
            self._steps[0][3].keys(),
        ):
            raise ValueError(
                f"pending values {sorted(values)} and counts {sorted(counts)} differ from the "
                f"earlier steps' {sorted(self._steps[0][2])} and {sorted(self._steps[0][3])}"
            )
        self._steps.append((row, rank_share, values, counts))

    def resolve(self) -> list[tuple[dict, dict]]:
        """The pending steps' (row, rank_share), in step order, with their values filled in
        as host floats; a collective when distributed (every rank calls it at the same
        steps). Forgets them."""
        if not self._steps:
            return []
        names, counted = list(self._steps[0][2]), list(self._steps[0][3])
        stacked = torch.stack(
            [
                torch.stack([v[n].detach().to(torch.float64) for n in names])
                for _, _, v, _ in self._steps
            ]
        )  # (steps, values)
        if counted:  # one copy to the device for all the steps' counts
            host = torch.tensor(
                [[c[n] for n in counted] for *_, c in self._steps], dtype=torch.float64
            )
            stacked = torch.cat([stacked, host.to(stacked.device)], dim=1)
        if self.distributed:
            collectives.all_reduce(stacked, self.group)
            stacked = stacked / self.world
        done = []
        for (row, share, *_), host in zip(self._steps, stacked.tolist(), strict=True):
            row.update(zip(names + counted, host, strict=True))
            done.append((row, share))
        self._steps = []
        return done
