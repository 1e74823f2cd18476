"""Sublinear-time training of wide shifted-ReLU networks (arXiv 2208.04508).

Deng, Hu, Song, Weinstein, Zhuo: "Training Overparametrized Neural Networks in Sublinear Time".

The network is f(x) = (1/√m) Σ_r a_r·σ_b(⟨w_r, x⟩) with σ_b(z) = max(z − b, 0), a_r fixed.
With unit-norm x and b = √(0.4·ln m) only S(x) = {r : ⟨w_r, x⟩ > b}, about m^0.8 neurons,
fire; an inactive neuron gets no gradient, so a step changes few w_r. Per step on a batch B::

    S_i   = index.query(x_i)                          # active set, cost ∝ |S_i|, not m
    f_i   = (1/√m) Σ_{r∈S_i} a_r (⟨w_r, x_i⟩ − b)
    e_i   = f_i − y_i                                 # (B·∂ℓ/∂f for ℓ = mean ½‖f − y‖²)
    first order:   w_r ← w_r − η·∂ℓ/∂w_r,  ∂ℓ/∂w_r = (1/√m) Σ_{i: r∈S_i} ⟨a_r, ∂ℓ/∂f_i⟩ x_i
    Gauss-Newton:  G = J Jᵀ,  G_(c,i),(c',j) = (1/m) ⟨x_i, x_j⟩ Σ_{r∈S_i∩S_j} a_rc a_rc'
                   z = (G + λI)⁻¹ e,   w_r ← w_r − η (1/√m) Σ_{i: r∈S_i} ⟨a_r, z_i⟩ x_i
    index.update(U)                                   # U = neurons that changed, only those

Three ways to find S_i: ``MaxTreeIndex`` (exact: per training input a fan-out-f max-tree over
the keys ⟨w_r, x_i⟩, maintained for changed neurons only), ``HyperplaneLSH`` (approximate:
random-hyperplane hashing of the lifted w̃_r = [w_r; √(M² − ‖w_r‖²)], rehashing touched
neurons only; misses are measured as recall) and the dense GEMM + mask reference.
Width sharding: each rank hosts a contiguous slice of the neurons with its own index; the
partial outputs are all-reduced, and the Gram matrix is a sum over neurons, so it is too.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from raytrain_eff import collectives
from raytrain_eff.hparams.sublinear import SublinearConfig
from raytrain_eff.methods.base import Method, MethodContext
from raytrain_eff.monitor import keys
from raytrain_eff.ranks import shard_rows


def default_shift(m: int) -> float:
    """b = √(0.4·ln m): P(N(0,1) > b) ≈ m^-0.2/(b√(2π)), so about m^0.8 neurons (up to a log
    factor) fire per unit-norm input."""
    return math.sqrt(0.4 * math.log(m))


def _round_tolerance(dtype: torch.dtype) -> float:
    # stale keys come from a GEMM, their verification from per-pair dots: a few ulps apart
    return 1e-4 if dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-10


class MaxTreeIndex:
    """Exact active sets for the n indexed inputs: per input, a fan-out-f max-tree over keys.

    ``levels[0][r, i]`` is the key ⟨w̃_r, x_i⟩ of a snapshot w̃_r with ‖w_r − w̃_r‖ ≤ ε (ε = 0:
    the snapshot is the current weight); ``levels[l][j, i]`` is the max of node j's f children.
    Neuron-major rows make re-keying a neuron one contiguous write for all n trees.
    A query descends only into subtrees whose max exceeds b − ε·max‖x‖, so it reads
    O(f·|S_i|·log_f m) keys. With ε = 0 the leaf keys are the pre-activations themselves;
    with ε > 0 the caller verifies the candidates with exact dots.
    """

    def __init__(self, X: torch.Tensor, W: torch.Tensor, fanout: int = 8, slack: float = 0.0):
        self.X, self.f, self.slack = X, fanout, slack          # X: (n, d) indexed inputs
        self.x_max = float(X.norm(dim=1).max()) if len(X) else 0.0
        self.W_snap = W.detach().clone()                        # w̃: (m, d)
        self.m = W.shape[0]
        self.levels = self._build(self.W_snap @ X.T)

    def _build(self, keys: torch.Tensor) -> list[torch.Tensor]:
        levels: list[torch.Tensor] = []
        cur = keys                                              # (m, n)
        while True:
            if cur.shape[0] == 1:
                return levels + [cur]
            cur = F.pad(cur, (0, 0, 0, (-cur.shape[0]) % self.f), value=-math.inf)
            levels.append(cur)
            cur = cur.view(-1, self.f, cur.shape[1]).amax(1)

    def threshold(self, b: float) -> float:
        return b - self.slack * self.x_max - _round_tolerance(self.X.dtype)

    def query(self, rows: torch.Tensor, b: float):
        """Candidate pairs (batch position, neuron) with key > b − ε, their keys, keys read."""
        thr, children = self.threshold(b), torch.arange(self.f, device=rows.device)
        bi = torch.arange(len(rows), device=rows.device)
        node = torch.zeros_like(bi)
        reads = 0
        n = len(self.X)
        for level in reversed(self.levels[:-1]):
            bi = bi.repeat_interleave(self.f)
            node = (node[:, None] * self.f + children).reshape(-1)
            key = level.view(-1).index_select(0, node * n + rows[bi])        # flat gather
            keep = key > thr
            reads += len(node)
            bi, node, key = bi[keep], node[keep], key[keep]
        return bi, node, key, reads

    def update(self, W: torch.Tensor, U: torch.Tensor) -> tuple[int, int]:
        """Re-key neurons U (sorted, unique) that drifted more than ε; (re-keyed, key writes)."""
        R = U if self.slack == 0 else U[(W[U] - self.W_snap[U]).norm(dim=1) > self.slack]
        if len(R) == 0:
            return 0, 0
        self.W_snap[R] = W[R]
        self.levels[0].index_copy_(0, R, W.index_select(0, R) @ self.X.T)  # n·|R|·d
        idx, children, writes = R, torch.arange(self.f, device=R.device), len(R)
        for lower, upper in zip(self.levels[:-1], self.levels[1:], strict=True):
            idx = torch.unique_consecutive(idx // self.f)
            kids = (idx[:, None] * self.f + children).reshape(-1)
            upper.index_copy_(0, idx, lower.index_select(0, kids).view(-1, self.f, len(self.X))
                              .amax(1))
            writes += len(kids)
        return len(R), writes * len(self.X)


class HyperplaneLSH:
    """L tables of K random hyperplanes over lifted neurons w̃_r = [w_r; √(M² − ‖w_r‖²)].

    With x̃ = [x; 0], ⟨w̃_r, x̃⟩ = ⟨w_r, x⟩ and ‖w̃_r‖ = M, so "⟨w_r, x⟩ > b" reads
    "angle(w̃_r, x̃) < arccos(b/M)";
    neurons sharing a bucket with x in some table are candidates. Buckets are fixed-capacity
    slot arrays, so rehashing |U| touched neurons costs O(|U|·L·K·d) plus a rare compaction.
    """

    def __init__(self, W: torch.Tensor, tables: int, bits: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        d = W.shape[1]
        self.L, self.K, self.m = tables, bits, W.shape[0]
        self.planes = torch.randn(tables * bits, d + 1, generator=gen, dtype=W.dtype).to(W.device)
        self.M = float(W.detach().norm(dim=1).max()) * 1.5   # room for weights to grow
        self.weights = 2 ** torch.arange(bits, device=W.device)
        self.codes = self._hash(self._lift(W.detach()))       # (L, m)
        self.cap = 0
        self.slots = self.fill = self.where = torch.empty(0)   # set by _rebuild_all
        self._rebuild_all()

    def _lift(self, W: torch.Tensor) -> torch.Tensor:
        tail = (self.M ** 2 - (W * W).sum(1)).clamp_min(0).sqrt()
        return torch.cat([W, tail[:, None]], dim=1)

    def _hash(self, V: torch.Tensor) -> torch.Tensor:
        bits = (V @ self.planes.T > 0).view(len(V), self.L, self.K).long()
        return (bits * self.weights).sum(-1).T.contiguous()   # (L, len(V))

    def _rebuild_all(self) -> None:
        sizes = torch.stack([torch.bincount(c, minlength=2 ** self.K) for c in self.codes])
        self.cap = max(4, 2 * int(sizes.max()))
        dev = self.codes.device
        self.slots = torch.full((self.L, 2 ** self.K, self.cap), -1, dtype=torch.long, device=dev)
        self.fill = torch.zeros(self.L, 2 ** self.K, dtype=torch.long, device=dev)
        self.where = torch.zeros(self.L, self.m, dtype=torch.long, device=dev)
        for t in range(self.L):
            self._insert(t, torch.arange(self.m, device=dev), self.codes[t])

    def _insert(self, t: int, ids: torch.Tensor, codes: torch.Tensor) -> bool:
        """Append ids to their buckets in table t; False if a bucket would overflow."""
        codes, order = torch.sort(codes, stable=True)
        ids = ids[order]
        _, counts = torch.unique_consecutive(codes, return_counts=True)
        starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        pos = self.fill[t, codes] + torch.arange(len(ids), device=ids.device) - starts
        if len(pos) and int(pos.max()) >= self.cap:
            return False
        self.slots[t, codes, pos] = ids
        self.fill[t].scatter_reduce_(0, codes, pos + 1, reduce="amax")
        self.where[t, ids] = pos
        return True

    def update(self, W: torch.Tensor, U: torch.Tensor) -> int:
        """Rehash touched neurons U; returns how many changed bucket in some table."""
        new, old = self._hash(self._lift(W[U])), self.codes[:, U]   # (L, |U|) each
        moved = new != old
        self.codes[:, U] = new
        for t in range(self.L):
            u = U[moved[t]]
            self.slots[t, old[t, moved[t]], self.where[t, u]] = -1
            if not self._insert(t, u, new[t, moved[t]]):    # a bucket is full: compact all
                self._rebuild_all()
                break
        return int(moved.any(0).sum())

    def query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Candidate pairs (batch position, neuron) sharing a bucket; and the slots read."""
        q = self._hash(torch.cat([x, torch.zeros_like(x[:, :1])], dim=1))   # (L, B)
        cand = self.slots[torch.arange(self.L, device=x.device)[:, None], q]  # (L, B, cap)
        bi = torch.arange(len(x), device=x.device)[None, :, None].expand_as(cand)
        ok = cand >= 0
        pair = torch.unique(bi[ok] * self.m + cand[ok])
        return pair // self.m, pair % self.m, cand.numel()


