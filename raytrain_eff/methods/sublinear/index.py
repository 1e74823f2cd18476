"""Active-neuron indexes for ``blocks.shifted_relu.ShiftedReLU`` (arXiv 2208.04508).

``MaxTreeIndex`` is exact: per training input a fan-out-f max-tree over the keys
⟨w_r, x_i⟩, maintained for changed neurons only. ``HyperplaneLSH`` is approximate:
random-hyperplane hashing of the lifted w̃_r = [w_r; √(M² − ‖w_r‖²)], rehashing touched
neurons only; its misses are measured as recall. ``use_index`` gives a layer one of them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from raytrain_eff.blocks.shifted_relu import ShiftedReLU


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
        self.X, self.f, self.slack = X, fanout, slack  # X: (n, d) indexed inputs
        self.x_max = float(X.norm(dim=1).max()) if len(X) else 0.0
        self.W_snap = W.detach().clone()  # w̃: (m, d)
        self.m = W.shape[0]
        self.levels = self._build(self.W_snap @ X.T)

    def _build(self, keys: torch.Tensor) -> list[torch.Tensor]:
        levels: list[torch.Tensor] = []
        cur = keys  # (m, n)
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
            key = level.view(-1).index_select(0, node * n + rows[bi])  # flat gather
            keep = key > thr
            reads += len(node)
            bi, node, key = bi[keep], node[keep], key[keep]
        return bi, node, key, reads

    # -- ShiftedReLU's NeuronIndex -------------------------------------------------------------
    def answers(self, rows: torch.Tensor | None) -> bool:
        return rows is not None  # it knows only the inputs it indexed

    def candidates(self, x: torch.Tensor, rows: torch.Tensor | None, b: float):
        assert rows is not None  # the layer asks only when ``answers(rows)``
        bi, r, h, reads = self.query(rows, b)
        return bi, r, (h if self.slack == 0 else None), reads, float(reads)  # ε = 0: exact keys

    def rekey(self, W: torch.Tensor, U: torch.Tensor) -> tuple[int, float]:
        rekeyed, writes = self.update(W, U)
        return rekeyed, 2.0 * len(self.X) * rekeyed * W.shape[1] + writes

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
            upper.index_copy_(
                0, idx, lower.index_select(0, kids).view(-1, self.f, len(self.X)).amax(1)
            )
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
        self.M = float(W.detach().norm(dim=1).max()) * 1.5  # room for weights to grow
        self.weights = 2 ** torch.arange(bits, device=W.device)
        self.codes = self._hash(self._lift(W.detach()))  # (L, m)
        self.cap = 0
        self.slots = self.fill = self.where = torch.empty(0)  # set by _rebuild_all
        self._rebuild_all()

    def _lift(self, W: torch.Tensor) -> torch.Tensor:
        tail = (self.M**2 - (W * W).sum(1)).clamp_min(0).sqrt()
        return torch.cat([W, tail[:, None]], dim=1)

    def _hash(self, V: torch.Tensor) -> torch.Tensor:
        bits = (V @ self.planes.T > 0).view(len(V), self.L, self.K).long()
        return (bits * self.weights).sum(-1).T.contiguous()  # (L, len(V))

    def _rebuild_all(self) -> None:
        sizes = torch.stack([torch.bincount(c, minlength=2**self.K) for c in self.codes])
        self.cap = max(4, 2 * int(sizes.max()))
        dev = self.codes.device
        self.slots = torch.full((self.L, 2**self.K, self.cap), -1, dtype=torch.long, device=dev)
        self.fill = torch.zeros(self.L, 2**self.K, dtype=torch.long, device=dev)
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

    # -- ShiftedReLU's NeuronIndex -------------------------------------------------------------
    def answers(self, rows: torch.Tensor | None) -> bool:
        return True

    def candidates(self, x: torch.Tensor, rows: torch.Tensor | None, b: float):
        bi, r, reads = self.query(x)  # candidates only: the layer verifies them
        hashing = 2.0 * len(x) * (x.shape[1] + 1) * self.L * self.K
        return bi, r, None, reads, reads + hashing

    def rekey(self, W: torch.Tensor, U: torch.Tensor) -> tuple[int, float]:
        return self.update(W, U), 2.0 * len(U) * (W.shape[1] + 1) * self.L * self.K

    def update(self, W: torch.Tensor, U: torch.Tensor) -> int:
        """Rehash touched neurons U; returns how many changed bucket in some table."""
        new, old = self._hash(self._lift(W[U])), self.codes[:, U]  # (L, |U|) each
        moved = new != old
        self.codes[:, U] = new
        for t in range(self.L):
            u = U[moved[t]]
            self.slots[t, old[t, moved[t]], self.where[t, u]] = -1
            if not self._insert(t, u, new[t, moved[t]]):  # a bucket is full: compact all
                self._rebuild_all()
                break
        return int(moved.any(0).sum())

    def query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Candidate pairs (batch position, neuron) sharing a bucket; and the slots read."""
        q = self._hash(torch.cat([x, torch.zeros_like(x[:, :1])], dim=1))  # (L, B)
        cand = self.slots[torch.arange(self.L, device=x.device)[:, None], q]  # (L, B, cap)
        bi = torch.arange(len(x), device=x.device)[None, :, None].expand_as(cand)
        ok = cand >= 0
        pair = torch.unique(bi[ok] * self.m + cand[ok])
        return pair // self.m, pair % self.m, cand.numel()


def use_index(
    layer: ShiftedReLU,
    mode: str,
    X: torch.Tensor | None = None,
    *,
    fanout: int = 8,
    slack: float = 0.0,
    tables: int = 8,
    bits: int = 6,
    seed: int = 0,
) -> None:
    """Give ``layer`` a 'dense' (none), 'exact' (indexing inputs X) or 'lsh' index, built
    from its weights now."""
    W = layer.weight.detach()
    if mode == "exact":
        if X is None:
            raise ValueError("the exact index needs the inputs X it indexes")
        layer.index = MaxTreeIndex(X.to(W), W, fanout, slack)
    elif mode == "lsh":
        layer.index = HyperplaneLSH(W, tables, bits, seed + layer.offset)
    elif mode == "dense":
        layer.index = None
    else:
        raise ValueError(f"index mode '{mode}': choose 'dense', 'exact' or 'lsh'")
