"""A session-wide pool of gloo ranks for multi-rank unit tests, without Ray.

Four processes join one gloo group at start-up and stay for the whole test session; a test
runs ``fn(rank, world, group, *args)`` on the first ``world`` ranks (``group`` is a
subgroup of exactly those ranks) and gets back the list of per-rank results. Spawning once
saves seconds per test on small machines. ``fn`` travels by value (cloudpickle), so test
modules need not be importable by the ranks.
"""

from __future__ import annotations

import sys
import traceback

import torch.multiprocessing as mp
from ray import cloudpickle
from timeouts import scaled

from raytrain_eff.engine import launch, local_ranks

MAX_WORLD = 4


def _serve(rank: int, port: int, inbox, outbox) -> None:
    import torch.distributed as dist

    local_ranks.join_group(rank, MAX_WORLD, port)
    # every rank must create every subgroup, in the same order
    groups = {w: dist.new_group(list(range(w))) for w in range(1, MAX_WORLD + 1)}
    while True:
        job = inbox.get()
        if job is None:
            break
        payload, world = job
        if rank >= world:
            continue
        try:
            fn, args = cloudpickle.loads(payload)
            outbox.put((rank, True, fn(rank, world, groups[world], *args)))
        except Exception:  # the test needs the traceback, not a hung pool
            outbox.put((rank, False, traceback.format_exc()))
    dist.destroy_process_group()


class GlooPool:
    def __init__(self):
        ctx = mp.get_context("spawn")
        port = launch.free_port()
        self.inboxes = [ctx.Queue() for _ in range(MAX_WORLD)]
        self.outbox = ctx.Queue()
        self.procs = [
            ctx.Process(target=_serve, args=(r, port, self.inboxes[r], self.outbox), daemon=True)
            for r in range(MAX_WORLD)
        ]
        for p in self.procs:
            p.start()

    def run(self, world: int, fn, *args, timeout: float = 120.0) -> list:
        """Results of ``fn`` on ranks 0..world-1, in rank order; raises on any rank's error."""
        assert 1 <= world <= MAX_WORLD, f"world must be in 1..{MAX_WORLD}"
        module = sys.modules.get(fn.__module__)
        if (
            module is not None
            and fn.__module__ not in ("__main__",)
            and not fn.__module__.startswith(("raytrain_eff", "torch"))
        ):
            cloudpickle.register_pickle_by_value(module)  # the test module, with its helpers
        payload = cloudpickle.dumps((fn, args))
        for inbox in self.inboxes:
            inbox.put((payload, world))
        results = {}
        for _ in range(world):
            rank, ok, value = self.outbox.get(timeout=scaled(timeout))
            if not ok:
                raise RuntimeError(f"rank {rank} failed:\n{value}")
            results[rank] = value
        return [results[r] for r in range(world)]

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
