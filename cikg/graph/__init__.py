"""The CIKG as a PyG ``HeteroData``, its normalised homogeneous views, networkx export and save/load."""
from .cikg import (
                   HAS_INTEREST,
                   INTERACTS,
                   NODE_TYPES,
                   attach_features,
                   build_cikg,
                   graph_stats,
                   kg_edge_types,
                   load_graph,
                   node_text,
                   reverse_edge_type,
                   save_graph,
                   to_networkx,
)
from .views import (
                   VIEW_PARTS,
                   GraphViews,
                   View,
                   build_views,
                   csr_from_entries,
                   normalized_adjacency,
                   sparse_csr,
)

__all__ = [
    "HAS_INTEREST", "INTERACTS", "NODE_TYPES", "VIEW_PARTS", "GraphViews", "View", "attach_features", "build_cikg",
    "build_views", "csr_from_entries", "graph_stats", "kg_edge_types", "load_graph", "node_text",
    "normalized_adjacency", "sparse_csr",
    "reverse_edge_type", "save_graph", "to_networkx",
]
