"""Compression via low-dimensional learning dynamics (Kwon, Zhang, Song, Balzano, Qu,
AISTATS 2024, arXiv 2311.05061; reference code soominkwon/comp-deep-nets).

A deep linear network f(W_L⋯W_1) trained by gradient descent from a small orthogonal
initialisation Wₗ = ε·Qₗ only moves inside 2r-dimensional singular subspaces of the
end-to-end matrix, so a network of width 2r follows the same path. The compressed network
has depth 3 and width 2r, with a spectral initialisation from the surrogate target

    Φ̂ = −∇f(0)   (factorisation: Φ;  completion: P_Ω(Φ)/p;  sensing: (1/m) Σᵢ yᵢAᵢ)
    Φ̂ = Û Σ̂ V̂ᵀ,   W̃₁ = ε·V̂₂ᵣᵀ,   W̃₂ = ε·I₂ᵣ,   W̃₃ = ε·Û₂ᵣ      (W̃₃W̃₂W̃₁ = ε³·Û₂ᵣV̂₂ᵣᵀ)

and a discrepant learning rate (GD shown; Adam scales its step the same way):

    W̃ₗ ← W̃ₗ − α·η·∇_{W̃ₗ} f(W̃₃W̃₂W̃₁)   for ℓ ∈ {1, 3}
    W̃₂ ← W̃₂ − η·∇_{W̃₂} f(W̃₃W̃₂W̃₁)

``LowDim`` applies the same construction to a nonlinear model: its final nn.Linear head is
swapped for a width-2r deep linear head initialised from the step-0 gradient of the head
(−∇_W loss at W = 0), and ``export`` merges it back into one nn.Linear.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from raytrain_eff.methods.base import Method, MethodContext

Loss = Callable[[torch.Tensor], torch.Tensor]


# -- networks ----------------------------------------------------------------------------------
class DeepLinear(nn.Module):
    """x ↦ W_L⋯W_1 x (+ b). ``product()`` is the end-to-end matrix (d_out, d_in)."""

    def __init__(self, weights: list[torch.Tensor], bias: torch.Tensor | None = None):
        super().__init__()
        self.weights = nn.ParameterList(nn.Parameter(w.detach().clone()) for w in weights)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @property
    def in_features(self) -> int:
        return self.weights[0].shape[1]

    @property
    def out_features(self) -> int:
        return self.weights[-1].shape[0]

    def product(self) -> torch.Tensor:
        W = self.weights[0]
        for Wl in self.weights[1:]:
            W = Wl @ W
        return W

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for Wl in self.weights:   # (B, width): never forms the d_out×d_in product
            x = x @ Wl.T
        return x if self.bias is None else x + self.bias

    def outer(self) -> list[nn.Parameter]:
        """W_1 and W_L: the layers that learn at α·η."""
        return [self.weights[0], self.weights[-1]]


def orthogonal(rows: int, cols: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """A slice of a Haar-random orthogonal max(rows, cols) matrix (orthonormal rows or cols)."""
    n = max(rows, cols)
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=dtype))
    Q = Q * torch.sign(torch.diagonal(R))   # sign fix makes Q Haar-distributed
    return Q[:rows, :cols]


def orthogonal_weights(d_in: int, d_out: int, width: int, depth: int, eps: float,
                       gen: torch.Generator, dtype=torch.float64) -> list[torch.Tensor]:
    """The original network's initialisation: Wₗ = ε·Qₗ, Qₗ random (semi-)orthogonal."""
    shapes = [(width, d_in)] + [(width, width)] * (depth - 2) + [(d_out, width)]
    return [eps * orthogonal(r, c, gen, dtype) for r, c in shapes]


def spectral_weights(Phi_hat: torch.Tensor, width: int, eps: float) -> list[torch.Tensor]:
    """W̃₁ = ε·V̂ᵀ, W̃₂ = ε·I, W̃₃ = ε·Û from the top-``width`` singular vectors of Φ̂."""
    if width > min(Phi_hat.shape):
        raise ValueError(f"width {width} exceeds min(d_out, d_in) = {min(Phi_hat.shape)} "
                         f"of the surrogate {tuple(Phi_hat.shape)}")
    U, _, Vh = torch.linalg.svd(Phi_hat, full_matrices=False)
    I = torch.eye(width, dtype=Phi_hat.dtype, device=Phi_hat.device)  # noqa: E741 (the paper's I)
    return [eps * Vh[:width], eps * I, eps * U[:, :width]]


