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

import torch
from torch import nn

from raytrain_eff import collectives
from raytrain_eff.blocks.deep_linear import DeepLinear, orthogonal_weights
from raytrain_eff.hparams.lowdim import LowDimConfig
from raytrain_eff.methods.base import Method, MethodContext


def spectral_weights(Phi_hat: torch.Tensor, width: int, eps: float) -> list[torch.Tensor]:
    """W̃₁ = ε·V̂ᵀ, W̃₂ = ε·I, W̃₃ = ε·Û from the top-``width`` singular vectors of Φ̂."""
    if width > min(Phi_hat.shape):
        raise ValueError(
            f"width {width} exceeds min(d_out, d_in) = {min(Phi_hat.shape)} "
            f"of the surrogate {tuple(Phi_hat.shape)}"
        )
    U, _, Vh = torch.linalg.svd(Phi_hat, full_matrices=False)
    I = torch.eye(width, dtype=Phi_hat.dtype, device=Phi_hat.device)  # noqa: E741 (the paper's I)
    return [eps * Vh[:width], eps * I, eps * U[:, :width]]


def compressed(
    Phi_hat: torch.Tensor,
    width: int,
    eps: float,
    init: str = "spectral",
    gen: torch.Generator | None = None,
    bias: torch.Tensor | None = None,
) -> DeepLinear:
    """Depth-3, width-2r network: spectral init from Φ̂, or random orthogonal (the ablation)."""
    if init == "spectral":
        weights = spectral_weights(Phi_hat, width, eps)
    else:
        d_out, d_in = Phi_hat.shape
        weights = orthogonal_weights(
            d_in, d_out, width, 3, eps, gen or torch.Generator(), Phi_hat.dtype
        )
        weights = [w.to(Phi_hat.device) for w in weights]
    return DeepLinear(weights, bias)


def param_groups(model: nn.Module, nets: list[DeepLinear], lr: float, alpha: float) -> list[dict]:
    """Outer layers of each compressed net at α·η; every other parameter at η."""
    fast = {id(p) for net in nets for p in net.outer()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) not in fast], "lr": lr},
        {"params": [p for p in params if id(p) in fast], "lr": alpha * lr},
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(groups: list[dict], kind: str) -> torch.optim.Optimizer:
    if kind == "gd":  # plain (full-batch) gradient descent: no momentum, no decay
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=0.0)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=groups[0]["lr"])
    raise ValueError(f"optimizer '{kind}': choose 'gd' or 'adam'")


# -- the method: compress a model's linear layer (or a whole deep linear network) --------------
class LowDim(Method[LowDimConfig]):
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
            raise TypeError(
                f"lowdim.layer '{c.layer}' is a {type(old).__name__}; it must be an nn.Linear"
            )
        Phi_hat = self._surrogate(model, old, whole, ctx)
        gen = torch.Generator().manual_seed(0)  # a fixed seed: every rank builds the same net
        bias = None if whole else old.bias
        self.net = compressed(Phi_hat, c.width, c.init_scale, c.init, gen, bias)
        if whole:
            return self.net
        _set(model, c.layer, self.net)
        return model

    def _surrogate(self, model, old, whole, ctx) -> torch.Tensor:
        """Φ̂ = −∇_W loss with the layer's weight at 0, on one batch, averaged over ranks."""
        if ctx.loss_fn is None or ctx.next_batch is None:
            raise ValueError(
                "lowdim needs ctx.loss_fn and ctx.next_batch for its step-0 "
                "gradient (spectral and random init share it for the shape)"
            )
        p = next(old.parameters())
        zero = DeepLinear(
            [torch.zeros(old.out_features, old.in_features, dtype=p.dtype, device=p.device)],
            None if whole else old.bias,
        )
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
            collectives.all_reduce(g, ctx.group)
            g /= ctx.world_size
        return -g

    def make_optimizer(self, model, ctx: MethodContext):
        c = self.config
        if self.net is None:
            raise RuntimeError(
                "lowdim: prepare() builds the compressed layer before make_optimizer"
            )
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
        raise ValueError(
            f"lowdim.layer '{path}' is not a module of {type(model).__name__}; "
            f"modules: {', '.join(names)}"
        ) from None


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)
