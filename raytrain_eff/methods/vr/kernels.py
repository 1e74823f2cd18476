"""Compiled (numba) kernels for the variance-reduced ERM solvers of ``vr/solvers.py``.

The same maths as the torch path there, fused into loops over rows: a full pass (snapshot
gradient, φ'(a_iᵀx̃), F(x̃)) and the inner steps of one stage of DASVRDA, Prox-SVRG and
Katyusha, with their mini-batch gradients, prox and momentum updates. The sampled indices
(and importance weights) are drawn by the caller with torch's generator, exactly as the torch
path draws them, so both backends follow the same iterates (to float64 rounding: sums run in
a different order). Rows are dense (a 2-D C-contiguous array) or CSR (a tuple
``(indptr, indices, data)``); ``row_dot`` / ``row_axpy`` pick the loop at compile time.

Every kernel is compiled once per argument types and cached on disk (``cache=True``), next
to this file in ``__pycache__``, so a new process loads it instead of compiling.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

LOSS_CODES = {"logistic": 0, "squared": 1, "smoothed_hinge": 2, "squared_hinge": 3}


# --- losses: same formulas as LOSSES in dasvrda.py (softplus with torch's threshold 20) -------
@njit(cache=True, inline="always")
def _phi(code, t, y):
    if code == 0:
        u = -y * t
        return u if u > 20.0 else math.log1p(math.exp(u))
    if code == 1:
        return 0.5 * (t - y) ** 2
    if code == 3:
        return 0.5 * max(1.0 - y * t, 0.0) ** 2
    z = y * t
    if z >= 1.0:
        return 0.0
    return 0.5 - z if z <= 0.0 else 0.5 * (1.0 - z) ** 2


@njit(cache=True, inline="always")
def _dphi(code, t, y):
    if code == 0:
        return -y / (1.0 + math.exp(y * t))  # -y·sigmoid(-yt)
    if code == 1:
        return t - y
    if code == 3:
        return -y * max(1.0 - y * t, 0.0)
    return y * min(max(y * t - 1.0, -1.0), 0.0)


# --- rows: a_iᵀx and g += c·a_i for dense or CSR storage ----------------------------------
def row_dot(rows, i, x):  # pragma: no cover - replaced by the overload inside jitted code
    raise NotImplementedError


def row_axpy(rows, i, c, g):  # pragma: no cover
    raise NotImplementedError


@overload(row_dot, inline="always")
def _row_dot(rows, i, x):
    if isinstance(rows, types.Array):

        def dense(rows, i, x):
            acc = 0.0
            for j in range(rows.shape[1]):
                acc += rows[i, j] * x[j]
            return acc

        return dense

    def csr(rows, i, x):
        indptr, indices, data = rows
        acc = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            acc += data[p] * x[indices[p]]
        return acc

    return csr


@overload(row_axpy, inline="always")
def _row_axpy(rows, i, c, g):
    if isinstance(rows, types.Array):

        def dense(rows, i, c, g):
            for j in range(rows.shape[1]):
                g[j] += c * rows[i, j]

        return dense

    def csr(rows, i, c, g):
        indptr, indices, data = rows
        for p in range(indptr[i], indptr[i + 1]):
            g[indices[p]] += c * data[p]

    return csr


# --- one full pass ---------------------------------------------------------------------------
@njit(cache=True)
def full_pass(rows, y, code, x, dphi, grad):
    """Σ_i φ(a_iᵀx); writes φ'(a_iᵀx) into ``dphi`` and Σ_i φ'(a_iᵀx)a_i into ``grad``.
    The sum of φ is compensated (Kahan): P(x̃) drives restarts and stopping, and a plain
    running sum over n terms would lose ~n·ε of it (torch sums pairwise)."""
    grad[:] = 0.0
    F, carry = 0.0, 0.0
    for i in range(y.shape[0]):
        t = row_dot(rows, i, x)
        dphi[i] = _dphi(code, t, y[i])
        term = _phi(code, t, y[i]) - carry
        total = F + term
        carry = (total - F) - term
        F = total
        row_axpy(rows, i, dphi[i], grad)
    return F


# --- the pieces of an inner step -------------------------------------------------------------
@njit(cache=True, inline="always")
def _batch_grad(rows, y, code, p, dphi_snap, idx, w, k, b, v, g):
    """g = (1/b) Σ_{i∈I_k} (φ'(a_iᵀp) − φ'(a_iᵀx̃)) a_i w_i + ṽ (w empty: uniform)."""
    g[:] = 0.0
    for j in range((k - 1) * b, k * b):
        i = idx[j]
        c = (_dphi(code, row_dot(rows, i, p), y[i]) - dphi_snap[i]) / b
        if w.shape[0] > 0:
            c *= w[j]
        row_axpy(rows, i, c, g)
    for j in range(g.shape[0]):
        g[j] += v[j]


@njit(cache=True, inline="always")
def _prox(u, t, l1, l2, penalised):
    """prox_{tR}(u) for R = λ₁‖·‖₁ + (λ₂/2)‖·‖², one coordinate (identity: unpenalised)."""
    if not penalised:
        return u
    s = t * l1
    if u > s:
        u -= s
    elif u < -s:
        u += s
    else:
        u = 0.0
    return u / (1.0 + t * l2)


# --- the stage loops: inner steps k0+1..k1, state arrays updated in place --------------------
@njit(cache=True)
def dasvrda_steps(
    rows, y, code, dphi_snap, v, idx, w, b, k0, k1, eta, l1, l2, dp, x, z, z0, gbar, q, g
):
    """DASVRDA's inner acceleration (dual averaging); R acts on coordinates < ``dp``;
    ``q``, ``g``: work space."""
    for k in range(k0 + 1, k1 + 1):
        theta = (k + 1) / 2
        a = 1.0 / theta
        for j in range(x.shape[0]):
            q[j] = x[j] + a * (z[j] - x[j])  # y_k
        _batch_grad(rows, y, code, q, dphi_snap, idx, w, k, b, v, g)
        t = eta * theta * (k / 2)
        for j in range(x.shape[0]):
            gbar[j] += a * (g[j] - gbar[j])  # ḡ_k
            z[j] = _prox(z0[j] - t * gbar[j], t, l1, l2, j < dp)
            x[j] += a * (z[j] - x[j])


@njit(cache=True)
def prox_svrg_steps(rows, y, code, dphi_snap, v, idx, w, b, k0, k1, eta, l1, l2, dp, x, g):
    for k in range(k0 + 1, k1 + 1):
        _batch_grad(rows, y, code, x, dphi_snap, idx, w, k, b, v, g)
        for j in range(x.shape[0]):
            x[j] = _prox(x[j] - eta * g[j], eta, l1, l2, j < dp)


@njit(cache=True)
def katyusha_steps(
    rows,
    y,
    code,
    dphi_snap,
    v,
    idx,
    w,
    b,
    k0,
    k1,
    l1,
    l2,
    dp,
    tau1,
    tau2,
    alpha,
    L,
    sigma,
    xt,
    yk,
    z,
    xk,
    ysum,
    wsum,
    g,
):
    """Katyusha's coupling; returns the updated Σ weights (ysum is updated in place)."""
    for k in range(k0 + 1, k1 + 1):
        for j in range(xk.shape[0]):
            xk[j] = tau1 * z[j] + tau2 * xt[j] + (1 - tau1 - tau2) * yk[j]
        _batch_grad(rows, y, code, xk, dphi_snap, idx, w, k, b, v, g)
        weight = (1 + alpha * sigma) ** (k - 1)
        s = 1 / (3 * L)
        for j in range(xk.shape[0]):
            z[j] = _prox(z[j] - alpha * g[j], alpha, l1, l2, j < dp)
            yk[j] = _prox(xk[j] - g[j] / (3 * L), s, l1, l2, j < dp)
            ysum[j] += weight * yk[j]
        wsum += weight
    return wsum


def empty_weights() -> np.ndarray:
    return np.empty(0, dtype=np.float64)


@njit(cache=True)
def penalty(x, l1, l2, dp):
    """R(x) = λ₁‖x‖₁ + (λ₂/2)‖x‖² over the penalised coordinates (< ``dp``)."""
    a, q = 0.0, 0.0
    for j in range(dp):
        a += abs(x[j])
        q += x[j] * x[j]
    return l1 * a + 0.5 * l2 * q
