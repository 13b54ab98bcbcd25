"""Homogeneous views of the CIKG as symmetric-normalised sparse CSR adjacencies.

All views share one node index so that one embedding table serves them all::

    [ users | items | entities | interests ]
      0       U       U + I      U + I + E          (offsets in :attr:`GraphViews.offsets`)

A view keeps every node (nodes outside it are isolated rows of zeros) and holds

.. math::
    \\hat{A} = D^{-1/2} (A [+ I]) D^{-1/2}

as a ``torch.sparse_csr_tensor`` of shape ``[N, N]``. Edges are binary: a pair joined by several KG
relations counts once. :math:`\\hat{A}` is symmetric, so propagation can use it as its own transpose.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, Iterable, Optional, Tuple

import torch
from torch_geometric.data import HeteroData

from .cikg import HAS_INTEREST, INTERACTS, NODE_TYPES, kg_edge_types


class View(str, Enum):
    """The graphs CIKGRec propagates over."""

    COLLABORATIVE = "collaborative"  # user–item
    INTEREST = "interest"  # user–item + user–interest
    KG = "kg"  # user–item + item KG
    FULL = "full"  # everything: the CIKG


VIEW_PARTS = {
    View.COLLABORATIVE: ("interacts",),
    View.INTEREST: ("interacts", "interest"),
    View.KG: ("interacts", "kg"),
    View.FULL: ("interacts", "interest", "kg"),
}


def sparse_csr(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """A square sparse CSR ``[n_nodes, n_nodes]`` from valid parts (invariants not re-checked; torch's beta
    warning silenced): the one constructor every adjacency in cikg goes through."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, cols, values, (n_nodes, n_nodes), check_invariants=False)


def csr_from_entries(rows: torch.Tensor, cols: torch.Tensor, n_nodes: int,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Symmetric-normalised CSR :math:`D^{-1/2} A D^{-1/2}` ``[n_nodes, n_nodes]`` of the binary matrix whose
    entries ``(rows, cols)`` are given sorted row-major without duplicates (degrees are row counts)."""
    counts = torch.bincount(rows, minlength=n_nodes)
    degree = counts.to(dtype)
    inv_sqrt = degree.pow(-0.5)
    inv_sqrt[degree == 0] = 0.0
    crow = torch.zeros(n_nodes + 1, dtype=torch.long, device=rows.device)
    torch.cumsum(counts, 0, out=crow[1:])
    return sparse_csr(crow, cols, inv_sqrt[rows] * inv_sqrt[cols], n_nodes)


def normalized_adjacency(edge_index: torch.Tensor, n_nodes: int, self_loops: bool = False,
                         edge_weight_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Symmetric-normalised adjacency of an undirected graph as sparse CSR ``[n_nodes, n_nodes]``.

    Args:
        edge_index: ``[2, E]`` edges in either or both directions; duplicates and both directions are
            merged, so the result is binary before normalisation.
        self_loops: add :math:`I` before normalising.
    """
    src, dst = edge_index[0], edge_index[1]
    keys = torch.cat([src * n_nodes + dst, dst * n_nodes + src])
    if self_loops:
        nodes = torch.arange(n_nodes, device=edge_index.device)
        keys = torch.cat([keys, nodes * n_nodes + nodes])
    keys = torch.unique(keys)  # sorted: rows in order, columns sorted inside rows
    return csr_from_entries(keys // n_nodes, keys % n_nodes, n_nodes, edge_weight_dtype)


@dataclass
class GraphViews:
    """The homogeneous node index of a CIKG and its normalised views.

    Attributes:
        counts: nodes per type, in index order.
        offsets: first global index of each node type.
        edges: undirected edge list ``[2, E]`` (global ids) of each part: ``interacts``, ``interest``, ``kg``.
        adjacency: the normalised CSR adjacency of each requested :class:`View`.
        features: node features by node type (``graph[t].x``, rows = node ids of type ``t``), if attached.
        feature_blocks: node type -> ordered ``{block: width}`` of its features (from their provenance).
    """

    counts: Dict[str, int]
    offsets: Dict[str, int]
    edges: Dict[str, torch.Tensor]
    self_loops: bool = False
    adjacency: Dict[View, torch.Tensor] = field(default_factory=dict)
    features: Dict[str, torch.Tensor] = field(default_factory=dict)
    feature_blocks: Dict[str, Dict[str, int]] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return sum(self.counts.values())

    def node_slice(self, node_type: str) -> slice:
        start = self.offsets[node_type]
        return slice(start, start + self.counts[node_type])

    def edge_index(self, view: View) -> torch.Tensor:
        """The undirected edge list ``[2, E]`` of ``view`` (for edge dropout or PyG layers)."""
        parts = [self.edges[p] for p in VIEW_PARTS[View(view)] if p in self.edges]
        return torch.cat(parts, dim=1) if parts else torch.empty((2, 0), dtype=torch.long)

    def adj(self, view: View) -> torch.Tensor:
        """The normalised CSR adjacency of ``view`` (built once, then cached)."""
        view = View(view)
        if view not in self.adjacency:
            self.adjacency[view] = normalized_adjacency(self.edge_index(view), self.n_nodes, self.self_loops)
        return self.adjacency[view]

    def to(self, device: torch.device | str) -> "GraphViews":
        return GraphViews(dict(self.counts), dict(self.offsets), {k: v.to(device) for k, v in self.edges.items()},
                          self.self_loops, {k: v.to(device) for k, v in self.adjacency.items()},
                          {k: v.to(device) for k, v in self.features.items()},
                          {k: dict(v) for k, v in self.feature_blocks.items()})

    def __repr__(self) -> str:
        edges = ", ".join(f"{k}={v.size(1)}" for k, v in self.edges.items())
        return f"GraphViews(nodes={self.counts}, undirected_edges=({edges}), self_loops={self.self_loops})"


def build_views(graph: HeteroData, views: Optional[Iterable[View]] = tuple(View), self_loops: bool = False
                ) -> GraphViews:
    """Global node index, undirected edge lists and the normalised adjacency of each view in ``views``."""
    counts = {t: int(graph[t].num_nodes) for t in NODE_TYPES}
    offsets: Dict[str, int] = {}
    start = 0
    for node_type in NODE_TYPES:
        offsets[node_type] = start
        start += counts[node_type]

    def globalise(edge_type: Tuple[str, str, str]) -> torch.Tensor:
        e = graph[edge_type].edge_index
        return torch.stack([e[0] + offsets[edge_type[0]], e[1] + offsets[edge_type[2]]])

    edges = {"interacts": globalise(INTERACTS)}
    if HAS_INTEREST in graph.edge_types:
        edges["interest"] = globalise(HAS_INTEREST)
    kg_types = kg_edge_types(graph)
    if kg_types:
        edges["kg"] = torch.cat([globalise(et) for et in kg_types], dim=1)
    result = GraphViews(counts, offsets, edges, self_loops)
    for node_type in NODE_TYPES:  # node features attached by cikg.augment (graph[t].x), for the fusion layer
        if "x" in graph[node_type]:
            result.features[node_type] = graph[node_type].x
            provenance = getattr(graph, "meta", None) or {}
            blocks = provenance.get("features", {}).get(node_type, {}).get("blocks")
            if blocks:
                result.feature_blocks[node_type] = {str(k): int(v) for k, v in blocks.items()}
    for view in views or ():
        result.adj(view)
    return result
