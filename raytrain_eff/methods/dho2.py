"""DHO2: FOSI with the Lanczos segments and the update sharded across P workers.

Gu et al., "DHO2: Distributed Hybrid-Order Optimization", arXiv 2505.00982, built on FOSI
(arXiv 2302.08484; the update rule is in ``fosi.py``). The flat parameter vector is split
into P slices; rank p owns slice p of

* every Lanczos vector and eigenvector (curvature memory (m + k)·n/P per rank, not (m + k)·n),
* the gradient (a reduce-scatter / P replaces the data-parallel all-reduce),
* the base optimizer's and the Newton momentum's state (ZeRO-1 style).

Per step: ``a = Σ_p V_p g_p`` and ``[V m, V u] = Σ_p [V_p m_p, V_p u_p]`` are all-reduces of
k and 2k floats; rank p updates θ_p. Per Lanczos iteration: q is all-gathered once
(n floats), every rank applies the Hessian of its part of the curvature batch, and a
reduce-scatter leaves each rank its slice of the averaged H q; the dot products are two
all-reduces of about j floats (``lanczos._three_term_step``). No rank holds the full
eigenvector matrix. Every rank slices the same seeded full-length start vector
(``FOSIOptimizer._start``), so the sharded recursion is FOSI's on the whole curvature batch.

The curvature batch (``curvature_split``): ``global``, the paper's distributed calculation,
is one batch of B rows that every rank draws alike, each rank's HVPs covering its 1/P of the
rows, so a refresh's compute falls as 1/P (H q is weighted by each rank's row count, so
uneven splits still average over rows); ``per_rank`` gives every rank its own B rows.

Two layouts of the slices (``Slices``, ``ShardSlices``). Under ``scaling.strategy: ddp``
every rank holds the whole model; its slice is the p-th of P equal contiguous pieces of the
zero-padded vector, and updated slices are all-gathered back into the model; in the engine
the reduce-scatter runs in backward's hooks and the all-gather is left in flight past the
step (``slice_sync``). Under ``fsdp``
rank p's slice *is* its FSDP2 shard: each parameter's dim-0 chunk ``torch.chunk(p, P)[p]``,
so parameters and gradients are 1/P too, the update writes the local shards in place and
the parameter all-gather is FSDP's own at the next forward. Two HVP routes under fsdp
(``hvp``): ``exact`` (default) runs double backward on the full parameters gathered once per
refresh, through a parameter-less copy of the model on the meta device (``structure``), so
every rank holds the whole model during a refresh; ``central`` takes central differences of
FSDP's own forward/backward (``central_hvp``), so the refresh stays at 1/P per rank. Double
backward *through* FSDP would need every unit unsharded from the forward to the last HVP
(``reshard_after_forward=False`` and the gradient graph kept): the whole model again.

``update: replicated`` (ddp only, a named departure; ``Replicas``) holds every vector whole
on every rank: the Lanczos basis, eigenvectors, base state and Newton momentum. The step is
FOSI's on the engine's all-reduced gradient, which overlaps backward as DDP AdamW's does; a
Lanczos iteration is each rank's HVP on its 1/P of the curvature rows and one all-reduce of
H q, with the recursion's sums local. The paper's step needs four dependent collectives
(reduce-scatter, a, [V m, V u], all-gather) and its iteration four more (q's all-gather, H q's
reduce-scatter, two sums), whose latency dominates small models; this layout needs one each,
for (m + k + 3)·n floats per rank instead of (m + k + 3)·n / P and P times the vector
arithmetic. Its checkpoints are the sharded update's (each rank saves its slice), so either
update resumes from the other's.

Checkpoints: ``sharded_state_dict`` hands DCP each rank's slices (``flat_shards``), so no
rank gathers the eigenvectors to save or load them; ``state_dict`` still gives them whole.

MR-DHO2 (``MRDHO2Optimizer``) runs the refresh on a parameter snapshot a few Lanczos
iterations per model update and swaps the eigenpairs in at a step boundary; the eigenpairs'
lag behind their snapshot is at most ceil(m / lanczos_per_step) steps and is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor
from torch.nn.utils import vector_to_parameters
from torch.utils import _pytree as pytree

from raytrain_eff import collectives
from raytrain_eff.blocks import dtensor, flat_shards
from raytrain_eff.hparams.fosi import DHO2Config
from raytrain_eff.methods.base import MethodContext
from raytrain_eff.methods.central_hvp import CentralDifferenceHVP
from raytrain_eff.methods.fosi import FOSI, FOSIOptimizer, curvature_inputs, flatten
from raytrain_eff.methods.lanczos import HessianOperator, Hvp, lanczos_steps, ritz_pairs
from raytrain_eff.methods.slice_sync import BUCKET_ELEMENTS, SliceSync
from raytrain_eff.typed import ConfigError


class Slices:
    """Equal contiguous slices of a zero-padded n-vector (last dim), one per rank (ddp)."""

    def __init__(self, n: int, rank: int, world: int, group: Any):
        self.n, self.rank, self.world, self.group = n, rank, world, group
        self.size = -(-n // world)  # s = ceil(n / P)
        self.lo = rank * self.size
        # (start, length) of each rank's piece of the flat vector (the padding is in none)
        self.runs = [
            [(r * self.size, max(0, min(self.size, n - r * self.size)))] for r in range(world)
        ]

    def _pad(self, full: torch.Tensor) -> torch.Tensor:
        extra = self.size * self.world - full.shape[-1]
        return torch.nn.functional.pad(full, (0, extra)) if extra else full

    def local(self, full: torch.Tensor) -> torch.Tensor:
        return self._pad(full)[..., self.lo : self.lo + self.size].clone()

    def ranks_sum(self, x: torch.Tensor) -> torch.Tensor:
        """x summed over the ranks (a copy; x itself in one process)."""
        if self.world == 1:
            return x
        return collectives.all_reduce(x.clone(), self.group)

    def psum(self, x: torch.Tensor) -> torch.Tensor:
        """A sum over the slices of the vectors (dot products): over the ranks."""
        return self.ranks_sum(x)

    def reduced_elements(self) -> int:
        """Length of the fp64 vector an HVP's reduction takes (padded, full length)."""
        return self.size * self.world

    def checkpoint(self, local: torch.Tensor) -> torch.Tensor:
        """``local`` as the tensor DCP saves in this rank's pieces (``flat_shards``)."""
        return flat_shards.sharded(local, self.runs, self.rank, self.group)

    def load(self, loaded: torch.Tensor, into: torch.Tensor) -> None:
        """A loaded ``checkpoint`` tensor into this rank's slice ``into``, in place."""
        flat_shards.pieces_into(loaded, into)

    def reduce_scatter_mean(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's slice of the mean over ranks of a full-length vector."""
        if self.world == 1:
            return self.local(full)
        out = full.new_empty(self.size)
        collectives.reduce_scatter_tensor(out, self._pad(full), self.group)
        return out.div_(self.world)

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Full-length (unpadded) vector or rows from every rank's slice."""
        if self.world == 1 or local.numel() == 0:
            return (
                local.new_zeros(*local.shape[:-1], self.n)
                if local.numel() == 0
                else local[..., : self.n]
            )
        rows = local.reshape(-1, self.size).contiguous()  # (r, s)
        out = rows.new_empty(self.world * rows.shape[0], self.size)  # (P·r, s)
        collectives.all_gather_into_tensor(out, rows, self.group)
        full = out.view(self.world, -1, self.size).transpose(0, 1).reshape(rows.shape[0], -1)
        return full[:, : self.n].reshape(*local.shape[:-1], self.n)


class ShardSlices(Slices):
    """FSDP2's layout (fsdp): rank p's slice is the concatenation, in parameter order, of each
    parameter's dim-0 chunk ``torch.chunk(param, P)[p]`` (ceil(rows / P) rows; the last
    chunks may be shorter or empty). Each chunk is a contiguous run of the flat vector."""

    def __init__(self, params: Sequence[torch.Tensor], rank: int, world: int, group: Any):
        n = sum(p.numel() for p in params)
        super().__init__(n, rank, world, group)
        self.runs: list[list[tuple[int, int]]] = [[] for _ in range(world)]  # (start, length)
        offset = 0
        for p in params:
            rows = p.shape[0] if p.dim() else 1
            width, chunk = p.numel() // max(rows, 1), -(-rows // world)
            for r in range(world):
                lo, hi = min(r * chunk, rows), min((r + 1) * chunk, rows)
                self.runs[r].append((offset + lo * width, (hi - lo) * width))
            offset += p.numel()
        sizes = [sum(length for _, length in runs) for runs in self.runs]
        self.size, self.widest = sizes[rank], max(sizes)
        held = sum(dtensor.local(p).numel() for p in params)
        if held != self.size:
            raise RuntimeError(
                f"rank {rank} holds {held} parameter values, but FSDP2's dim-0 "
                f"chunking gives it {self.size}: the layout changed"
            )

    def _take(self, full: torch.Tensor, rank: int) -> torch.Tensor:
        pieces = [full[..., a : a + length] for a, length in self.runs[rank]]
        out = torch.cat(pieces, dim=-1)
        extra = self.widest - out.shape[-1]
        return torch.nn.functional.pad(out, (0, extra)) if extra else out

    def local(self, full: torch.Tensor) -> torch.Tensor:
        return self._take(full, self.rank)[..., : self.size].clone()

    def reduced_elements(self) -> int:
        return self.widest * self.world

    def reduce_scatter_mean(self, full: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return self.local(full)
        rows = torch.cat([self._take(full, r) for r in range(self.world)]).contiguous()
        out = full.new_empty(self.widest)
        collectives.reduce_scatter_tensor(out, rows, self.group)
        return out[: self.size].div_(self.world)

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        rows = local.reshape(local.shape[:-1].numel(), self.size)  # (r, s_p)
        padded = torch.nn.functional.pad(rows, (0, self.widest - self.size)).contiguous()
        every = padded.new_empty(self.world * rows.shape[0], self.widest)
        if self.world == 1:
            every.copy_(padded)
        else:
            collectives.all_gather_into_tensor(every, padded, self.group)
        every = every.view(self.world, rows.shape[0], self.widest)
        full = rows.new_empty(rows.shape[0], self.n)
        for r in range(self.world):
            at = 0
            for a, length in self.runs[r]:
                full[:, a : a + length] = every[r, :, at : at + length]
                at += length
        return full.reshape(*local.shape[:-1], self.n)


class Replicas(Slices):
    """``update: replicated`` (ddp): every rank holds whole vectors (the Lanczos basis,
    eigenvectors, base state); only the curvature batch's rows are split over the ranks. So
    the recursion's sums are local, an HVP's reduction is one all-reduce of H q, and the
    parameters need no gather. Checkpoints keep the equal slices' format (``Slices``): each
    rank saves its slice, so either update resumes from the other's."""

    def __init__(self, n: int, rank: int, world: int, group: Any):
        super().__init__(n, rank, world, group)
        self.saved = Slices(n, rank, world, group)  # the checkpoint's layout
        self.size, self.lo = n, 0
        self.runs = [[(0, n)] for _ in range(world)]

    def local(self, full: torch.Tensor) -> torch.Tensor:
        return full  # whole already (may alias ``full``)

    def psum(self, x: torch.Tensor) -> torch.Tensor:
        return x  # one slice: the whole vector

    def reduced_elements(self) -> int:
        return self.n

    def reduce_scatter_mean(self, full: torch.Tensor) -> torch.Tensor:
        """The mean over ranks, whole on every rank: one all-reduce, in place."""
        return collectives.all_reduce(full, self.group).div_(self.world)

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        return local

    def checkpoint(self, local: torch.Tensor) -> torch.Tensor:
        return self.saved.checkpoint(self.saved.local(local))

    def load(self, loaded: torch.Tensor, into: torch.Tensor) -> None:
        mine = into.new_zeros(*into.shape[:-1], self.saved.size)
        self.saved.load(loaded, mine)
        into.copy_(self.saved.gather(mine))


def is_sharded(model: nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in model.parameters())


class DHO2Optimizer(FOSIOptimizer):
    """FOSI's step on this rank's slice; only k-float sums and the parameter gather leave it.

    ``structure``: the model built on the meta device, needed when ``model`` is FSDP2-sharded
    (the HVP's functional call runs on it with the gathered full parameters)."""

    def __init__(
        self,
        model: nn.Module,
        config: Any,
        loss_fn: Callable,
        next_batch: Callable,
        group: Any = None,
        rank: int = 0,
        world_size: int = 1,
        structure: nn.Module | None = None,
        max_grad_norm: float | None = None,
    ):
        params = [p for p in model.parameters() if p.requires_grad]
        world = world_size if group is not None else 1
        self.sharded = is_sharded(model)
        self.central = config.hvp == "central"
        if self.central and not self.sharded:
            raise ValueError(
                "dho2 hvp='central' runs on FSDP2-sharded parameters "
                "(scaling.strategy=fsdp); here the model is whole: use 'exact'"
            )
        if self.sharded and not self.central and structure is None:
            raise ValueError(
                "dho2 hvp='exact' on FSDP2-sharded parameters needs `structure`, "
                "the model built on the meta device (DHO2.make_optimizer builds "
                "it from ctx.task)"
            )
        self.structure = structure
        # update=replicated: whole vectors on every rank, only the HVP's rows split (Replicas)
        self.replicated = config.update == "replicated" and not self.sharded and world > 1
        n = sum(p.numel() for p in params)
        self.slices = (
            ShardSlices(params, rank, world, group)
            if self.sharded
            else (Replicas if self.replicated else Slices)(n, rank, world, group)
        )
        # this rank's part of one global curvature batch; one process takes all of its own
        self.share = (rank, world) if config.curvature_split == "global" and world > 1 else None
        self.row_weight = 1.0  # this rank's rows × P / all rows, for the HVP average
        self.sync: SliceSync | None = None  # the engine's overlapped sync (ddp), if attached
        super().__init__(model, config, loss_fn, next_batch, max_grad_norm=max_grad_norm)

    def _local_slice(self, full: torch.Tensor) -> torch.Tensor:
        return self.slices.local(full)

    def _local_runs(self) -> tuple[list[tuple[int, int]], int]:
        return self.slices.runs[self.slices.rank], self.slices.size

    def _shards(self) -> list[torch.Tensor]:
        return [dtensor.local(p) for p in self.param_groups[0]["params"]]

    def _local_params(self) -> torch.Tensor:
        if self.sharded:
            return torch.cat([t.detach().reshape(-1) for t in self._shards()])
        if self.sync is not None:  # a view of the gathered parameters, once they alias it
            mine = self.sync.local_params()
            if mine is not None:
                return mine
        flat = flatten(self.param_groups[0]["params"])  # a fresh copy: one process's is whole
        return flat if self.slices.world == 1 else self.slices.local(flat)

    # -- the per-step update path: gradient to slices, slices back to parameters ---------------
    def overlap(self, bucket_elements: int = BUCKET_ELEMENTS) -> SliceSync:
        """Attach the overlapped sync (ddp): the gradient reduce-scatter runs in backward's
        hooks, the parameter all-gather past the step; the engine arms, finishes, settles."""
        if type(self.slices) is not Slices or self.slices.world == 1:
            raise ValueError("dho2's overlapped sync is for ddp slices on several ranks")
        if self.sync is None:
            self.sync = SliceSync(self.param_groups[0]["params"], self.slices, bucket_elements)
        return self.sync

    def _local_grad(self) -> torch.Tensor:
        if self.sharded:  # FSDP reduce-scattered and averaged them already
            params = self.param_groups[0]["params"]
            return torch.cat(
                [
                    (
                        dtensor.local(p.grad)
                        if p.grad is not None
                        else torch.zeros_like(dtensor.local(p))
                    ).reshape(-1)
                    for p in params
                ]
            )
        if self.sync is not None:  # reduce-scattered during backward
            self.sync.settle()
            synced = self.sync.take()
            if synced is not None:
                return synced
        # replicated: the engine all-reduced it; else average here, one slice per rank
        full = super()._local_grad()  # a fresh copy: one process's is its slice already
        if self.slices.world == 1 or self.replicated:
            return full
        return self.slices.reduce_scatter_mean(full)

    def _psum(self, x: torch.Tensor) -> torch.Tensor:
        return self.slices.psum(x)

    def _write_params(self, theta_local: torch.Tensor) -> None:
        if self.sync is not None:  # lands in the parameters at the sync's settle()
            self.sync.gather_params(theta_local)
            return
        if not self.sharded:
            vector_to_parameters(self.slices.gather(theta_local), self.param_groups[0]["params"])
            return
        at = 0
        for shard in self._shards():  # FSDP all-gathers them at the next forward
            shard.copy_(theta_local[at : at + shard.numel()].view_as(shard))
            at += shard.numel()

    # -- end of the per-step update path ------------------------------------------------------

    def _full_params(self) -> dict[str, torch.Tensor]:
        """θ for an exact HVP: the model's own parameters under ddp, gathered copies under
        fsdp (``hvp: exact``)."""
        named = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if not self.sharded:
            return {n: p.detach() for n, p in named.items()}
        return {
            n: p.full_tensor().detach() if isinstance(p, DTensor) else p.detach()
            for n, p in named.items()
        }

    def _operator(self, params: dict | None = None) -> Hvp:
        """HVP on this rank's part of a fresh curvature batch (all of it under per_rank)."""
        self.operators_built += 1
        batch = self.next_batch(self.share) if self.share else self.next_batch()
        self.row_weight = self._row_weight(batch)
        if self.central:  # FSDP's own passes around a copy of θ's slice now (a snapshot)
            return CentralDifferenceHVP(
                self.model,
                self.loss_fn,
                batch,
                self._local_params(),
                self._psum,
                seed=self.t,
                weight=self.row_weight,
            )
        model, buffers = self.model, None
        if self.structure is not None:  # sharded: gathered θ through the meta structure
            params = params or self._full_params()
            model, buffers = self.structure, self._fixed_tensors()
        return HessianOperator(
            model,
            self.loss_fn,
            batch,
            params=params,
            seed=self.t,
            mode=self.cfg.hvp_mode,
            buffers=buffers,
        )

    def _fixed_tensors(self) -> dict[str, torch.Tensor]:
        """Buffers and frozen parameters (full) for the functional call on ``structure``."""
        fixed = dict(self.model.named_buffers())
        for n, p in self.model.named_parameters():
            if not p.requires_grad:
                fixed[n] = p.full_tensor() if isinstance(p, DTensor) else p
        return fixed

    def _row_weight(self, batch: Any) -> float:
        """rows × P / all rows: the mean over ranks of weighted per-rank H q is the mean over
        every row of the global batch, even when the rows do not split evenly."""
        if self.share is None:
            return 1.0
        rows = float(len(pytree.tree_leaves(batch)[0]))
        count = torch.tensor([rows], dtype=torch.float64, device=self.decay_mask.device)
        total = float(self.slices.ranks_sum(count)[0])
        return rows * self.slices.world / total

    def _matvec(self, H: Hvp) -> Callable[[torch.Tensor], torch.Tensor]:
        if isinstance(H, CentralDifferenceHVP):  # slice in, slice out; FSDP averaged it
            return lambda q: self._hvp(H, q).to(torch.float64)

        def matvec(q: torch.Tensor) -> torch.Tensor:  # q: (s,) fp64, this rank's slice
            # gathered in the dtype H casts v to (the same values, half fp64's bytes)
            Hq = self._hvp(H, self.slices.gather(q.to(H.dtype))).to(torch.float64)
            if self.row_weight != 1.0:
                Hq.mul_(self.row_weight)
            return self.slices.reduce_scatter_mean(Hq)

        return matvec

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        return self.slices.gather(x)

    def _sharded(self, local: torch.Tensor) -> torch.Tensor:
        return self.slices.checkpoint(local)

    def _load_pieces(self, loaded: torch.Tensor, into: torch.Tensor) -> None:
        self.slices.load(loaded, into)

    def transient_bytes(self) -> int:
        """Per-HVP buffers beside the basis: gathered q and H q in the model's dtype, padded
        fp64 H q (all full length), and under fsdp the gathered parameters; central
        differences: θ₀, θ now, θ ± εv, two gradients and fp64 H q, all slices."""
        element = self.decay_mask.element_size()  # the parameters' (never read: no settle)
        slices = self.slices
        if self.central:
            return slices.size * (5 * element + 8)
        gathered = self.n * element if self.sharded else 0
        return slices.reduced_elements() * (element + 8) + self.n * element + gathered


class MRDHO2Optimizer(DHO2Optimizer):
    """DHO2 whose refresh runs on a snapshot, ``lanczos_per_step`` HVPs beside each update."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending = None  # the running Lanczos recursion, if any
        self.snapshot_t = 0  # step whose parameters the running refresh sees
        self.lag = 0  # steps the installed eigenpairs lagged their snapshot

    def _curvature_work(self) -> int:
        if self.pending is None and self._refresh_due():
            if self.central:  # it keeps a copy of this rank's slice of θ
                H = self._operator()
            else:
                snapshot = self._full_params()  # gathered copies under fsdp
                if not self.sharded:
                    snapshot = {n: p.clone() for n, p in snapshot.items()}
                H = self._operator(params=snapshot)
            m = min(self.cfg.order, self.n)
            self.pending = lanczos_steps(self._matvec(H), self._start(), m, self._psum)
            self.snapshot_t = self.t
        if self.pending is None:
            return 0
        for done in range(1, self.cfg.lanczos_per_step + 1):
            try:
                next(self.pending)
            except StopIteration as finished:
                c = self.cfg
                Q, alpha, beta, restarts = finished.value
                self._install(
                    ritz_pairs(Q, alpha, beta, restarts, c.k, c.num_smallest, c.ritz_cutoff)
                )
                self.pending, self.lag = None, self.t - self.snapshot_t
                return done
        return self.cfg.lanczos_per_step

    def _record(self, seconds: float, hvps: int) -> None:
        super()._record(seconds, hvps)
        self.last["curvature_lag_steps"] = float(self.lag)

    def state_dict(self) -> dict:
        # a refresh in flight is not saved: the resumed run restarts it at its next due step
        return {**super().state_dict(), "lag": self.lag}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.lag, self.pending = state["lag"], None


class DHO2(FOSI):
    """Registered as ``dho2``; averages gradients itself (reduce-scatter to slices), or lets
    the engine all-reduce them (``update: replicated``)."""

    owns_gradient_sync = True
    optimizer_class = DHO2Optimizer

    def __init__(self, config: DHO2Config):
        super().__init__(config)
        self.owns_gradient_sync = config.update == "sharded"

    @classmethod
    def preflight(cls, params, cfg) -> None:
        if params.hvp == "central" and cfg.scaling.strategy != "fsdp":
            raise ConfigError(
                f"hvp=central perturbs each rank's FSDP shard; it needs scaling.strategy=fsdp "
                f"(not {cfg.scaling.strategy}): use hvp=exact"
            )
        if params.update == "replicated" and cfg.scaling.strategy != "ddp":
            raise ConfigError(
                f"update=replicated keeps the whole parameters, eigenvectors and base state on "
                f"every rank; it needs scaling.strategy=ddp (not {cfg.scaling.strategy}): use "
                f"update=sharded"
            )
        workers = cfg.scaling.num_workers
        if params.curvature_split == "global" and cfg.data.batch_size < workers:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size} is the global curvature batch that "
                f"curvature_split=global splits over scaling.num_workers={workers} workers: "
                f"it needs at least one row per worker (or use curvature_split=per_rank)"
            )

    def make_optimizer(self, model: nn.Module, ctx: MethodContext):
        structure = None
        assert isinstance(self.config, DHO2Config)  # the registry pairs them
        if is_sharded(model) and self.config.hvp == "exact":
            if ctx.task is None:
                raise ValueError(
                    "dho2 hvp='exact' on FSDP2-sharded parameters needs ctx.task: "
                    "its build_model() gives the HVP's structure"
                )
            with torch.device("meta"):
                structure = ctx.task.build_model()
        self.optimizer = self.optimizer_class(
            model,
            self.config,
            *curvature_inputs(ctx),
            group=ctx.group,
            rank=ctx.rank,
            world_size=ctx.world_size,
            structure=structure,
            # replicated: the engine clips the gradient it averaged
            max_grad_norm=ctx.grad_clip if self.owns_gradient_sync else None,
        )
        return self.optimizer

    def gradient_sync(self, ctx: MethodContext) -> SliceSync | None:
        """Under ddp on several ranks: the reduce-scatter in backward (``slice_sync``); under
        fsdp FSDP reduce-scatters, in one process there is nothing to sync."""
        opt = self.optimizer
        assert isinstance(opt, DHO2Optimizer)  # make_optimizer built it
        return None if not ctx.distributed or opt.sharded else opt.overlap()


class MRDHO2(DHO2):
    """Registered as ``mr-dho2``: DHO2 with the refresh spread over model updates."""

    optimizer_class = MRDHO2Optimizer
