"""Ranks on this machine without Ray: spawned processes joined in one gloo group.

The benchmarks and the tests drive the product's own ``Runner``, tasks and methods on these
ranks: Ray's worker start-up would dominate a benchmark's timings, and a test of a collective
needs no cluster. One helper, so that every caller starts, joins and fails the same way.

    def work(rank, world, steps):
        runner = local_ranks.runner(config.load(preset="gpt-dense"), rank, world, run_dir)
        runner.run()
        return runner.last_eval

    evals = local_ranks.spawn(work, 2, 10)  # rank order
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ray import cloudpickle

from raytrain_eff.engine.launch import free_port

GRACE_S = 10.0  # how long the other ranks get to finish once one rank has failed


class RankFailed(RuntimeError):
    """A rank raised; ``error`` is its traceback (the first failing rank's)."""

    def __init__(self, rank: int, error: str):
        super().__init__(f"rank {rank} failed:\n{error}")
        self.rank, self.error = rank, error


def join_group(rank: int, world: int, port: int, threads: int = 1) -> None:
    """This process as ``rank`` of a ``world``-rank gloo group on 127.0.0.1:``port``."""
    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _rank_main(rank: int, world: int, port: int, payload: bytes, outbox) -> None:
    try:
        fn, args = cloudpickle.loads(payload)
        join_group(rank, world, port)
        message = (rank, True, fn(rank, world, *args))
    except BaseException:  # noqa: BLE001 - the caller needs the traceback, not a hung rank
        message = (rank, False, traceback.format_exc())
    outbox.put(message)
    outbox.close()
    outbox.join_thread()  # delivered before gloo's teardown can take the process down
    if message[1] and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` in os.environ while the ranks start (they inherit it), then restored."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def spawn(
    fn: Callable[..., Any],
    world: int,
    *args: Any,
    timeout: float = 900.0,
    env: dict[str, str] | None = None,
) -> list:
    """``fn(rank, world, *args)`` on ``world`` fresh gloo ranks; their results in rank order.

    ``fn`` and ``args`` travel by value (cloudpickle), so a script's or a test's own functions
    work. ``env`` is set for the ranks' whole life (allocator variables must be there before
    the process starts). Raises :class:`RankFailed` for the first rank that raised; the others
    get ``GRACE_S`` to finish (they may wait in a collective the failed rank never joins) and
    are then killed.
    """
    if world < 1:
        raise ValueError(f"world={world}: expected at least one rank")
    ctx = mp.get_context("spawn")
    outbox = ctx.Queue()
    payload = _by_value(fn, args)
    port = free_port()
    procs = [
        ctx.Process(target=_rank_main, args=(r, world, port, payload, outbox), daemon=True)
        for r in range(world)
    ]
    with _environment(env or {}):
        for p in procs:
            p.start()
    results: dict[int, Any] = {}
    failed: RankFailed | None = None
    try:
        while len(results) < world and failed is None:
            failed = _collect(outbox, procs, results, time.monotonic() + timeout)
    finally:
        for p in procs:
            p.join(timeout=GRACE_S if failed else timeout)
            if p.is_alive():
                p.kill()
                p.join()
    if failed:
        raise failed
    return [results[r] for r in range(world)]


def _by_value(fn: Callable, args: tuple) -> bytes:
    """``fn`` and ``args`` pickled; a test's or script's module travels whole (the ranks may
    not be able to import it), the package's own modules by name."""
    module = sys.modules.get(fn.__module__)
    ours = fn.__module__ == "__main__" or fn.__module__.startswith(("raytrain_eff.", "torch."))
    if module is not None and not ours:
        cloudpickle.register_pickle_by_value(module)
    return cloudpickle.dumps((fn, args))


def _collect(outbox, procs, results: dict, deadline: float) -> RankFailed | None:
    """The next rank's message into ``results``; the failure if it raised or died silently."""
    silent: list[int] = []  # ranks seen dead with no message, given one more poll to arrive
    while time.monotonic() < deadline:
        try:
            rank, ok, value = outbox.get(timeout=0.5)
        except queue.Empty:
            if silent:  # killed (say, by a memory cap) before it could say anything
                return RankFailed(silent[0], f"exited with code {procs[silent[0]].exitcode}")
            silent = [
                r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in results
            ]
            continue
        if not ok:
            return RankFailed(rank, value)
        results[rank] = value
        return None
    raise TimeoutError(f"{len(procs) - len(results)} rank(s) sent no result in time")


def runner(cfg, rank: int, world: int, run_dir: str, run_name: str = "local", **kwargs):
    """The product's ``Runner`` for this rank on the default group (CPU, gloo)."""
    from raytrain_eff.engine.runner import Runner

    return Runner(
        cfg,
        rank=rank,
        world=world,
        group=dist.group.WORLD if world > 1 else None,
        device=torch.device("cpu"),
        run_dir=run_dir,
        run_name=run_name,
        **kwargs,
    )
