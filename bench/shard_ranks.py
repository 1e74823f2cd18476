"""The rank side of bench/shards.py: the engine's ``Runner`` on one spawned gloo rank, with its
memory measured per phase and, for the capped demonstration, a memory cap on this process.

Peaks per phase: Linux's VmHWM (the process's peak RSS) is read and reset
(``/proc/self/clear_refs`` <- "5") at every phase edge, so each phase's peak is the highest RSS
while that phase ran, kernel-measured (no sampling gap), with no allocator hooks. Phases:
``setup`` (task, data, model construction, optimizer), ``step`` (forward, backward, update),
``refresh`` (a DHO2 curvature refresh, inside its step), ``save`` (a checkpoint: every rank's
DCP shards, then the copy into one directory as Ray's upload does), ``eval``.

The cap: a cgroup v1 memory controller child per rank (``memory.limit_in_bytes``, and
``memory.memsw.limit_in_bytes`` where swap is accounted), so the kernel kills the rank the
moment its memory passes the cap, as a container limit would. A process's pages are charged
to the cgroup it allocated them in (this kernel moves no charges), so the rank joins at once
and its limit is the cap less its RSS at that moment. Without a writable memory controller the
cap falls back to ``RLIMIT_AS`` (address space, a looser proxy), and the record says which.
"""

from __future__ import annotations

import ctypes
import gc
import os
import pathlib
import resource
import shutil
import time

MEMORY_CGROUP = pathlib.Path("/sys/fs/cgroup/memory")


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


