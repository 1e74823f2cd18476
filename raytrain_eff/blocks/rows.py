"""Rows a_i of one rank, dense or CSR: the few products the VR solvers need; the ``erm``
task builds its sparse features with them."""

from __future__ import annotations

import torch


class DenseRows:
    def __init__(self, A: torch.Tensor):
        self.A = A  # (n_local, d)
        self.n, self.d = A.shape
        self.nnz = A.numel()

    def matvec(self, x):
        return self.A @ x

    def rmatvec(self, c):
        return c @ self.A

    def sq_norms(self):
        return (self.A * self.A).sum(1)

    def take(self, rows):
        return DenseRows(self.A.index_select(0, rows))

    def split(self, counts):
        return [DenseRows(part) for part in self.A.split(counts)]


class CSRRows:
    """Compressed sparse rows; torch's CSR kernel for Ax, a column-sorted copy for Aᵀc on big
    blocks (``keep_transpose``) and a scatter over the entries on small ones (batches)."""

    def __init__(
        self,
        crow: torch.Tensor,
        col: torch.Tensor,
        val: torch.Tensor,
        d: int,
        rowid: torch.Tensor | None = None,
    ):
        self.crow, self.col, self.val, self.d = crow, col, val, d
        self.n, self.nnz = crow.shape[0] - 1, val.shape[0]
        self.S = torch.sparse_csr_tensor(crow, col, val, (self.n, d), check_invariants=False)
        # row of each stored entry: Aᵀc = Σ_e val_e·c[rowid_e]·e_{col_e}
        self.rowid = torch.arange(self.n).repeat_interleave(crow.diff()) if rowid is None else rowid
        self.T: torch.Tensor | None = None  # Aᵀ in CSR form, once keep_transpose() ran

    @staticmethod
    def from_torch(S: torch.Tensor) -> CSRRows:
        return CSRRows(S.crow_indices(), S.col_indices(), S.values(), S.shape[1])

    def keep_transpose(self) -> CSRRows:
        """Store Aᵀ in CSR form (2x memory) so full passes use the CSR kernel both ways."""
        order = torch.argsort(self.col, stable=True)
        crow = torch.zeros(self.d + 1, dtype=self.crow.dtype)
        torch.cumsum(torch.bincount(self.col, minlength=self.d), 0, out=crow[1:])
        self.T = torch.sparse_csr_tensor(
            crow, self.rowid[order], self.val[order], (self.d, self.n), check_invariants=False
        )
        return self

    def matvec(self, x):
        return self.S @ x

    def rmatvec(self, c):
        if self.T is not None:
            return self.T @ c
        return torch.zeros(self.d, dtype=c.dtype).index_add_(
            0, self.col, self.val * c.index_select(0, self.rowid)
        )

    def sq_norms(self):
        return torch.zeros(self.n, dtype=self.val.dtype).index_add_(
            0, self.rowid, self.val * self.val
        )

    def take(self, rows):
        # index_select, not advanced indexing: an order of magnitude faster on CPU
        starts = self.crow.index_select(0, rows)
        lens = self.crow.index_select(0, rows + 1) - starts
        crow = torch.zeros(rows.shape[0] + 1, dtype=self.crow.dtype)
        torch.cumsum(lens, 0, out=crow[1:])
        rowid = torch.arange(rows.shape[0]).repeat_interleave(lens)
        # position of each kept entry in the source: its row's start + offset within the row
        pos = torch.arange(int(crow[-1])) + (starts - crow[:-1]).index_select(0, rowid)
        return CSRRows(
            crow, self.col.index_select(0, pos), self.val.index_select(0, pos), self.d, rowid
        )

    def split(self, counts):
        bounds = torch.tensor([0] + counts).cumsum(0).tolist()
        edges = self.crow[bounds].tolist()
        return [
            CSRRows(
                self.crow[a : e + 1] - ea,
                self.col[ea:ee],
                self.val[ea:ee],
                self.d,
                self.rowid[ea:ee] - a,
            )
            for a, e, ea, ee in zip(bounds[:-1], bounds[1:], edges[:-1], edges[1:], strict=True)
        ]


def as_rows(X: torch.Tensor):
    """Dense or sparse-CSR features -> float64 rows."""
    if X.layout == torch.sparse_csr:
        return CSRRows(X.crow_indices(), X.col_indices(), X.values().double(), X.shape[1])
    return DenseRows(X.double())


def cat_rows(parts: list):
    """Concatenate row blocks (the batches of one shard pass)."""
    if isinstance(parts[0], DenseRows):
        return DenseRows(torch.cat([p.A for p in parts]))
    offsets = torch.tensor([0] + [p.nnz for p in parts[:-1]]).cumsum(0)
    crow = torch.cat(
        [parts[0].crow[:1]] + [p.crow[1:] + o for p, o in zip(parts, offsets, strict=True)]
    )
    return CSRRows(
        crow, torch.cat([p.col for p in parts]), torch.cat([p.val for p in parts]), parts[0].d
    )