class _PairDots(torch.autograd.Function):
    """h_p = ⟨w_{r_p}, x_{i_p}⟩ (already computed by the query's verification) as a function
    of W; ∂ℓ/∂W is a coalesced sparse tensor with one summed row per distinct neuron."""

    @staticmethod
    def forward(ctx, W, h, x_pairs, r):
        U, slot = torch.unique(r, return_inverse=True)          # sorted distinct neurons
        ctx.save_for_backward(x_pairs, U, slot)
        ctx.shape = W.shape
        return h.clone()

    @staticmethod
    def backward(ctx, grad_h):
        x_pairs, U, slot = ctx.saved_tensors
        rows = torch.zeros(len(U), x_pairs.shape[1], dtype=grad_h.dtype, device=grad_h.device)
        rows.index_add_(0, slot, grad_h[:, None] * x_pairs)     # Σ_{i: r∈S_i} ∂ℓ/∂h_ir · x_i
        g = torch.sparse_coo_tensor(U[None], rows, ctx.shape, is_coalesced=True,
                                    check_invariants=False)
        return g, None, None, None


class _SumOverShards(torch.autograd.Function):
    """f = Σ_p f_p across width shards; ∂ℓ/∂f_p = ∂ℓ/∂f, so the backward is the identity."""

    @staticmethod
    def forward(ctx, f_p, group):
        return collectives.all_reduce(f_p.clone(), group)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


