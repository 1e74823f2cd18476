"""Hyper-parameters of the first-order baselines every method is compared against."""

from __future__ import annotations

from dataclasses import dataclass

from raytrain_eff.typed import check


@dataclass(kw_only=True)
class SGDConfig:
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0  # decoupled (applied to weights, not folded into the gradient)

    def __post_init__(self):
        check(self.lr > 0, "lr", self.lr, "> 0")
        check(0 <= self.momentum < 1, "momentum", self.momentum, "in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        check(
            not self.nesterov or self.momentum > 0,
            "nesterov",
            self.nesterov,
            "false when momentum is 0",
        )


@dataclass(kw_only=True)
class AdamWConfig:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01

    def __post_init__(self):
        check(self.lr > 0, "lr", self.lr, "> 0")
        check(0 <= self.beta1 < 1, "beta1", self.beta1, "in [0, 1)")
        check(0 <= self.beta2 < 1, "beta2", self.beta2, "in [0, 1)")
        check(self.eps > 0, "eps", self.eps, "> 0")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
