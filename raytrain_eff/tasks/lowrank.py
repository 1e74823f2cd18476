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

import dataclasses
from collections.abc import Callable, Iterator
from typing import cast

import torch
from torch import nn

from raytrain_eff.blocks.deep_linear import DeepLinear, original, orthogonal
from raytrain_eff.tasks.base import Task, epoch_batch_indices, shard_rows, tensor_checksum

EVAL_ROWS = 65536  # target entries per evaluation batch
Loss = Callable[[torch.Tensor], torch.Tensor]


# -- the paper's low-rank recovery problems --------------------------------------------------------
@dataclasses.dataclass
class LowRankProblem:
    """f(W) for an end-to-end matrix W, its target Φ and the surrogate Φ̂ = −∇f(0)."""

    kind: str
    Phi: torch.Tensor  # (d, d) rank-r target
    loss: Loss  # f(W), a scalar
    surrogate: torch.Tensor  # (d, d) Φ̂
    M: torch.Tensor | None = None  # (d, d) 0/1 observation mask Ω (factorisation: all ones)
    A: torch.Tensor | None = None  # (m, d²) vec(Aᵢ) as rows (sensing)
    y: torch.Tensor | None = None  # (m,) yᵢ = ⟨Aᵢ, Φ⟩ (sensing)

    def __post_init__(self):
        self.Phi_norm = torch.linalg.norm(self.Phi)  # ‖Φ‖_F, once: error() runs every step

    def error(self, W: torch.Tensor) -> float:
        """Relative recovery error ‖W − Φ‖_F / ‖Φ‖_F."""
        return float(torch.linalg.norm(W - self.Phi) / self.Phi_norm)


def low_rank_target(d: int, r: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Φ = U diag(s) Vᵀ with random orthonormal U, V and s evenly spread over [0.5, 1]:
    ‖Φ‖₂ = 1 makes step sizes independent of d; distinct s give the incremental learning
    of the paper's targets."""
    U, V = orthogonal(d, r, gen, dtype), orthogonal(d, r, gen, dtype)
    s = torch.linspace(1.0, 0.5, r, dtype=dtype) if r > 1 else torch.ones(1, dtype=dtype)
    return (U * s) @ V.T


def observation_mask(d: int, p: float, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Exactly round(p·d²) entries, uniformly without replacement."""
    count = max(1, round(p * d * d))
    mask = torch.zeros(d * d, dtype=dtype)
    mask[torch.randperm(d * d, generator=gen)[:count]] = 1
    return mask.view(d, d)


def surrogate(f: Loss, shape: tuple[int, ...], dtype=torch.float64) -> torch.Tensor:
    """Φ̂ = −∇f(0): the spectral initialisation's target for any end-to-end loss."""
    W = torch.zeros(shape, dtype=dtype, requires_grad=True)
    (g,) = torch.autograd.grad(f(W), W)
    return -g


def factorization(d: int, r: int, gen: torch.Generator) -> LowRankProblem:
    """f(W) = ½‖W − Φ‖²_F."""
    return completion(d, r, 1.0, gen, kind="factorization")


def completion(
    d: int, r: int, p: float, gen: torch.Generator, kind: str = "completion"
) -> LowRankProblem:
    """f(W) = ½‖P_Ω(W − Φ)‖²_F / p, p = |Ω|/d²: an unbiased estimate of ½‖W − Φ‖²_F."""
    Phi = low_rank_target(d, r, gen)
    M = observation_mask(d, p, gen) if p < 1 else torch.ones_like(Phi)
    p_hat = float(M.sum()) / (d * d)

    def f(W):
        return 0.5 * ((M * (W - Phi)) ** 2).sum() / p_hat

    return LowRankProblem(kind, Phi, f, surrogate(f, Phi.shape), M=M)


def sensing(d: int, r: int, m: int, gen: torch.Generator) -> LowRankProblem:
    """f(W) = (1/2m) Σᵢ (⟨Aᵢ, W⟩ − yᵢ)², Aᵢ with iid N(0, 1) entries, yᵢ = ⟨Aᵢ, Φ⟩."""
    Phi = low_rank_target(d, r, gen)
    A = torch.randn(m, d * d, generator=gen, dtype=Phi.dtype)  # (m, d²): vec(Aᵢ) as rows
    y = A @ Phi.reshape(-1)

    def f(W):
        return 0.5 * ((A @ W.reshape(-1) - y) ** 2).mean()

    return LowRankProblem("sensing", Phi, f, surrogate(f, Phi.shape), A=A, y=y)


# -- the task ---------------------------------------------------------------------------------


class LowRankTask(Task):
    reads_dataset = False  # problems are generated from task.seed
    builds_on_meta = False  # the init is drawn from its own generator (seed + 1)

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
        if len(batch) == 3:  # entries (i, j, Φᵢⱼ)
            i, j, y = batch
            return 0.5 * W.shape[0] * W.shape[1] * ((W[i, j] - y) ** 2).mean()
        A, y = batch  # sensing (m, d, d), (m,)
        return 0.5 * ((A.flatten(1) @ W.reshape(-1) - y) ** 2).mean()

    def batch_at(self, position, rank, world, batch_size):
        rows = shard_rows(self.num_train, rank, world)
        if batch_size >= len(rows):  # full batch: the paper's GD
            idx = torch.arange(rows.start, rows.stop)
        else:
            idx = epoch_batch_indices(
                self.num_train,
                self.seed,
                position=position,
                rank=rank,
                world=world,
                batch_size=batch_size,
            )
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
            k = flat[start : start + EVAL_ROWS]
            i, j = k // d, k % d
            yield i, j, self.Phi[i, j]

    @torch.no_grad()
    def evaluate(self, model, batch_size, num_batches) -> dict[str, float]:
        W = model.product()
        return {
            "val_loss": float(0.5 * ((W - self.Phi) ** 2).sum()),
            "recovery_error": float(torch.linalg.norm(W - self.Phi) / torch.linalg.norm(self.Phi)),
        }

    def checksum(self) -> str:
        return tensor_checksum(self.Phi, *self.rows)
