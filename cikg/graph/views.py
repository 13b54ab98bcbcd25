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

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch_geometric.data import HeteroData

from ..checks import Choice
from .cikg import HAS_INTEREST, INTERACTS, NODE_TYPES, kg_edge_types


class View(Choice):
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


def sparse_csr(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n_nodes: int,
               n_cols: Optional[int] = None) -> torch.Tensor:
    """A sparse CSR ``[n_nodes, n_cols]`` (square by default) from valid parts (invariants not re-checked;
    torch's beta warning silenced): the one constructor every sparse matrix in cikg goes through."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        shape = (n_nodes, n_nodes if n_cols is None else n_cols)
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


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
    """The graph object every model is built from: the homogeneous node index of a CIKG, its edges, its typed
    KG triples, node features and the normalised adjacency of each view.

    Attributes:
        counts: nodes per type, in index order.
        offsets: first global index of each node type.
        edges: undirected edge list ``[2, E]`` (global ids) of each part: ``interacts``, ``interest``, ``kg``.
        self_loops: the self-loop setting :meth:`adj` uses when a caller does not name one.
        adjacency: normalised CSR adjacencies built so far, keyed by ``(view, self_loops)``.
        features: node features by node type (``graph[t].x``, rows = node ids of type ``t``), if attached.
        feature_blocks: node type -> ordered ``{block: width}`` of its features (from their provenance).
        kg_triples: the typed item KG ``LongTensor [3, T]`` (head, relation, tail), unique and sorted, in the
            *entity* space (item ``i`` is entity ``i``, global node ``offsets["item"] + i``; a non-item entity
            ``e`` is global node ``offsets["item"] + e``); ``None`` when the graph has no KG.
        relation_names: name of each relation id of ``kg_triples``.
        name: the dataset the graph was built from (for messages).
        dtype: the value type of the adjacencies :meth:`adj` builds (follows a model's ``.double()``).
    """

    counts: Dict[str, int]
    offsets: Dict[str, int]
    edges: Dict[str, torch.Tensor]
    self_loops: bool = False
    adjacency: Dict[Tuple[View, bool], torch.Tensor] = field(default_factory=dict)
    features: Dict[str, torch.Tensor] = field(default_factory=dict)
    feature_blocks: Dict[str, Dict[str, int]] = field(default_factory=dict)
    kg_triples: Optional[torch.Tensor] = None
    relation_names: List[str] = field(default_factory=list)
    name: str = "graph"
    dtype: torch.dtype = torch.float32

    @property
    def n_nodes(self) -> int:
        return sum(self.counts.values())

    @property
    def n_users(self) -> int:
        return self.counts["user"]

    @property
    def n_items(self) -> int:
        return self.counts["item"]

    @property
    def n_entities(self) -> int:
        """Items plus KG entities (the entity space of :attr:`kg_triples`)."""
        return self.counts["item"] + self.counts["entity"]

    @property
    def n_relations(self) -> int:
        return len(self.relation_names)

    @property
    def has_kg(self) -> bool:
        return self.kg_triples is not None and self.kg_triples.size(1) > 0 and "kg" in self.edges

    def interactions(self) -> torch.Tensor:
        """The train interactions ``LongTensor [2, n]`` as ``(user, item)`` with local item ids."""
        users, items = self.edges["interacts"]
        return torch.stack([users, items - self.offsets["item"]])

    def node_slice(self, node_type: str) -> slice:
        start = self.offsets[node_type]
        return slice(start, start + self.counts[node_type])

    def edge_index(self, view: View) -> torch.Tensor:
        """The undirected edge list ``[2, E]`` of ``view`` (for edge dropout or PyG layers)."""
        parts = [self.edges[p] for p in VIEW_PARTS[View(view)] if p in self.edges]
        return torch.cat(parts, dim=1) if parts else torch.empty((2, 0), dtype=torch.long)

    def adj(self, view: View, self_loops: Optional[bool] = None) -> torch.Tensor:
        """The normalised CSR adjacency of ``view`` (with ``self_loops``, default :attr:`self_loops`), built
        once and then cached."""
        key = (View(view), self.self_loops if self_loops is None else bool(self_loops))
        if key not in self.adjacency:
            device = self.edges["interacts"].device
            self.adjacency[key] = normalized_adjacency(self.edge_index(key[0]).to(device), self.n_nodes, key[1],
                                                       self.dtype)
        return self.adjacency[key]

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "GraphViews":
        """A copy with ``fn`` applied to every tensor (what ``nn.Module._apply`` does to a model's buffers)."""
        return dataclasses.replace(
            self, edges={k: fn(v) for k, v in self.edges.items()},
            adjacency={k: fn(v) for k, v in self.adjacency.items()},
            features={k: fn(v) for k, v in self.features.items()},
            feature_blocks={k: dict(v) for k, v in self.feature_blocks.items()},
            kg_triples=None if self.kg_triples is None else fn(self.kg_triples),
            counts=dict(self.counts), offsets=dict(self.offsets), relation_names=list(self.relation_names),
            dtype=fn(torch.zeros(0, dtype=self.dtype)).dtype)

    def to(self, device: torch.device | str) -> "GraphViews":
        return self.apply(lambda t: t.to(device))

    def __repr__(self) -> str:
        edges = ", ".join(f"{k}={v.size(1)}" for k, v in self.edges.items())
        kg = f", kg_triples={self.kg_triples.size(1)}/{self.n_relations} relations" if self.has_kg else ""
        return f"GraphViews(nodes={self.counts}, undirected_edges=({edges}){kg}, self_loops={self.self_loops})"


def _typed_kg_triples(graph: HeteroData, kg_types: List[Tuple[str, str, str]], n_items: int
                      ) -> Tuple[Optional[torch.Tensor], List[str]]:
    """The KG's ``(head, relation, tail)`` triples in the entity space, unique and sorted, from the graph's
    per-relation edge types (only the forward ones: ``kg_edge_types`` leaves out the ``rev_`` types)."""
    relation_names = list(getattr(graph, "meta", {}).get("relations", []))
    if not kg_types:
        return None, relation_names
    relation_id = {name: r for r, name in enumerate(relation_names)}
    parts = []
    for head_type, relation, tail_type in kg_types:
        e = graph[(head_type, relation, tail_type)].edge_index
        head = e[0] + (0 if head_type == "item" else n_items)
        tail = e[1] + (0 if tail_type == "item" else n_items)
        parts.append(torch.stack([head, torch.full_like(head, relation_id[relation]), tail]))
    return torch.unique(torch.cat(parts, dim=1), dim=1), relation_names


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
    kg_triples, relation_names = _typed_kg_triples(graph, kg_types, counts["item"])
    result = GraphViews(counts, offsets, edges, self_loops, kg_triples=kg_triples, relation_names=relation_names,
                        name=str(getattr(graph, "meta", {}).get("dataset", "graph")))
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
