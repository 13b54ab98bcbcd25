"""The Collaborative Interest Knowledge Graph as a :class:`torch_geometric.data.HeteroData`.

Node types: ``user``, ``item``, ``entity`` (KG entities that are not items), ``interest``.
Edge types (each with its reverse, named ``rev_<relation>`` as PyG's ``ToUndirected`` does):

* ``(user, interacts, item)`` — train interactions only;
* ``(item|entity, <relation>, item|entity)`` — one type per KG relation and end-point types, the relation
  named from ``relation_list.txt`` (``author``, ``genre`` ...);
* ``(user, has_interest, interest)``.

Every node type carries ``num_nodes`` and human text where the dataset has it (``title`` for items,
``name`` for entities, ``label`` for interests); ``x`` slots are filled by :mod:`cikg.augment` through
:func:`attach_features`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import pandas as pd
import torch
from torch_geometric.data import HeteroData

from .._io import torch_save_atomic
from ..data import Dataset
from ..errors import GraphError

logger = logging.getLogger(__name__)

NODE_TYPES = ("user", "item", "entity", "interest")
INTERACTS = ("user", "interacts", "item")
HAS_INTEREST = ("user", "has_interest", "interest")
GRAPH_FORMAT_VERSION = 1
EdgeType = Tuple[str, str, str]


def reverse_edge_type(edge_type: EdgeType) -> EdgeType:
    src, rel, dst = edge_type
    return (dst, rel[4:] if rel.startswith("rev_") else f"rev_{rel}", src)


def _add_edges(graph: HeteroData, edge_type: EdgeType, edge_index: torch.Tensor) -> None:
    graph[edge_type].edge_index = edge_index.contiguous()
    graph[reverse_edge_type(edge_type)].edge_index = edge_index.flip(0).contiguous()


def build_cikg(dataset: Dataset, *, include_kg: bool = True, include_interests: bool = True) -> HeteroData:
    """Build the CIKG of ``dataset`` (train interactions only; valid and test never enter the graph).

    Args:
        include_kg: add the item KG (entities and relation edges) when the dataset has one.
        include_interests: add interest nodes and user–interest edges when the dataset has them.

    Returns:
        A ``HeteroData`` whose node counts equal the dataset's: ``graph['user'].num_nodes == n_users``,
        ``graph['item'].num_nodes == n_items``, ``graph['entity'].num_nodes == n_entities - n_items``,
        ``graph['interest'].num_nodes == n_interests``.
    """
    graph = HeteroData()
    n_items = dataset.n_items
    counts = {"user": dataset.n_users, "item": n_items,
              "entity": dataset.n_kg_entities if include_kg else 0,
              "interest": dataset.n_interests if include_interests else 0}
    for node_type, n in counts.items():
        graph[node_type].num_nodes = n
    graph["user"].original_id = list(dataset.user_ids)
    graph["item"].original_id = list(dataset.item_ids)
    graph["item"].title = list(dataset.item_text)
    _add_edges(graph, INTERACTS, dataset.train)

    relation_names: List[str] = []
    if include_kg and dataset.has_kg:
        relation_names = list(dataset.relation_names)
        graph["entity"].name = list(dataset.entity_text[n_items:])
        graph["entity"].original_id = list(dataset.entity_ids[n_items:])
        head, rel, tail = dataset.kg
        head_is_item, tail_is_item = head < n_items, tail < n_items
        # one key per (relation, head type, tail type): group all triples in one sort, no per-edge loop
        group = rel * 4 + head_is_item.long() * 2 + tail_is_item.long()
        order = torch.argsort(group, stable=True)
        keys, sizes = torch.unique_consecutive(group[order], return_counts=True)
        for key, chunk in zip(keys.tolist(), torch.split(order, sizes.tolist())):
            r, h_item, t_item = key // 4, bool(key & 2), bool(key & 1)
            src = head[chunk] if h_item else head[chunk] - n_items
            dst = tail[chunk] if t_item else tail[chunk] - n_items
            edge_type = ("item" if h_item else "entity", relation_names[r], "item" if t_item else "entity")
            _add_edges(graph, edge_type, torch.stack([src, dst]))
    if include_interests and dataset.has_interests:
        _add_edges(graph, HAS_INTEREST, dataset.user_interest)
        graph["interest"].original_id = list(dataset.interest_ids)
        if dataset.interest_labels is not None:
            graph["interest"].label = list(dataset.interest_labels)
    graph.meta = {
        "format_version": GRAPH_FORMAT_VERSION, "dataset": dataset.name,
        "relations": relation_names, "has_kg": bool(include_kg and dataset.has_kg),
        "has_interests": bool(include_interests and dataset.has_interests),
        "split": dataset.meta.get("split", {}), "interests_source": dataset.meta.get("interests_source", ""),
        "features": {},
    }
    return graph


def kg_edge_types(graph: HeteroData) -> List[EdgeType]:
    """The forward KG edge types (no reverse, no user edges)."""
    relations = set(graph.meta["relations"])
    return [et for et in graph.edge_types if et[1] in relations]


def attach_features(graph: HeteroData, node_type: str, x: torch.Tensor, provenance: Dict[str, Any]) -> HeteroData:
    """Set ``graph[node_type].x = x`` and record where it came from (method, model, template, encoder)."""
    if node_type not in NODE_TYPES:
        raise GraphError(f"unknown node type {node_type!r}; expected one of {NODE_TYPES}")
    n = graph[node_type].num_nodes
    if x.dim() != 2 or x.size(0) != n:
        raise GraphError(f"features for {node_type!r} must have shape [{n}, dim], got {tuple(x.shape)}")
    graph[node_type].x = x.float()
    graph.meta["features"][node_type] = dict(provenance, dim=int(x.size(1)))
    return graph


def graph_stats(graph: HeteroData) -> pd.DataFrame:
    """Node and edge counts per type (one row each), as a frame with ``kind``, ``type`` and ``count``."""
    rows = [("node", t, int(graph[t].num_nodes)) for t in NODE_TYPES]
    rows += [("edge", "__".join(et), int(graph[et].edge_index.size(1))) for et in graph.edge_types]
    return pd.DataFrame(rows, columns=["kind", "type", "count"])


# ---------------------------------------------------------------------------------------------- save/load
_NODE_LISTS = ("original_id", "title", "name", "label")


def save_graph(graph: HeteroData, path: Union[str, Path]) -> Path:
    """Save ``graph`` as plain tensors, lists and metadata (loadable with ``weights_only=True``)."""
    payload: Dict[str, Any] = {"meta": graph.meta, "nodes": {}, "edges": {}}
    for node_type in graph.node_types:
        store = graph[node_type]
        payload["nodes"][node_type] = {
            "num_nodes": int(store.num_nodes),
            **{k: store[k] for k in _NODE_LISTS if k in store},
            **({"x": store.x} if "x" in store else {}),
        }
    for edge_type in graph.edge_types:
        payload["edges"]["__".join(edge_type)] = graph[edge_type].edge_index
    path = Path(path)
    torch_save_atomic(payload, path)
    return path


def load_graph(path: Union[str, Path]) -> HeteroData:
    """Load a graph written by :func:`save_graph`."""
    path = Path(path)
    if not path.exists():
        raise GraphError(f"{path}: no such graph file")
    try:
        payload = torch.load(path, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt/foreign files
        raise GraphError(f"{path}: not a cikg graph file ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("meta", {}).get("format_version") != GRAPH_FORMAT_VERSION:
        raise GraphError(f"{path}: not a cikg graph file of format version {GRAPH_FORMAT_VERSION}")
    graph = HeteroData()
    for node_type, store in payload["nodes"].items():
        for key, value in store.items():
            setattr(graph[node_type], key, value)
    for key, edge_index in payload["edges"].items():
        graph[tuple(key.split("__"))].edge_index = edge_index
    graph.meta = payload["meta"]
    return graph


def node_text(graph: HeteroData, node_type: str, index: int) -> str:
    """A readable label for one node: title, name or label when known, else ``<type> <id>``."""
    store = graph[node_type]
    for key in ("title", "name", "label"):
        if key in store and store[key][index]:
            return str(store[key][index])
    if "original_id" in store:
        return f"{node_type} {store['original_id'][index]}"
    return f"{node_type} {index}"


def to_networkx(graph: HeteroData, user: Optional[int] = None, max_items: Optional[int] = None):
    """Export to a ``networkx.MultiDiGraph`` with ``node_type``, ``label`` and ``relation`` attributes.

    Nodes are ``(node_type, index)`` tuples. With ``user``, only that user's neighbourhood is exported:
    the user, its train items (the first ``max_items`` when given), their KG entities, and its interests.
    Reverse edges are omitted (the graph is undirected in meaning).
    """
    import networkx as nx

    keep: Optional[Dict[str, torch.Tensor]] = None
    if user is not None:
        if not 0 <= user < graph["user"].num_nodes:
            raise GraphError(f"unknown user {user} (users are 0..{graph['user'].num_nodes - 1})")
        ei = graph[INTERACTS].edge_index
        items = ei[1, ei[0] == user]
        if max_items is not None:
            items = items[:max_items]
        keep = {"user": torch.tensor([user]), "item": items, "entity": torch.empty(0, dtype=torch.long),
                "interest": torch.empty(0, dtype=torch.long)}
        item_mask = torch.zeros(graph["item"].num_nodes, dtype=torch.bool)
        item_mask[items] = True
        for et in kg_edge_types(graph):
            if et[0] == "item" and et[2] == "entity":
                e = graph[et].edge_index
                keep["entity"] = torch.cat([keep["entity"], e[1, item_mask[e[0]]]])
        if HAS_INTEREST in graph.edge_types:
            e = graph[HAS_INTEREST].edge_index
            keep["interest"] = e[1, e[0] == user]
        keep = {k: torch.unique(v) for k, v in keep.items()}
    nx_graph = nx.MultiDiGraph(dataset=graph.meta.get("dataset", ""))
    masks: Dict[str, torch.Tensor] = {}
    for node_type in NODE_TYPES:
        n = graph[node_type].num_nodes
        ids = torch.arange(n) if keep is None else keep[node_type]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[ids] = True
        masks[node_type] = mask
        nx_graph.add_nodes_from(((node_type, i), {"node_type": node_type, "label": node_text(graph, node_type, i)})
                                for i in ids.tolist())
    for edge_type in graph.edge_types:
        if edge_type[1].startswith("rev_"):
            continue
        src_t, rel, dst_t = edge_type
        e = graph[edge_type].edge_index
        e = e[:, masks[src_t][e[0]] & masks[dst_t][e[1]]]
        nx_graph.add_edges_from(((src_t, s), (dst_t, d), {"relation": rel}) for s, d in e.t().tolist())
    return nx_graph