def compressed(Phi_hat: torch.Tensor, width: int, eps: float, init: str = "spectral",
               gen: torch.Generator | None = None, bias: torch.Tensor | None = None
               ) -> DeepLinear:
    """Depth-3, width-2r network: spectral init from Φ̂, or random orthogonal (the ablation)."""
    if init == "spectral":
        weights = spectral_weights(Phi_hat, width, eps)
    else:
        d_out, d_in = Phi_hat.shape
        weights = orthogonal_weights(d_in, d_out, width, 3, eps, gen or torch.Generator(),
                                     Phi_hat.dtype)
        weights = [w.to(Phi_hat.device) for w in weights]
    return DeepLinear(weights, bias)


def original(d: int, depth: int, eps: float, gen: torch.Generator, width: int | None = None,
             dtype=torch.float64) -> DeepLinear:
    return DeepLinear(orthogonal_weights(d, d, width or d, depth, eps, gen, dtype))


def param_groups(model: nn.Module, nets: list[DeepLinear], lr: float, alpha: float) -> list[dict]:
    """Outer layers of each compressed net at α·η; every other parameter at η."""
    fast = {id(p) for net in nets for p in net.outer()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in fast], "lr": lr},
              {"params": [p for p in params if id(p) in fast], "lr": alpha * lr}]
    return [g for g in groups if g["params"]]


def make_optimizer(groups: list[dict], kind: str) -> torch.optim.Optimizer:
    if kind == "gd":   # plain (full-batch) gradient descent: no momentum, no decay
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=0.0)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=groups[0]["lr"])
    raise ValueError(f"optimizer '{kind}': choose 'gd' or 'adam'")


# -- low-rank recovery problems ----------------------------------------------------------------
@dataclasses.dataclass
class LowRankProblem:
    """f(W) for an end-to-end matrix W, its target Φ and the surrogate Φ̂ = −∇f(0)."""
    kind: str
    Phi: torch.Tensor                 # (d, d) rank-r target
    loss: Loss                        # f(W), a scalar
    surrogate: torch.Tensor           # (d, d) Φ̂
    M: torch.Tensor | None = None  # (d, d) 0/1 observation mask Ω (factorisation: all ones)
    A: torch.Tensor | None = None  # (m, d²) vec(Aᵢ) as rows (sensing)
    y: torch.Tensor | None = None  # (m,) yᵢ = ⟨Aᵢ, Φ⟩ (sensing)

    def __post_init__(self):
        self.Phi_norm = torch.linalg.norm(self.Phi)   # ‖Φ‖_F, once: error() runs every step

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


def completion(d: int, r: int, p: float, gen: torch.Generator,
               kind: str = "completion") -> LowRankProblem:
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
    A = torch.randn(m, d * d, generator=gen, dtype=Phi.dtype)   # (m, d²): vec(Aᵢ) as rows
    y = A @ Phi.reshape(-1)

    def f(W):
        return 0.5 * ((A @ W.reshape(-1) - y) ** 2).mean()
    return LowRankProblem("sensing", Phi, f, surrogate(f, Phi.shape), A=A, y=y)


@dataclasses.dataclass
class Trajectory:
    errors: list[float]      # recovery error of the iterate before step k (errors[0]: init)
    seconds: list[float]     # wall time spent up to that point (steps and error evaluation)

    def first_below(self, tol: float) -> tuple[int, float] | None:
        """(iterations, seconds) at which the error first fell to ``tol`` or below; None if
        never."""
        for k, e in enumerate(self.errors):
            if e <= tol:
                return k, self.seconds[k]
        return None


