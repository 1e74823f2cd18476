"""Low-rank recovery with deep linear networks (arXiv 2311.05061): the ``lowrank`` task.

The model is a DeepLinear network whose end-to-end matrix W = W_L⋯W_1 estimates a rank-r
target Φ. Training rows are the observations, sharded contiguously by rank:

    factorisation / completion: row (i, j, Φᵢⱼ) for each observed entry (i, j) ∈ Ω
                                f(W) = ½ Σ_Ω (Wᵢⱼ − Φᵢⱼ)² / p = (d²/2)·mean_Ω (Wᵢⱼ − Φᵢⱼ)²
    sensing:                    row (Aᵢ, yᵢ), f(W) = ½·mean_i (⟨Aᵢ, W⟩ − yᵢ)²

so a batch holding all of a rank's rows gives that shard's full-batch gradient, and the
engine's all-reduce mean over equal shards gives −∇f's exact value. Evaluation reports
½‖W − Φ‖²_F (``val_loss``) and the relative recovery error ‖W − Φ‖_F / ‖Φ‖_F.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import torch
from torch import nn

from raytrain_eff.methods.lowdim import DeepLinear, completion, original, sensing
from raytrain_eff.tasks.base import Task, epoch_batch_indices, shard_rows, tensor_checksum

EVAL_ROWS = 65536   # target entries per evaluation batch


class LowRankTask(Task):
    reads_dataset = False  # problems are generated from task.seed

    def load(self) -> None:
        p = self.params
        self.dtype = getattr(torch, p.dtype)
        gen = torch.Generator().manual_seed(self.seed)
        self.rows: tuple[torch.Tensor, ...]  # (A, y) measurements or (i, j, Φᵢⱼ) entries
        if p.problem == "sensing":
            problem = sensing(p.d, p.rank, p.measurements, gen)
            A, y = problem.A, problem.y
            assert A is not None and y is not None  # sensing() sets both
            self.rows = (A.view(-1, p.d, p.d).to(self.dtype), y.to(self.dtype))
        else:
            observed = p.observed if p.problem == "completion" else 1.0
            problem = completion(p.d, p.rank, observed, gen)
            assert problem.M is not None  # completion() sets Ω (all ones: factorisation)
            i, j = torch.nonzero(problem.M, as_tuple=True)
            self.rows = (i, j, problem.Phi[i, j].to(self.dtype))
        self.Phi = problem.Phi.to(self.dtype)
        self.num_train = len(self.rows[0])

    def build_model(self) -> DeepLinear:
        p = self.params
        gen = torch.Generator().manual_seed(self.seed + 1)
        return original(p.d, p.depth, p.init_scale, gen, p.width, self.dtype)

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        W = cast(DeepLinear, model).product()  # the DeepLinear of build_model
        if len(batch) == 3:                                  # entries (i, j, Φᵢⱼ)
            i, j, y = batch
            return 0.5 * W.shape[0] * W.shape[1] * ((W[i, j] - y) ** 2).mean()
        A, y = batch                                         # sensing (m, d, d), (m,)
        return 0.5 * ((A.flatten(1) @ W.reshape(-1) - y) ** 2).mean()

    def batch_at(self, position, rank, world, batch_size):
        rows = shard_rows(self.num_train, rank, world)
        if batch_size >= len(rows):                          # full batch: the paper's GD
            idx = torch.arange(rows.start, rows.stop)
        else:
            idx = epoch_batch_indices(self.num_train, self.seed, position=position, rank=rank,
                                      world=world, batch_size=batch_size)
        return tuple(t[idx] for t in self.rows)

    def shard_iterator(self, rank, world, batch_size) -> Iterator:
        rows = shard_rows(self.num_train, rank, world)
        for start in range(rows.start, rows.stop, batch_size):
            end = min(start + batch_size, rows.stop)
            yield tuple(t[start:end] for t in self.rows)

    def val_batches(self, batch_size, num_batches) -> Iterator:
        """Every entry of Φ: the entry loss over all d² of them is ½‖W − Φ‖²_F."""
        d = self.Phi.shape[0]
        flat = torch.arange(d * d)
        for start in range(0, d * d, EVAL_ROWS):
            k = flat[start:start + EVAL_ROWS]
            i, j = k // d, k % d
            yield i, j, self.Phi[i, j]

    @torch.no_grad()
    def evaluate(self, model, batch_size, num_batches) -> dict[str, float]:
        W = model.product()
        return {"val_loss": float(0.5 * ((W - self.Phi) ** 2).sum()),
                "recovery_error": float(torch.linalg.norm(W - self.Phi)
                                        / torch.linalg.norm(self.Phi))}

    def checksum(self) -> str:
        return tensor_checksum(self.Phi, *self.rows)