STAT_KEYS = ("batch", "pairs", "candidates", "reads", "updated", "rekeyed", "flops",
             "query_s", "update_s", "recall_hits", "recall_true")


class ShiftedReLU(nn.Module):
    """The wide layer x ↦ (1/√m) Σ_r a_r·max(⟨w_r, x⟩ − b, 0); a ∈ {±1}^{m×k} fixed, W trained.

    ``forward(x, rows)``: ``rows`` are the positions of x in the indexed inputs (exact mode
    needs them; without them, or in dense mode, the GEMM + mask path runs). W's gradient is
    sparse (one row per active pair) on the index paths, dense on the GEMM path.
    """

    a: torch.Tensor  # (m, k) buffer of ±1 output weights

    def __init__(self, d: int, m: int, k: int = 1, b: float | None = None, seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.m, self.b, self.offset = m, default_shift(m) if b is None else float(b), 0
        self.weight = nn.Parameter(torch.randn(m, d, generator=gen, dtype=dtype))  # w_r ~ N(0, I)
        self.register_buffer("a", (torch.randint(0, 2, (m, k), generator=gen) * 2 - 1).to(dtype))
        self.mode, self.group = "dense", None
        self.index: MaxTreeIndex | HyperplaneLSH | None = None
        self.check_recall = False
        self.count_active = True                       # dense path: count z > 0 (one extra pass)
        self.grad_out: torch.Tensor | None = None   # ∂ℓ/∂f of the last training forward
        self._saved: tuple | None = None            # (x, bi, r) of that forward
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = dict.fromkeys(STAT_KEYS, 0.0)

    def shard(self, rank: int, world: int, group) -> None:
        """Keep this rank's contiguous slice of the neurons; outputs are summed over ranks."""
        mine = shard_rows(self.m, rank, world)
        start, stop = mine.start, mine.stop
        self.weight = nn.Parameter(self.weight.data[start:stop].clone())
        self.a = self.a[start:stop].clone()
        self.offset, self.group = start, group

    def use_index(self, mode: str, X: torch.Tensor | None = None, *, fanout: int = 8,
                  slack: float = 0.0, tables: int = 8, bits: int = 6, seed: int = 0) -> None:
        """Switch to 'dense', 'exact' (indexing inputs X) or 'lsh', building the index now."""
        W = self.weight.detach()
        if mode == "exact":
            if X is None:
                raise ValueError("the exact index needs the inputs X it indexes")
            self.index = MaxTreeIndex(X.to(W), W, fanout, slack)
        elif mode == "lsh":
            self.index = HyperplaneLSH(W, tables, bits, seed + self.offset)
        else:
            self.index = None
        self.mode = mode

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        sparse = self.mode == "lsh" or (self.mode == "exact" and rows is not None)
        f_p = self._sparse(x, rows) if sparse else self._dense(x)   # (B, k), this shard's part
        if f_p.requires_grad:
            f_p.register_hook(self._keep_grad_out)
        return _SumOverShards.apply(f_p, self.group) if self.group is not None else f_p

    def _keep_grad_out(self, grad: torch.Tensor) -> None:
        self.grad_out = grad.detach()

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        m_p, d = self.weight.shape
        z = torch.addmm(self.weight.new_full((1,), -self.b), x, self.weight.t())  # (B, m_p)
        act = torch.relu(z)                                       # the mask: z > 0
        self._saved = (x.detach(), z.detach())
        B, k = len(x), self.a.shape[1]
        self.stats["batch"] += B
        if self.count_active:
            self.stats["pairs"] += float((z > 0).sum())
        self.stats["flops"] += 4 * B * m_p * (d + k)               # addmm, output; their grads
        return act @ self.a / math.sqrt(self.m)

    def active_pairs(self, x: torch.Tensor, rows: torch.Tensor | None):
        """(bi, r, h): the pairs with h = ⟨w_r, x_bi⟩ > b among the index's candidates."""
        d, index = x.shape[1], self.index
        with torch.no_grad():
            if isinstance(index, MaxTreeIndex):                      # mode "exact"
                assert rows is not None  # forward() takes the exact path only with rows
                bi, r, h, reads = index.query(rows, self.b)
                fresh = index.slack == 0                             # leaf keys are current
            elif isinstance(index, HyperplaneLSH):                   # mode "lsh"
                bi, r, reads = index.query(x)
                fresh = False
            else:
                raise RuntimeError("a sparse forward needs an index: call use_index first")
            if not fresh:                                            # verify with exact dots
                h = (self.weight.index_select(0, r) * x.index_select(0, bi)).sum(1)
                self.stats["flops"] += 2 * len(r) * d
            keep = h > self.b
        self.stats["candidates"] += len(r)
        self.stats["reads"] += reads
        self.stats["flops"] += reads
        if isinstance(index, HyperplaneLSH):
            self.stats["flops"] += 2 * len(x) * (d + 1) * index.L * index.K
        return bi[keep], r[keep], h[keep]

    def _sparse(self, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        t0 = time.perf_counter()
        bi, r, h = self.active_pairs(x, rows)
        self.stats["query_s"] += time.perf_counter() - t0
        if self.check_recall:
            self._measure_recall(x, bi, r)
        h = _PairDots.apply(self.weight, h, x.detach().index_select(0, bi), r)  # grad in W
        contrib = (h - self.b)[:, None] * self.a.index_select(0, r)   # (P, k)
        f_p = torch.zeros(len(x), self.a.shape[1], dtype=x.dtype, device=x.device)
        self._saved = (x.detach(), bi, r)
        P, d, k = len(r), x.shape[1], self.a.shape[1]
        self.stats["batch"] += len(x)
        self.stats["pairs"] += P
        self.stats["flops"] += 2 * P * (d + 2 * k)                 # output; grads of it and W
        return f_p.index_add(0, bi, contrib) / math.sqrt(self.m)

    @torch.no_grad()
    def _measure_recall(self, x: torch.Tensor, bi: torch.Tensor, r: torch.Tensor) -> None:
        truth = x @ self.weight.T > self.b                         # the dense active set
        self.stats["recall_true"] += float(truth.sum())
        self.stats["recall_hits"] += float(truth[bi, r].sum())

    def saved_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, bi, r) of the last training forward (dense mode: read off the mask)."""
        if self._saved is None:
            raise RuntimeError("no training forward since the last update")
        if len(self._saved) == 3:
            return self._saved
        x, z = self._saved
        bi, r = (z > 0).nonzero(as_tuple=True)
        return x, bi, r

    # -- after an update -----------------------------------------------------------------------
    @torch.no_grad()
    def neurons_changed(self, U: torch.Tensor) -> None:
        """Tell the index that rows U (sorted, unique) of W changed."""
        t0 = time.perf_counter()
        d = self.weight.shape[1]
        self.stats["updated"] += len(U)
        self.stats["flops"] += 2 * len(U) * d
        if isinstance(self.index, MaxTreeIndex):
            rekeyed, writes = self.index.update(self.weight.detach(), U)
            self.stats["rekeyed"] += rekeyed
            self.stats["flops"] += 2 * len(self.index.X) * rekeyed * d + writes
        elif isinstance(self.index, HyperplaneLSH):
            self.stats["rekeyed"] += self.index.update(self.weight.detach(), U)
            self.stats["flops"] += 2 * len(U) * (d + 1) * self.index.L * self.index.K
        self._saved, self.grad_out = None, None
        self.stats["update_s"] += time.perf_counter() - t0

    def dense_reference_flops(self, batch: int) -> float:
        m_p, d = self.weight.shape
        return 4 * batch * m_p * (d + self.a.shape[1]) + 2 * m_p * d


def wide_layers(model: nn.Module) -> list[ShiftedReLU]:
    return [mod for mod in model.modules() if isinstance(mod, ShiftedReLU)]


class NeuronSGD(torch.optim.Optimizer):
    """w_r ← w_r − η·∂ℓ/∂w_r on the rows that got a gradient; the index re-keys only those."""

    def __init__(self, model: nn.Module, lr: float):
        self.layers = wide_layers(model)
        super().__init__([p for p in model.parameters() if p.requires_grad], {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        lr = self.param_groups[0]["lr"]
        wide = {id(layer.weight): layer for layer in self.layers}
        for p in self.param_groups[0]["params"]:
            if p.grad is None:
                continue
            layer = wide.get(id(p))
            if layer is None:
                p.add_(p.grad, alpha=-lr)
            elif p.grad.is_sparse:
                g = p.grad.coalesce()                              # one row per touched neuron
                U = g.indices()[0]
                p.index_copy_(0, U, p.index_select(0, U) - lr * g.values())
                layer.neurons_changed(U)
            else:
                p.add_(p.grad, alpha=-lr)                          # the dense path's update
                layer.neurons_changed(torch.arange(len(p), device=p.device))


def gram(x: torch.Tensor, bi: torch.Tensor, r: torch.Tensor, a: torch.Tensor, m: int):
    """G = J Jᵀ over the active pairs, rows ordered (output c, input i); and U, r's slot in U."""
    U, slot = torch.unique(r, return_inverse=True)
    B, k = len(x), a.shape[1]
    A = torch.zeros(k * B, len(U), dtype=x.dtype, device=x.device)    # A_(c,i),u = a_uc·1[i u]
    rows = (torch.arange(k, device=x.device)[:, None] * B + bi).reshape(-1)
    A[rows, slot.repeat(k)] = a[r].T.reshape(-1)
    G = (A @ A.T) * (x @ x.T).repeat(k, k) / m
    return G, U, slot


class GaussNewton(torch.optim.Optimizer):
    """The paper's step: z = (JJᵀ + λI)⁻¹ e, W ← W − η Jᵀz on the active neurons only.

    Assumes ℓ = mean_i ½‖f_i − y_i‖², so e = B·∂ℓ/∂f; the Gram is summed over width shards.
    """

    def __init__(self, model: nn.Module, lr: float, damping: float):
        self.layers = wide_layers(model)
        self.damping = damping
        super().__init__([layer.weight for layer in self.layers], {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        lr = self.param_groups[0]["lr"]
        for layer in self.layers:
            if layer.grad_out is None:
                continue
            x, bi, r = layer.saved_pairs()
            e = layer.grad_out * len(x)                            # (B, k) residuals f − y
            G, U, slot = gram(x, bi, r, layer.a, layer.m)
            if layer.group is not None:
                collectives.all_reduce(G, layer.group)
            eye = torch.eye(len(G), dtype=G.dtype, device=G.device)
            z = torch.linalg.solve(G + self.damping * eye, e.T.reshape(-1))
            z = z.view(e.shape[1], len(x)).T                       # (B, k)
            coef = (layer.a[r] * z[bi]).sum(1) / math.sqrt(layer.m)
            delta = torch.zeros(len(U), x.shape[1], dtype=x.dtype, device=x.device)
            delta.index_add_(0, slot, coef[:, None] * x[bi])       # (Jᵀz)_r for r ∈ U
            layer.weight.index_add_(0, U, delta, alpha=-lr)
            kB, P, d = len(G), len(r), x.shape[1]
            layer.stats["flops"] += (2 * kB * kB * len(U) + 2 * len(x) ** 2 * d + kB ** 3 / 3
                                     + 2 * P * (e.shape[1] + d))
            layer.neurons_changed(U)


class Sublinear(Method[SublinearConfig]):
    """Finds active neurons with an index so a step touches few of the m; see the module doc.

    Width sharding: each rank keeps its slice of every wide layer (``task.shard_width``, so
    all ranks see the same batch) and updates only its own neurons, so the engine's gradient
    all-reduce is skipped.
    """
    owns_gradient_sync = True

    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        self.layers = wide_layers(model)
        if not self.layers:
            raise ValueError("sublinear: the model has no ShiftedReLU layer; build the wide "
                             "layer with raytrain_eff.methods.sublinear.ShiftedReLU "
                             "(the `wide` task does)")
        if ctx.distributed:
            if not getattr(getattr(ctx.task, "params", None), "shard_width", False):
                raise ValueError("sublinear on several ranks shards the width; set "
                                 "task.shard_width: true so every rank sees the same batch")
            for layer in self.layers:
                layer.shard(ctx.rank, ctx.world_size, ctx.group)
        self._ctx, self._stale = ctx, True
        return model

    def _build_indexes(self) -> None:
        c, X = self.config, None
        if c.index == "exact":
            inputs = getattr(self._ctx.task, "index_inputs", None)
            if inputs is None:
                raise ValueError("sublinear.index=exact indexes the training inputs: it needs a "
                                 "task with index_inputs() (the wide task); use index=lsh")
            X = inputs().to(self._ctx.device)
        for layer in self.layers:
            layer.use_index(c.index, X, fanout=c.fanout, slack=c.slack, tables=c.lsh_tables,
                            bits=c.lsh_bits, seed=getattr(self._ctx.task, "seed", 0))
        self._stale = False

    def make_optimizer(self, model: nn.Module, ctx: MethodContext):
        c = self.config
        if c.update == "gauss_newton":
            return GaussNewton(model, c.lr, c.damping)
        return NeuronSGD(model, c.lr)

    def before_step(self, step: int, ctx: MethodContext) -> None:
        if self._stale:                         # from the weights the run starts or resumes at
            self._build_indexes()
        for layer in self.layers:
            layer.reset_stats()
            layer.check_recall = self.config.index != "dense" and \
                step % self.config.recall_interval == 0

    def after_step(self, step: int, ctx: MethodContext) -> dict[str, float]:
        s = {key: sum(layer.stats[key] for layer in self.layers) for key in STAT_KEYS}
        width = sum(len(layer.weight) * layer.stats["batch"] for layer in self.layers)
        out = {keys.ACTIVE_FRACTION: s["pairs"] / max(width, 1),
               "neurons_updated": s["updated"], "neurons_rekeyed": s["rekeyed"],
               "candidates": s["candidates"], "query_seconds": s["query_s"],
               "update_seconds": s["update_s"]}
        if s["recall_true"]:
            out["index_recall"] = s["recall_hits"] / s["recall_true"]
        return out

    def step_flops(self, dense_flops: float, ctx: MethodContext) -> float:
        """Counted FLOPs of the wide layers plus the rest of the model's dense count."""
        ref = sum(layer.dense_reference_flops(int(layer.stats["batch"])) for layer in self.layers)
        return max(dense_flops - ref, 0.0) + sum(layer.stats["flops"] for layer in self.layers)

    def load_state_dict(self, state: dict) -> None:
        self._stale = True                      # the index follows the restored weights
