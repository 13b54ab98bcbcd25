"""LightGCN-style propagation over a precomputed symmetric normalised sparse adjacency.

LightGCN (He et al., SIGIR 2020, arXiv 2002.02126) propagates embeddings without weights or
non-linearities and averages the layer outputs:

.. math::
    X^{(k+1)} = \\hat{A} X^{(k)}, \\qquad
    Z = \\sum_{k=0}^{K} w_k X^{(k)}, \\quad w_k = \\tfrac{1}{K+1} \\text{ by default},

where :math:`\\hat{A} = D^{-1/2} (A [+ I]) D^{-1/2}` is the normalised adjacency of a view
(:meth:`cikg.graph.GraphViews.adj`). :math:`\\hat{A}` is computed once and kept as sparse CSR; each layer is
one SpMM. Because :math:`\\hat{A}` is symmetric, the gradient of :math:`\\hat{A} X` with respect to
:math:`X` is :math:`\\hat{A}^\\top G = \\hat{A} G`: :class:`SymmetricSpMM` uses that instead of torch's
generic sparse backward (which transposes and is several times slower than the forward here).

PyG's :class:`torch_geometric.nn.LGConv` computes the same layer from an ``edge_index``; it renormalises and
scatters on every call, which is an order of magnitude slower on a CIKG (see ``docs/benchmarks.md``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import csr_from_entries, sparse_csr
from .rng import uniform_random

if TYPE_CHECKING:  # pragma: no cover
    pass

#: ``perturb(x_k, k) -> x_k'``: applied to each layer output ``k >= 1`` before it feeds the next layer.
PerturbHook = Callable[[Tensor, int], Tensor]


class SparseMM(torch.autograd.Function):
    """:math:`Y = A X` for a fixed sparse ``adj`` :math:`A` ``[N, N]`` and dense ``x`` ``[N, d]``, given
    ``adj_t`` :math:`= A^\top` (the same tensor when :math:`A` is symmetric).

    The backward pass is :math:`\\partial L / \\partial X = A^\top G`, one more SpMM with a CSR matrix, instead
    of torch's generic sparse backward (which transposes per call). No gradient flows to ``adj``.
    """

    @staticmethod
    def forward(ctx, adj: Tensor, adj_t: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(adj_t)
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (adj_t,) = ctx.saved_tensors
        return None, None, torch.sparse.mm(adj_t, grad.contiguous())


class SymmetricSpMM:
    r""":math:`Y = \hat{A} X` for a *symmetric* ``adj``: :class:`SparseMM` with ``adj`` as its own transpose."""

    @staticmethod
    def apply(adj: Tensor, x: Tensor) -> Tensor:
        return SparseMM.apply(adj, adj, x)


def spmm(adj: Tensor, x: Tensor, adj_t: Optional[Tensor] = None) -> Tensor:
    """``adj @ x`` with the one-SpMM backward when ``x`` needs grad; ``adj_t`` is ``adj``'s transpose
    (default: ``adj`` itself, for the symmetric normalised views)."""
    if x.requires_grad and torch.is_grad_enabled():
        return SparseMM.apply(adj, adj if adj_t is None else adj_t, x)
    return torch.sparse.mm(adj, x)


def _csr_of_entries(rows: Tensor, cols: Tensor, values: Tensor, n_rows: int, n_cols: int) -> Tensor:
    """CSR ``[n_rows, n_cols]`` holding ``values`` at the distinct positions ``(rows, cols)``, in any order."""
    order = torch.argsort(rows, stable=True)
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=n_rows), 0, out=crow[1:])
    return sparse_csr(crow, cols[order], values[order], n_rows, n_cols)


class SparseMatrix:
    """A sparse ``M`` ``[n_rows, n_cols]`` with ``M[rows[e], cols[e]] = values[e]``, built once from its
    entries (which may change per batch, e.g. under node dropout) and applied as ``M @ x``:
    ``Y[r] = sum_e values[e] * x[cols[e]]`` over the entries ``e`` of row ``r``.

    The same sum as ``zeros.index_add(0, rows, values[:, None] * x[cols])`` without the ``[n_entries, d]``
    messages: one CSR SpMM forward and one with the transpose (built alongside) backward
    (:class:`SparseMM`). No gradient flows to ``values``.

    Shapes:
        ``rows``, ``cols``, ``values``: ``[n_entries]``; ``x``: ``[n_cols, d]``; ``M @ x``: ``[n_rows, d]``.
    """

    def __init__(self, rows: Tensor, cols: Tensor, values: Tensor, n_rows: int, n_cols: int):
        self.shape = (n_rows, n_cols)
        self.matrix = _csr_of_entries(rows, cols, values, n_rows, n_cols)
        self.transpose = _csr_of_entries(cols, rows, values, n_cols, n_rows)

    def __matmul__(self, x: Tensor) -> Tensor:
        if x.size(0) != self.shape[1]:
            raise ValueError(f"cannot multiply a {list(self.shape)} sparse matrix by {list(x.shape)}")
        matrix, transpose = self.matrix, self.transpose
        if matrix.dtype != x.dtype:
            matrix, transpose = matrix.to(x.dtype), transpose.to(x.dtype)
        if x.requires_grad and torch.is_grad_enabled():
            return SparseMM.apply(matrix, transpose, x)
        return torch.sparse.mm(matrix, x)

    def __repr__(self) -> str:
        return f"SparseMatrix(shape={list(self.shape)}, entries={int(self.matrix.values().numel())})"


def simgcl_noise(eps: float, generator: Optional[torch.Generator] = None) -> PerturbHook:
    """SimGCL's uniform noise (Yu et al., SIGIR 2022): :math:`x + \\mathrm{sign}(x) \\odot
    \\frac{\\Delta}{\\lVert \\Delta \\rVert_2} \\epsilon`, :math:`\\Delta \\sim U[0,1)^{d}` per row."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")

    def perturb(x: Tensor, layer: int) -> Tensor:
        noise = uniform_random(x.shape, x.device, generator, x.dtype)
        return x + torch.sign(x) * F.normalize(noise, dim=-1) * eps

    return perturb


class LGPropagation(nn.Module):
    """``num_layers`` parameter-free LightGCN layers and the weighted sum of their outputs (layer 0 included).

    Args:
        num_layers: :math:`K`, the number of SpMM layers (``0`` returns ``w_0 x``).
        layer_weights: :math:`w_0..w_K` (``K + 1`` values); default :math:`1/(K+1)` each (the mean).
        message_dropout: dropout on the input embeddings before propagation (training only), as in the
            CIKGRec release.

    Shapes:
        ``x``: ``[N, d]``; ``adj``: sparse ``[N, N]`` (symmetric normalised); output ``[N, d]``.
    """

    def __init__(self, num_layers: int = 3, layer_weights: Optional[Sequence[float]] = None,
                 message_dropout: float = 0.0):
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        if not 0.0 <= message_dropout < 1.0:
            raise ValueError(f"message_dropout must be in [0, 1), got {message_dropout}")
        if layer_weights is None:
            layer_weights = [1.0 / (num_layers + 1)] * (num_layers + 1)
        if len(layer_weights) != num_layers + 1:
            raise ValueError(f"layer_weights needs {num_layers + 1} values (layers 0..{num_layers}), "
                             f"got {len(layer_weights)}")
        self.num_layers = num_layers
        self.layer_weights = [float(w) for w in layer_weights]
        self.message_dropout = message_dropout

    def reset_parameters(self) -> None:
        """Nothing to reset: the layer has no parameters."""

    def forward(self, x: Tensor, adj: Tensor, perturb: Optional[PerturbHook] = None) -> Tensor:
        if self.message_dropout > 0.0 and self.training:
            x = F.dropout(x, self.message_dropout, training=True)
        out = x * self.layer_weights[0]
        for k in range(1, self.num_layers + 1):
            x = spmm(adj, x)
            if perturb is not None:
                x = perturb(x, k)
            out = out + x * self.layer_weights[k]
        return out

    def __repr__(self) -> str:
        weights = "mean" if len(set(self.layer_weights)) == 1 else self.layer_weights
        return (f"{type(self).__name__}(num_layers={self.num_layers}, weights={weights}, "
                f"message_dropout={self.message_dropout})")


class EdgeDropout:
    """Drop undirected edges of a symmetric adjacency and renormalise, without sorting.

    The structure of ``adj`` (its non-zeros, each mapped to its undirected edge) is analysed once; each
    :meth:`sample` draws one keep/drop decision per undirected edge, so both directions go together, keeps
    self-loops, filters the CSR entries in place (order is preserved, so no re-sort) and renormalises with
    the new degrees: :math:`O(\\mathrm{nnz})` vectorised work. Call it once per epoch, not per batch.

    Args:
        adj: a symmetric sparse CSR adjacency ``[N, N]`` (values are ignored: the graph is taken as binary).
    """

    def __init__(self, adj: Tensor):
        adj = adj.to_sparse_csr() if adj.layout != torch.sparse_csr else adj
        self.n_nodes = adj.size(0)
        self.dtype = adj.values().dtype
        crow, self.cols = adj.crow_indices(), adj.col_indices()
        self.rows = torch.repeat_interleave(torch.arange(self.n_nodes, device=crow.device), crow.diff())
        self.self_loop = self.rows == self.cols
        low, high = torch.minimum(self.rows, self.cols), torch.maximum(self.rows, self.cols)
        _, self.edge_id = torch.unique(low * self.n_nodes + high, return_inverse=True)
        self.n_edges = int(self.edge_id.max()) + 1 if self.edge_id.numel() else 0

    def sample(self, p: float, generator: Optional[torch.Generator] = None) -> Tensor:
        """A normalised CSR adjacency with each undirected edge dropped with probability ``p``."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"edge dropout p must be in [0, 1), got {p}")
        keep_edge = uniform_random((self.n_edges,), self.rows.device, generator) >= p
        keep = keep_edge[self.edge_id] | self.self_loop
        return csr_from_entries(self.rows[keep], self.cols[keep], self.n_nodes, self.dtype)

    def __repr__(self) -> str:
        return f"EdgeDropout(nodes={self.n_nodes}, undirected_edges={self.n_edges})"


def drop_edges(adj: Tensor, p: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """One-off :class:`EdgeDropout` sample (build an :class:`EdgeDropout` to resample the same graph)."""
    return EdgeDropout(adj).sample(p, generator)
