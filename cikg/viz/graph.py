"""Degree distributions of a CIKG ``HeteroData`` per node type."""
from __future__ import annotations

from typing import Dict, Optional

import matplotlib.pyplot as plt
import torch

from ._common import PathLike, finish, thousands


def plot_degrees(graph, path: Optional[PathLike] = None):
    """Degree distribution (log-log) of each node type of a CIKG ``HeteroData``.

    A node's degree counts its edges over every relation once (``rev_*`` reverse edges are skipped);
    isolated nodes cannot show on a log axis, so the legend gives their number.
    """
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    degree: Dict[str, torch.Tensor] = {t: torch.zeros(graph[t].num_nodes, dtype=torch.long) for t in graph.node_types}
    for src, rel, dst in graph.edge_types:
        if rel.startswith("rev_"):
            continue
        e = graph[src, rel, dst].edge_index
        degree[src] += torch.bincount(e[0], minlength=graph[src].num_nodes)
        degree[dst] += torch.bincount(e[1], minlength=graph[dst].num_nodes)
    for node_type, values in degree.items():
        connected = values[values > 0]
        isolated = values.numel() - connected.numel()
        label = f"{node_type} ({thousands(values.numel())} nodes" + (f", {thousands(isolated)} isolated)" if isolated
                                                                     else ")")
        if connected.numel():
            counts = torch.bincount(connected)
            ks = torch.nonzero(counts).flatten()
            ax.loglog(ks.numpy(), counts[ks].numpy(), ".", label=label)
        else:
            ax.plot([], [], ".", label=label)
    ax.set_xlabel("degree (edges over all relations, reverse edges not counted)")
    ax.set_ylabel("number of nodes with that degree")
    ax.set_title("degree distribution per node type (log-log)")
    ax.legend(fontsize=8)
    return finish(fig, path)
