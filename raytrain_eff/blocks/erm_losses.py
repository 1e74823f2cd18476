"""Losses φ(t; y) of linear ERM, their derivatives in t and smoothness factors c (L_i =
c‖a_i‖²), and the elastic-net prox: the torch reference (``methods/vr/kernels`` has
compiled twins). Shared by the ``erm`` task (its loss) and the VR solvers."""

from __future__ import annotations

import torch
import torch.nn.functional as F_


def _logistic(t, y):
    return F_.softplus(-y * t)


def _logistic_d(t, y):
    return -y * torch.sigmoid(-y * t)


def _hinge(t, y):
    z = y * t  # smoothed hinge: 0 (z ≥ 1), ½(1 − z)² (0 < z < 1), ½ − z (z ≤ 0)
    return torch.where(z >= 1, 0.0, torch.where(z <= 0, 0.5 - z, 0.5 * (1 - z) ** 2))


def _hinge_d(t, y):
    return y * torch.clamp(y * t - 1, -1.0, 0.0)


def _sq_hinge(t, y):
    return 0.5 * torch.clamp(1 - y * t, min=0.0) ** 2  # ½ max(0, 1 − yt)²


def _sq_hinge_d(t, y):
    return -y * torch.clamp(1 - y * t, min=0.0)


LOSSES = {
    "logistic": (_logistic, _logistic_d, 0.25),
    "squared": (lambda t, y: 0.5 * (t - y) ** 2, lambda t, y: t - y, 1.0),
    "smoothed_hinge": (_hinge, _hinge_d, 1.0),
    "squared_hinge": (_sq_hinge, _sq_hinge_d, 1.0),
}


def prox_elastic_net(v: torch.Tensor, t: float, l1: float, l2: float) -> torch.Tensor:
    """argmin_x ½‖x − v‖² + t(λ₁‖x‖₁ + (λ₂/2)‖x‖²) = soft(v, tλ₁)/(1 + tλ₂)."""
    return F_.softshrink(v, t * l1).div_(1 + t * l2) if l1 > 0 else v / (1 + t * l2)
