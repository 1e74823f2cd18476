"""The per-worker training loop: one step as data flows in DESIGN.md.

batch -> method.before_step -> forward/backward (gradient all-reduce overlapped, grad_sync;
under scaling.strategy=fsdp the model is sharded and FSDP reduce-scatters instead: sharding)
-> optimizer step -> method.after_step -> a row of step statistics -> three sinks
(ray.train.report every k steps with a checkpoint at k-multiples, the node's Prometheus
exporter, rank 0's metrics.parquet). The engine reads no value on the host inside a step
(methods that need host values return them from after_step): the step's loss stays on the
device until a report, when one all-reduce and one copy complete the rows of every step since
the last (``engine.pending``).

``Runner`` takes its Ray entry points (report, get_checkpoint) as arguments, so the loop is
the same under TorchTrainer, Train's local mode, Tune and ranks spawned without Ray; where it
starts and where its checkpoints go belong to ``engine.checkpoint_manager``.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections.abc import Callable

import torch
from torch.utils import _pytree as pytree

from raytrain_eff import catalog, collectives
from raytrain_eff.config import ExperimentConfig
from raytrain_eff.engine import accounting, materialize, records, sharding, startup
from raytrain_eff.engine.checkpoint_manager import CheckpointManager, StartPoint
from raytrain_eff.engine.grad_sync import OverlappedGradientSync
from raytrain_eff.engine.pending import PendingSteps
from raytrain_eff.engine.totals import RankShare, RunTotals
from raytrain_eff.methods.base import GradientSync, MethodContext
from raytrain_eff.monitor import keys as K
from raytrain_eff.monitor.push import rss_bytes
from raytrain_eff.tasks.base import shard_rows, step_generator, take_rows
from raytrain_eff.typed import ConfigError


def build_task(cfg: ExperimentConfig):
    cls = catalog.load_object(catalog.lookup(catalog.TASKS, "task", cfg.task.name).impl)
    # the task maps (step, micro) to a micro-batch position with the run's grad_accum
    return cls(cfg.task.params, cfg.data, cfg.run.seed, grad_accum=cfg.train.grad_accum)


class Runner:
    def __init__(
        self,
        cfg: ExperimentConfig,
        *,
        rank: int,
        world: int,
        group,
        device,
        run_dir: str,
        run_name: str,
        trial: str = "",
        report: Callable = lambda metrics, checkpoint=None, **kw: None,
        get_checkpoint: Callable | None = None,
        summary_extra: dict | None = None,
        start: StartPoint | None = None,
        log: Callable[[dict], None] | None = None,
        data_shards: dict | None = None,
        stop_when: Callable[[dict], bool] | None = None,
    ):
        self.cfg, self.rank, self.world, self.group, self.device = cfg, rank, world, group, device
        # where rank 0's messages go ({"text", "step", "steps"}): the driver's console, or print
        self.log = log or (lambda event: print(event["text"], flush=True))
        self.run_dir, self.run_name, self.trial = run_dir, run_name, trial
        self.summary_extra = summary_extra or {}
        # get_checkpoint: Ray's, and Ray keeps the checkpoints; None: the engine keeps them
        # in run_dir (Train's local mode, ranks spawned without Ray)
        self.checkpoints = CheckpointManager(
            run_dir,
            rank=rank,
            world=world,
            group=group,
            keep=cfg.run.num_to_keep,
            background=cfg.run.checkpoint_async,
            report=report,
            get_checkpoint=get_checkpoint,
            warn=lambda text: self._log(f"warning: {text}"),
        )
        self.start = start or StartPoint()  # what the launcher asked for; setup resolves it
        # this worker's Ray Data shards (ray.train.get_dataset_shard) of task.ray_datasets
        self.data_shards = data_shards or {}
        # a stopping rule on the evaluations (say, a validation target): the run ends, with a
        # report and checkpoint, at the first evaluation for which it returns True
        self.stop_when = stop_when
        self.setup_s = 0.0  # seconds run() spent in setup(): the task, model, methods, optimizer
        self.last_eval: dict[str, float] = {}
        self._curv_draws = 0  # curvature batches drawn so far
        self._resumed: tuple[int, int] | None = None  # (step, world size) of the checkpoint
        self.t_start, self.samples_at_start = 0.0, 0  # when and where this attempt's loop began
        # over all ranks and kept steps, checkpointed: they survive failover (engine.totals)
        self.totals = RunTotals()
        # wall-clock marks of the start-up (engine.startup), the driver's among them
        self.marks: dict[str, float] = {}

    # -- set-up --------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        torch.set_num_threads(cfg.train.threads_per_worker)
        self.task = build_task(cfg)
        self.task.load()
        startup.mark(self.marks, "task_loaded")
        if self.data_shards:
            self.task.use_shards(self.data_shards)
        torch.manual_seed(cfg.run.seed)  # the same RNG state on every rank for the methods
        self.sharded = cfg.scaling.strategy == "fsdp"
        # sharded before prepare: methods see (and hook) the sharded parameters
        model, built = materialize.build(
            self.task,
            cfg.run.seed,
            self.device,
            mesh=(sharding.mesh(self.group, self.device) if self.sharded else None),
        )
        self.summary_extra = {**self.summary_extra, "model_build": built}
        self._log(f"model: {materialize.DESCRIBE[built]}")
        self.methods = catalog.create_methods(cfg.methods)
        self.ctx = MethodContext(
            rank=self.rank,
            world_size=self.world,
            group=self.group,
            device=self.device,
            total_steps=cfg.run.steps,
            loss_fn=self.task.loss,
            task=self.task,
            next_batch=self._curvature_batch,
            iterate_shard=lambda b: self.task.shard_iterator(self.rank, self.world, b),
            shard_size=self.task.shard_size(self.rank, self.world),
            grad_clip=cfg.train.grad_clip,
        )
        for method in self.methods:
            model = method.prepare(model, self.ctx)
        self.model = model
        # the task says whether its model's forward is collective (FSDP units, width shards)
        self.eval_on_every_rank = self.ctx.distributed and self.task.forward_needs_every_rank(model)
        made = [m.make_optimizer(model, self.ctx) for m in self.methods]
        optimizers = [o for o in made if o is not None]
        if len(optimizers) != 1:
            raise ConfigError(
                f"methods {list(cfg.methods)}: exactly one must provide the "
                f"optimizer (e.g. add adamw or sgd); {len(optimizers)} do"
            )
        self.optimizer = self.ctx.optimizer = optimizers[0]
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.owns_sync = any(m.owns_gradient_sync for m in self.methods)
        self.grad_sync: GradientSync | None = None  # fsdp reduce-scatters gradients itself
        if self.owns_sync:  # the method's own sync, if it overlaps one with backward
            owned = [m.gradient_sync(self.ctx) for m in self.methods if m.owns_gradient_sync]
            self.grad_sync = next((s for s in owned if s is not None), None)
        elif self.ctx.distributed and not self.sharded:
            self.grad_sync = OverlappedGradientSync(model, self.group, self.world)
        self.start_step, self.attempt = self._restore()
        # this rank's stream from here on, derived like every other (tasks.base.step_generator)
        torch.manual_seed(step_generator(cfg.run.seed, self.start_step, self.rank).initial_seed())
        self.table = records.MetricsTable(self.run_dir, self.start_step) if self.rank == 0 else None
        if self.table is not None:
            self.attempt = self.table.attempt
        if self._resumed is not None:
            step, saved_by = self._resumed
            self._log(
                f"attempt {self.attempt}: resumed from step {step} (saved by {saved_by} "
                f"workers, now {self.world})",
                resumed=True,
            )
        self.flops = accounting.DenseFlopCounter(self.task)
        # the step's loss; compiled on its first call (the first step), shapes fixed
        self.step_loss = (
            torch.compile(self.task.loss, dynamic=False) if cfg.train.compile else self.task.loss
        )
        self.rank_share = RankShare(self.totals, self.world, self.start_step)
        self.pusher = self._make_pusher()
        self.pending = PendingSteps(self.group, self.world, self.ctx.distributed)
        startup.mark(self.marks, "model_ready")

    def _curvature_batch(self, share: tuple[int, int] | None = None):
        """A fresh batch, never one the optimizer steps on: drawn from a separate stream.
        ``share=(part, parts)``: that part's rows of one batch every rank draws alike."""
        self._curv_draws += 1
        rows = self.cfg.data.batch_size
        if share is None:
            batch = self.task.train_batch(
                10_000_000 + self._curv_draws, 0, self.rank, self.world, rows
            )
        else:
            whole = self.task.train_batch(10_000_000 + self._curv_draws, 0, 0, 1, rows)
            batch = take_rows(whole, shard_rows(rows, *share))
        return self._on_device(batch)

    def _restore(self) -> tuple[int, int]:
        """(step, attempt) to start at, from the start point the manager resolves and loads:
        every rank reads its own slices of the shards, whatever layout wrote them."""
        self.start = self.checkpoints.choose(self.start)
        manifest = self.checkpoints.load(
            self.start,
            seed=self.cfg.run.seed,
            model=self.model,
            optimizer=self.optimizer,
            methods=self.methods,
            device=self.device,
        )
        if manifest is None:
            return 0, 0
        self._resumed = (int(manifest["step"]), int(manifest["world_size"]))
        self._curv_draws = int(manifest.get("curvature_draws", 0))  # absent before: restart
        self.totals = RunTotals.from_manifest(
            manifest,
            self._constant_world_samples(int(manifest["step"]), int(manifest["world_size"])),
        )
        return int(manifest["step"]), int(manifest.get("attempt", 0)) + 1

    @property
    def samples_seen(self) -> int:
        return int(self.totals.samples)

    def _constant_world_samples(self, steps: int, world: int) -> int:
        """Samples of ``steps`` steps at one world size: for checkpoints that predate the
        manifest's ``samples_seen``."""
        per_rank = self.cfg.data.batch_size * self.cfg.train.grad_accum
        return steps * per_rank * self._batches_per_step(world)

    def _batches_per_step(self, world: int) -> int:
        """Distinct batches a step trains on: one per rank, or one shared by all ranks."""
        return 1 if self.task.replicated_batches else world

    def _make_pusher(self):
        mon = self.cfg.monitor
        if not mon.enabled:
            return None
        from raytrain_eff.monitor.push import MetricsPusher

        pusher = MetricsPusher(
            run=self.run_name,
            trial=self.trial,
            rank=self.rank,
            host=mon.host,
            port=mon.port,
            grace_period_s=mon.grace_period_s,
            generation=self._generation(),
        )
        if self.rank == 0:
            # a failed attempt's series (its workers never finished) give way to this one's,
            # and discovery rewrites the file_sd (nodes may have left or joined)
            pusher.start_attempt()
            self._log(f"metrics: {pusher.url}")
        return pusher

    def _generation(self) -> str:
        """A token naming this attempt, the same on every rank (rank 0's, broadcast)."""
        token = torch.tensor([secrets.randbits(62)], dtype=torch.int64)  # not torch's RNG
        if self.ctx.distributed:
            collectives.broadcast(token, 0, self.group)
        return f"{int(token.item()):x}"

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> dict:
        t0 = time.perf_counter()
        self.setup()
        self.setup_s = time.perf_counter() - t0
        cfg = self.cfg
        steps = min(cfg.run.steps, cfg.run.stop_after or cfg.run.steps)
        dense = self.flops.count(self.model, self._batch(self.start_step, 0))
        self.task.data_wait_s()  # the set-up's draws (this FLOP count's batch) are no step's
        self.t_start, self.samples_at_start = time.perf_counter(), self.samples_seen
        row: dict = {}
        for step in range(self.start_step, steps):
            stats = self.train_step(step, dense)
            if step == self.start_step:
                startup.mark(self.marks, "first_step")
            if step + 1 == steps:
                startup.mark(self.marks, "last_step")
            row = stats.row()
            evaluating = self._due(step, cfg.run.eval_interval, steps)
            reporting = self._due(step, cfg.run.report_interval, steps)
            if evaluating or reporting:
                self._settle()  # eval and checkpoints read the parameters
            if (self.rank == 0 or self.eval_on_every_rank) and evaluating:
                self.last_eval = self.task.evaluate(
                    self.model, cfg.data.batch_size, cfg.run.eval_batches
                )
                row.update(self.last_eval)
            stop = evaluating and self._stops()
            # a step's samples and tokens may differ between ranks (an attention mask's sum):
            # the row and the totals hold their sum over ranks, resolved with the loss
            counts = {K.SAMPLES: row[K.SAMPLES], K.TOKENS: row[K.TOKENS]}
            self.pending.add(row, stats.rank_share, {K.LOSS: stats.loss}, counts)
            if reporting or evaluating:
                self._record(self.pending.resolve())
            if reporting or stop:
                self._report(step, row, last=stop or step + 1 == steps)
            if stop:
                break
        self._settle()
        self.checkpoints.finish()  # a save still in the background: on disk before exit
        if self.pusher is not None:
            self.pusher.close()
        return row

    def _stops(self) -> bool:
        """``stop_when`` on rank 0's evaluation, the same answer on every rank."""
        if self.stop_when is None:
            return False
        flag = torch.tensor([float(self.rank == 0 and self.stop_when(self.last_eval))])
        if self.ctx.distributed:
            collectives.broadcast(flag, 0, self.group)
        return bool(flag.item())

    def _settle(self) -> None:
        """Complete a parameter update a method's sync left in flight past its step."""
        if self.grad_sync is not None:
            self.grad_sync.settle()

    def _record(self, steps: list[tuple[dict, dict]]) -> None:
        """Complete rows of resolved steps, in step order, to the table and the pusher."""
        for row, rank_share in steps:
            self.totals.add_step(row)
            if self.table is not None:
                self.table.append(row)
            if self.pusher is not None:
                self.pusher.push({**row, **rank_share}, totals=self.rank_share.add_step(rank_share))

    def train_step(self, step: int, dense: float) -> records.StepStats:
        cfg, ctx = self.cfg, self.ctx
        ctx.step = step
        lr_f = accounting.lr_factor(
            step, cfg.run.steps, cfg.train.warmup_steps, cfg.train.decay, cfg.train.min_lr_ratio
        )
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * lr_f
        for method in self.methods:
            method.before_step(step, ctx)
        t0 = time.perf_counter()
        loss_sum, samples, tokens = self._forward_backward(step)
        # a method that owns the sync clips what it averaged itself (ctx.grad_clip)
        if cfg.train.grad_clip and not self.owns_sync:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
        self.optimizer.step()
        if len(self.methods) > 1:
            self._settle()  # another method's hooks may read or write the parameters
        method_stats: dict[str, float] = {}
        for method in self.methods:
            method_stats.update(method.after_step(step, ctx))
        step_time = time.perf_counter() - t0
        effective = dense * cfg.train.grad_accum
        for method in self.methods:
            effective = method.step_flops(effective, ctx)
        stats = self._step_stats(
            step,
            loss_sum.div_(cfg.train.grad_accum),
            samples,
            tokens,
            dense * cfg.train.grad_accum,
            effective,
            step_time,
            method_stats,
        )
        return stats

    def _forward_backward(self, step: int) -> tuple[torch.Tensor, int, int]:
        """Every micro-batch of the step; gradients averaged over ranks when it returns.
        Returns this rank's (sum of micro-batch losses, on the device in float64, samples,
        tokens): reading a loss on the host would wait for the device every micro-batch."""
        accum = self.cfg.train.grad_accum
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        samples, tokens = 0, 0
        for micro in range(accum):
            if self.grad_sync is not None:
                self.grad_sync.arm(micro + 1 == accum)
            batch = self._batch(step, micro)
            with self._autocast():
                loss = self.step_loss(self.model, batch)
            (loss / accum).backward()
            loss_sum += loss.detach().to(torch.float64)
            s, t = self.task.counts(batch)
            samples, tokens = samples + s, tokens + t
        if self.grad_sync is not None:
            self.grad_sync.finish()
        return loss_sum, samples, tokens

    def _step_stats(
        self,
        step: int,
        loss: torch.Tensor,
        samples: int,
        tokens: int,
        dense: float,
        effective: float,
        step_time: float,
        method_stats: dict,
    ) -> records.StepStats:
        """This rank's amounts -> the step's totals over ranks, plus memory."""
        batches = self._batches_per_step(self.world)
        rss = rss_bytes()
        return records.StepStats(
            step=step,
            wall_s=time.perf_counter() - self.t_start,
            loss=loss,
            lr=self.optimizer.param_groups[0]["lr"],
            world_size=self.world,
            samples=samples * batches,  # this rank's x batches: the sum once resolved (pending)
            tokens=tokens * batches,
            step_time_s=step_time,
            dense_flops=dense * self.world,
            effective_flops=effective * self.world,
            rss_bytes=rss,
            peak_memory_bytes=accounting.peak_memory_bytes(self.device, rss),
            memory={**self._state_bytes(), **accounting.gpu_memory(self.device)},
            method_stats={**method_stats, K.DATA_WAIT_SECONDS: self.task.data_wait_s()},
            rank_share={
                K.SAMPLES: samples * batches / self.world,
                K.TOKENS: tokens * batches / self.world,
                K.DENSE_FLOPS: dense,
                K.EFFECTIVE_FLOPS: effective,
            },
        )

    def _state_bytes(self) -> dict[str, int]:
        buffers = self.grad_sync.buffer_bytes() if self.grad_sync is not None else 0
        return accounting.state_bytes(self.model, self.optimizer, buffers)

    def _batch(self, step: int, micro: int):
        batch = self.task.train_batch(step, micro, self.rank, self.world, self.cfg.data.batch_size)
        return self._on_device(batch)

    def _on_device(self, batch):
        """Every tensor of a batch (training or curvature) on the model's device."""
        return pytree.tree_map(
            lambda t: t.to(self.device) if isinstance(t, torch.Tensor) else t, batch
        )

    def _autocast(self):
        if self.cfg.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @staticmethod
    def _due(step: int, interval: int, steps: int) -> bool:
        return step + 1 == steps or (interval > 0 and (step + 1) % interval == 0)

    # -- sinks ---------------------------------------------------------------------------------
    def _report(self, step: int, row: dict, last: bool) -> None:
        cfg = self.cfg
        final = step + 1 == cfg.run.steps
        # totals over the kept steps of every attempt, so Tune's costs survive failover
        metrics = {
            "step": step + 1,
            "loss": row["loss"],
            "samples_seen": self.samples_seen,
            "effective_flops_total": self.totals.effective_flops,
            "wall_s": self.totals.wall(row[K.WALL]),
            **self.last_eval,
        }
        with_ckpt = last or (step + 1) % cfg.run.checkpoint_interval == 0
        if self.table is not None:
            self.table.flush()
            self._progress(step, row)
        if final and self.rank == 0:
            records.write_summary(self.run_dir, self._summary(row))
        save = self._save_args(step, row) if with_ckpt else None
        self.checkpoints.report(metrics, save=save)

    def _save_args(self, step: int, row: dict) -> dict:
        """What a checkpoint at ``step`` holds: every rank writes its own shards, and the
        manager reports them once all are on disk."""
        return dict(
            step=step + 1,
            attempt=self.attempt,
            model=self.model,
            optimizer=self.optimizer,
            methods=self.methods,
            extra={
                "samples_seen": self.samples_seen,
                "totals": self.totals.to_manifest(row[K.WALL]),
                # every rank draws alike: the resumed refreshes see the same batches
                "curvature_draws": self._curv_draws,
            },
        )

    def _summary(self, row: dict) -> dict:
        return {
            "run": self.run_name,
            "trial": self.trial,
            "config": self.cfg.to_dict(),
            "data_checksum": self.task.checksum(),
            "world_size": self.world,
            "steps": self.cfg.run.steps,
            "attempts": self.attempt + 1,
            "final": {k: row.get(k) for k in ("loss", "peak_memory_bytes")} | self.last_eval,
            # the checkpointed totals: the same as the table's sums and the metrics'
            "totals": self.totals.summary(row[K.WALL]),
            **({startup.KEY: startup.account(self.marks)} if self.marks else {}),
            **self.summary_extra,
        }

    def _progress(self, step: int, row: dict) -> None:
        if not self.cfg.monitor.progress:
            return
        done = step + 1 - self.start_step
        elapsed = time.perf_counter() - self.t_start
        rate = (self.samples_seen - self.samples_at_start) / max(elapsed, 1e-9)
        eta = elapsed / max(done, 1) * (self.cfg.run.steps - step - 1)
        val = f" | val {self.last_eval['val_loss']:.3f}" if "val_loss" in self.last_eval else ""
        self._log(
            f"step {step + 1}/{self.cfg.run.steps} | loss {row['loss']:.3f}{val} | "
            f"{rate:,.0f} samples/s | ETA {_duration(eta)}",
            step=step + 1,
            steps=self.cfg.run.steps,
        )

    def _log(
        self, text: str, step: int | None = None, steps: int | None = None, resumed: bool = False
    ) -> None:
        if self.rank == 0:
            self.log(
                {
                    "text": f"[{self.run_name}] {text}",
                    "step": step,
                    "steps": steps,
                    "resumed": resumed,
                    "run": self.run_name,
                }
            )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"