def fit(net: DeepLinear, problem: LowRankProblem, opt: torch.optim.Optimizer, steps: int,
        tol: float = 0.0) -> Trajectory:
    """Full-batch training of f(W_L⋯W_1), recording the recovery error at every iteration.

    The end-to-end product is formed once per iteration: the error reads it (detached) and
    the loss backpropagates through the same tensor. Stops at the first error at or below
    ``tol``, after ``steps`` steps, or at a NaN."""
    errors, seconds, start = [], [], time.perf_counter()
    for k in range(steps + 1):
        W = net.product()                         # (d_out, d_in), with its autograd graph
        errors.append(problem.error(W.detach()))
        seconds.append(time.perf_counter() - start)
        if errors[-1] <= tol or k == steps or errors[-1] != errors[-1]:  # done, capped or NaN
            break
        opt.zero_grad(set_to_none=True)
        problem.loss(W).backward()
        opt.step()
    return Trajectory(errors, seconds)


# -- the method: compress a model's linear layer (or a whole deep linear network) --------------
class LowDim(Method):
    """Swap ``config.layer`` (an nn.Linear) for a width-2r deep linear layer initialised from
    the step-0 gradient; a model that is itself a DeepLinear network is compressed whole."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.net: DeepLinear | None = None

    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        c = self.config
        whole = isinstance(model, DeepLinear)
        old = model if whole else _get(model, c.layer)
        if not isinstance(old, (nn.Linear, DeepLinear)):
            raise TypeError(f"lowdim.layer '{c.layer}' is a {type(old).__name__}; "
                            "it must be an nn.Linear")
        Phi_hat = self._surrogate(model, old, whole, ctx)
        gen = torch.Generator().manual_seed(0)   # a fixed seed: every rank builds the same net
        bias = None if whole else old.bias
        self.net = compressed(Phi_hat, c.width, c.init_scale, c.init, gen, bias)
        if whole:
            return self.net
        _set(model, c.layer, self.net)
        return model

    def _surrogate(self, model, old, whole, ctx) -> torch.Tensor:
        """Φ̂ = −∇_W loss with the layer's weight at 0, on one batch, averaged over ranks."""
        if ctx.loss_fn is None or ctx.next_batch is None:
            raise ValueError("lowdim needs ctx.loss_fn and ctx.next_batch for its step-0 "
                             "gradient (spectral and random init share it for the shape)")
        p = next(old.parameters())
        zero = DeepLinear([torch.zeros(old.out_features, old.in_features, dtype=p.dtype,
                                       device=p.device)],
                          None if whole else old.bias)
        if whole:
            loss = ctx.loss_fn(zero, ctx.next_batch())
        else:
            _set(model, self.config.layer, zero)
            try:
                loss = ctx.loss_fn(model, ctx.next_batch())
            finally:
                _set(model, self.config.layer, old)
        (g,) = torch.autograd.grad(loss, zero.weights[0])
        if ctx.distributed:
            dist.all_reduce(g, group=ctx.group)
            g /= ctx.world_size
        return -g

    def make_optimizer(self, model, ctx: MethodContext):
        c = self.config
        if self.net is None:
            raise RuntimeError("lowdim: prepare() builds the compressed layer before "
                               "make_optimizer")
        return make_optimizer(param_groups(model, [self.net], c.lr, c.alpha), c.optimizer)

    def export(self, model: nn.Module) -> nn.Module:
        """Merge W̃₃W̃₂W̃₁ (+ b) into a single layer: nn.Linear, or a depth-1 DeepLinear."""
        if isinstance(model, DeepLinear):
            return DeepLinear([model.product()])
        net = _get(model, self.config.layer)
        if not isinstance(net, DeepLinear):
            return model
        merged = nn.Linear(net.in_features, net.out_features, bias=net.bias is not None)
        with torch.no_grad():
            W = net.product()
            merged = merged.to(dtype=W.dtype, device=W.device)
            merged.weight.copy_(W)
            if net.bias is not None:
                merged.bias.copy_(net.bias)
        _set(model, self.config.layer, merged)
        return model


def _get(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        raise ValueError(f"lowdim.layer '{path}' is not a module of {type(model).__name__}; "
                         f"modules: {', '.join(names)}") from None


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)
