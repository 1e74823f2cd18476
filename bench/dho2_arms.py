"""What bench/dho2.py needs beyond raytrain_eff: two baseline arms and two measuring tools.

* ``FOSIBroadcast``: FOSI on P data-parallel ranks the single-device way, the design DHO2
  replaces: rank 0 computes every curvature refresh on the whole global curvature batch and
  broadcasts the eigenpairs (λ, V); the other ranks wait for them.
* ``SOAP``: ``pytorch_optimizer.SOAP`` (a maintained second-order optimizer: Adam in the
  eigenbasis of Shampoo's preconditioner) through the method seam, at its library defaults
  except the learning rate.
* ``LiveTensorBytes``: per-process peak bytes of every live tensor storage (parameters,
  gradients, optimizer and curvature state, activations, HVP transients), FSDP2-aware.
* ``CollectiveClock``: wall seconds spent inside ``torch.distributed`` collectives.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import weakref

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._tools.common_utils import get_untyped_storages
from torch.distributed.tensor import DTensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

from raytrain_eff.hparams.fosi import FOSIConfig
from raytrain_eff.methods.base import Method, MethodContext
from raytrain_eff.methods.fosi import FOSI, FOSIOptimizer, curvature_inputs
from raytrain_eff.methods.lanczos import RitzPairs


# -- FOSI with its curvature on one rank, broadcast -----------------------------------------------
class FOSIBroadcastOptimizer(FOSIOptimizer):
    """FOSI's step on every rank; the refresh on rank 0 only, its (λ, V) broadcast.

    Gradients arrive averaged (the engine's overlapped all-reduce, as for DDP AdamW), so every
    rank holds the same parameters and takes the same step. At a refresh rank 0 runs FOSI's
    Lanczos on the whole global curvature batch (``next_batch`` gives all B rows) while the
    other ranks wait in the broadcast: that idle time is what DHO2's split removes.
    """

    def __init__(
        self,
        model: nn.Module,
        config: FOSIConfig,
        loss_fn,
        next_batch,
        group,
        rank: int,
        world_size: int,
    ):
        self.group, self.rank, self.world = group, rank, world_size
        super().__init__(model, config, loss_fn, next_batch)

    def refresh(self) -> None:
        header = torch.zeros(4, dtype=torch.float64)  # (pairs, top pairs, HVPs, restarts)
        if self.rank == 0:
            super().refresh()  # FOSI's own, installs (λ, V) here
            eig = self.eig
            assert eig is not None
            header = torch.tensor(
                [len(eig.eigvals), eig.num_top, eig.iterations, eig.restarts], dtype=torch.float64
            )
        dist.broadcast(header, 0, group=self.group)
        r, num_top, iterations, restarts = (int(x) for x in header)
        spectrum = (
            torch.cat([self.eig.eigvals, self.eig.residuals])
            if self.rank == 0
            else torch.empty(2 * r, dtype=torch.float64)
        )
        V = self.V if self.rank == 0 else self.V.new_empty(r, self.n)  # installed dtype
        dist.broadcast(spectrum, 0, group=self.group)
        dist.broadcast(V, 0, group=self.group)
        if self.rank != 0:  # no basis held here: 0 basis bytes
            eigvals, residuals = spectrum.split(r)
            self._install(
                RitzPairs(eigvals, V.to(torch.float64), residuals, iterations, restarts, 0, num_top)
            )


class FOSIBroadcast(FOSI):
    """``fosi-bcast``: FOSI data-parallel over P ranks, curvature on rank 0 and broadcast."""

    def make_optimizer(self, model: nn.Module, ctx: MethodContext):
        loss_fn, next_batch = curvature_inputs(ctx)
        whole = functools.partial(next_batch, (0, 1))  # all B rows of the global batch
        self.optimizer = FOSIBroadcastOptimizer(
            model, self.config, loss_fn, whole, ctx.group, ctx.rank, ctx.world_size
        )
        return self.optimizer


# -- SOAP from pytorch-optimizer ------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True)
class SOAPConfig:
    lr: float = 3e-3  # pytorch_optimizer.SOAP's default; the only field tuned


class SOAP(Method[SOAPConfig]):
    """``pytorch_optimizer.SOAP`` (Vyas et al., arXiv 2409.11321) at the library's defaults
    (betas (0.95, 0.95), weight decay 0.01, preconditioner refreshed every 10 steps, ...)
    except ``lr``. Under DDP every rank holds and updates the full preconditioners."""

    def make_optimizer(self, model: nn.Module, ctx: MethodContext):
        from pytorch_optimizer import SOAP as LibrarySOAP

        return LibrarySOAP(model.parameters(), lr=self.config.lr)


# -- measuring tools ------------------------------------------------------------------------------
class LiveTensorBytes(TorchDispatchMode):
    """Bytes of every tensor storage created while active, now and at peak (this process).

    Everything a training step allocates goes through the dispatcher, so building the model
    and optimizer inside the mode counts parameters, gradients, optimizer and curvature state,
    activations and HVP transients alike. A storage is counted once however many views share
    it and leaves the count when Python frees it; ``UntypedStorage.resize_`` (how FSDP2 frees
    and re-materialises unsharded parameters) is patched while active, since the dispatcher
    does not see it. DTensor ops are let through to their local ops, which are counted.
    Storages made before entering (the data set) and allocations inside C++ libraries (gloo's
    buffers) are not counted. torch's ``MemTracker`` does the same accounting, but refuses a
    module whose forward runs more than once per window (every step, every HVP).
    """

    def __init__(self):
        super().__init__()
        self.now = self.peak = 0
        self._sizes = WeakIdKeyDictionary()  # storage -> [bytes counted]
        self._refs: list[weakref.ref] = []
        self._resize = torch.UntypedStorage.resize_

    def __enter__(self):
        tracker, original = self, self._resize

        @functools.wraps(original)
        def resize_(storage, size):
            out = original(storage, size)
            box = tracker._sizes.get(storage)
            if box is not None:
                tracker._add(storage.nbytes() - box[0])
                box[0] = storage.nbytes()
            return out

        torch.UntypedStorage.resize_ = resize_  # type: ignore[method-assign]
        return super().__enter__()

    def __exit__(self, *args):
        torch.UntypedStorage.resize_ = self._resize  # type: ignore[method-assign]
        return super().__exit__(*args)

    def _add(self, nbytes: int) -> None:
        self.now += nbytes
        self.peak = max(self.peak, self.now)

    def _freed(self, box: list, _ref) -> None:
        self.now -= box[0]

    def track(self, t: torch.Tensor) -> None:
        for storage in get_untyped_storages(t):
            if storage not in self._sizes:
                box = [storage.nbytes()]
                self._sizes[storage] = box
                self._refs.append(weakref.ref(storage, functools.partial(self._freed, box)))
                self._add(box[0])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(t is DTensor for t in types):
            return NotImplemented  # DTensor desugars into counted local ops
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


COLLECTIVES = (
    "all_reduce",
    "reduce_scatter_tensor",
    "all_gather_into_tensor",
    "broadcast",
    "all_gather",
    "reduce_scatter",
)


class CollectiveClock:
    """Wall seconds and calls inside ``torch.distributed`` collectives while active (a
    synchronous call's time includes waiting for the slower peer; an async one's only its
    launch). Patches the module attributes, so code calling ``dist.<collective>`` is seen."""

    def __init__(self):
        self.seconds, self.calls = 0.0, 0
        self._saved: dict = {}

    def __enter__(self):
        for name in COLLECTIVES:
            original = self._saved[name] = getattr(dist, name)
            setattr(dist, name, self._timed(original))
        return self

    def __exit__(self, *args):
        for name, original in self._saved.items():
            setattr(dist, name, original)

    def _timed(self, original):
        @functools.wraps(original)
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        return call