class PhasePeaks:
    """Peak RSS per phase; ``switch`` closes the phase that ran and opens the next. ``marker``:
    a file that always names the current phase (what a rank killed by its cap was doing)."""

    def __init__(self, marker: pathlib.Path | None = None):
        self.peaks: dict[str, int] = {}
        self.phase = "start"
        self.marker = marker
        self._reset()

    def _reset(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError as err:
            raise RuntimeError(
                f"cannot reset the peak RSS (/proc/self/clear_refs: {err}); this benchmark "
                "measures per-phase peaks with it"
            ) from None

    def switch(self, phase: str) -> str:
        """Close the current phase (its peak kept as the max over its spells); returns it."""
        ended = self.phase
        self.peaks[ended] = max(self.peaks.get(ended, 0), status_bytes("VmHWM"))
        self._reset()
        self.phase = phase
        if self.marker is not None:
            self.marker.write_text(phase)
        return ended


def _memory_cgroup() -> pathlib.Path | None:
    """This process's memory cgroup directory (cgroup v1), if it exists and is writable."""
    for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            here = MEMORY_CGROUP / path.lstrip("/")
            return here if os.access(here, os.W_OK) else None
    return None


def cap_mechanism() -> str:
    """How ``cap_memory`` will hold a rank spawned from here (ranks inherit this cgroup)."""
    if _memory_cgroup() is not None:
        return "cgroup v1 memory"
    return "RLIMIT_AS (no writable cgroup v1 memory controller)"


def cap_memory(cap_bytes: int, name: str) -> dict:
    """Hold this process to ``cap_bytes`` of memory from now on; returns how."""
    rss = status_bytes("VmRSS")
    if cap_bytes <= rss:
        raise ValueError(f"cap {cap_bytes} bytes is below this rank's RSS now ({rss})")
    parent = _memory_cgroup()
    if parent is not None:
        group = parent / name
        group.mkdir(exist_ok=True)
        limit = cap_bytes - rss
        (group / "memory.limit_in_bytes").write_text(str(limit))
        if (group / "memory.memsw.limit_in_bytes").exists():  # swap counts too
            (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
        (group / "cgroup.procs").write_text(str(os.getpid()))
        return {"how": cap_mechanism(), "cgroup": str(group), "limit_bytes": limit, "rss": rss}
    vm = status_bytes("VmSize")
    resource.setrlimit(resource.RLIMIT_AS, (vm + cap_bytes - rss, resource.RLIM_INFINITY))
    return {
        "how": cap_mechanism(),
        "limit_bytes": vm + cap_bytes - rss,
        "rss": rss,
    }


def remove_cgroups(name_prefix: str) -> None:
    """Remove this benchmark's rank cgroups (empty once their ranks have exited)."""
    parent = _memory_cgroup()
    if parent is None:
        return
    for group in parent.glob(name_prefix + "*"):
        for _ in range(50):  # a killed rank leaves its cgroup a moment after it exits
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def instrument(runner, peaks: PhasePeaks, record: dict, eval_at_resume: bool) -> None:
    """Wrap the runner's phases (setup, step, DHO2 refresh, save, eval) in ``peaks`` and keep
    what the driver compares: rank 0's step losses, validation losses by step, step end times,
    the engine's own count of state bytes."""
    from raytrain_eff.monitor import keys

    setup, step, report = runner.setup, runner.train_step, runner._report

    def timed_setup():
        peaks.switch("setup")
        setup()
        evaluate = runner.task.evaluate

        def eval_phase(*args, **kwargs):
            peaks.switch("eval")
            out = evaluate(*args, **kwargs)
            record["val"][runner.ctx.step + 1] = float(out["val_loss"])
            peaks.switch("other")
            return out

        runner.task.evaluate = eval_phase
        refresh = getattr(runner.optimizer, "refresh", None)
        if refresh is not None:

            def refresh_phase():
                peaks.switch("refresh")
                refresh()
                peaks.switch("step")

            runner.optimizer.refresh = refresh_phase
        record["n_params"] = sum(p.numel() for p in runner.model.parameters())
        units = runner.task.shard_units(runner.model) or [runner.model]
        record["largest_unit"] = max(sum(p.numel() for p in u.parameters()) for u in units)
        if eval_at_resume and runner._resumed is not None:  # the state as loaded, resharded
            cfg = runner.cfg
            out = evaluate(runner.model, cfg.data.batch_size, cfg.run.eval_batches)
            record["val_at_resume"] = float(out["val_loss"])
        peaks.switch("other")

    def step_phase(*args):
        peaks.switch("step")
        stats = step(*args)
        peaks.switch("other")
        record["step_ends"].append(time.perf_counter())
        if runner.rank == 0:
            record["losses"].append(float(stats.loss))
        row = stats.row()
        record["counted_state_bytes"] = sum(
            row[k] for k in (keys.PARAM_BYTES, keys.GRAD_BYTES, keys.OPTIMIZER_BYTES)
        )
        return stats

    def save_phase(*args, **kwargs):
        peaks.switch("save")
        report(*args, **kwargs)
        peaks.switch("other")

    runner.setup, runner.train_step, runner._report = timed_setup, step_phase, save_phase


def copy_report(save_to: str | None):
    """A report that keeps each checkpoint the engine wrote (every rank's shards, complete
    once reported) as ``save_to``/step<N>; given to rank 0 only, so one copy is made."""

    def report(metrics, checkpoint=None, **kwargs):
        if checkpoint is not None and save_to:
            shutil.copytree(
                checkpoint.path,
                pathlib.Path(save_to) / f"step{metrics['step']}",
                dirs_exist_ok=True,
            )

    return report


def train(rank: int, world: int, runs: list[dict], cap: dict | None = None) -> list[dict]:
    """``runs`` one after another in this process (a warm-up, a tiny model, the measured one);
    each: ``overrides`` (gpt-dense), ``run_dir``, ``save_to``, ``resume_from``,
    ``eval_at_resume``. ``cap``: {"bytes", "name"}, set before anything is built."""
    from raytrain_eff import config
    from raytrain_eff.engine import local_ranks, malloc
    from raytrain_eff.engine.checkpoint_manager import StartPoint

    held = cap_memory(cap["bytes"], f"{cap['name']}_rank{rank}") if cap else None
    out = []
    for spec in runs:
        cfg = config.load(preset="gpt-dense", overrides=spec["overrides"])
        if cfg.scaling.strategy == "fsdp":
            malloc.return_freed_buffers()  # as engine.launch does for fsdp workers
        peaks = PhasePeaks(pathlib.Path(spec["run_dir"]) / f"phase_rank{rank}")
        record: dict = {"val": {}, "losses": [], "step_ends": [], "cap": held}
        runner = local_ranks.runner(
            cfg,
            rank,
            world,
            spec["run_dir"],
            report=copy_report(spec.get("save_to") if rank == 0 else None),  # one copy
            start=StartPoint.donor(spec["resume_from"]) if spec.get("resume_from") else None,
        )
        if not spec.get("save_to"):
            runner._report = lambda *a, **k: None  # throughput: training alone
        instrument(runner, peaks, record, spec.get("eval_at_resume", False))
        runner.run()
        peaks.switch("end")
        ends = record.pop("step_ends")
        record["steps_per_s"] = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 else None
        record["peaks"] = {k: v for k, v in peaks.peaks.items() if k != "start"}
        out.append(record)
        del runner  # its wrapped phases are reference cycles: collected, not left to the next run
        release()
    return out


def release() -> None:
    """Free what the finished run held and hand glibc's free heap back to the OS, so the next
    run in this process starts from the interpreter, not from the last run's leftovers."""
    gc.collect()
    libc = ctypes.CDLL(None)
    if hasattr(libc, "malloc_trim"):  # glibc only
        libc.malloc_trim(0)


def gloo_bandwidth(elements: int, repeats: int = 3) -> dict:
    """Measured bytes/s of gloo's all-gather and reduce-scatter of ``elements`` fp32 values in
    all (one FSDP unit) over the default group, best of ``repeats``."""
    import torch
    import torch.distributed as dist

    from raytrain_eff import collectives

    world = dist.get_world_size()
    shard = -(-elements // world)
    local, full = torch.randn(shard), torch.empty(shard * world)
    rates = {}
    for name, call in (
        ("all_gather", lambda: collectives.all_gather_into_tensor(full, local)),
        ("reduce_scatter", lambda: collectives.reduce_scatter_tensor(local, full)),
    ):
        call()  # connections and buffers warmed
        best = float("inf")
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - t0)
        rates[name] = 4 * shard * (world - 1) / best  # bytes each rank receives or sends
    return rates


def throughput(rank: int, world: int, spec: dict) -> dict:
    """One timed run (no checkpoints); fsdp ranks also measure gloo's bandwidth at the size of
    the model's largest unit, for the profile of what bounds fsdp's step."""
    record = train(rank, world, [spec])[0]
    if spec.get("bandwidth"):
        record["bandwidth"] = gloo_bandwidth(record["largest_unit"])
    return record
