"""The CIKG as HeteroData: counts per dataset, views, normalisation, networkx export, save/load."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import HeteroData

from cikg.data import synthetic
from cikg.errors import GraphError
from cikg.graph import (
    HAS_INTEREST,
    INTERACTS,
    View,
    attach_features,
    build_cikg,
    build_views,
    graph_stats,
    kg_edge_types,
    load_graph,
    normalized_adjacency,
    save_graph,
    to_networkx,
)

# (users, items, entities, interests) per dataset
NODES = {"dbbook": (5576, 2680, 6228, 381), "bookcrossing": (6616, 8853, 673, 244), "ml1m": (6040, 3260, 0, 115),
         "amazon": (70679, 24915, 0, 0)}


@pytest.mark.parametrize("fixture", list(NODES))
def test_graph_counts_match_files(fixture, request):
    ds = request.getfixturevalue(fixture)
    graph = build_cikg(ds)
    assert isinstance(graph, HeteroData)
    counts = tuple(graph[t].num_nodes for t in ("user", "item", "entity", "interest"))
    assert counts == NODES[fixture]
    assert graph[INTERACTS].edge_index.size(1) == ds.train.size(1)  # train only
    assert graph["item", "rev_interacts", "user"].edge_index.size(1) == ds.train.size(1)
    kg_edges = sum(graph[et].edge_index.size(1) for et in kg_edge_types(graph))
    assert kg_edges == ds.kg.size(1)
    if ds.has_interests:
        assert graph[HAS_INTEREST].edge_index.size(1) == ds.user_interest.size(1)
    else:
        assert HAS_INTEREST not in graph.edge_types
    stats = graph_stats(graph)
    assert int(stats.query("kind == 'node' and type == 'interest'")["count"].iloc[0]) == NODES[fixture][3]


def test_kg_edge_types_are_named_relations(dbbook):
    graph = build_cikg(dbbook)
    relations = {et[1] for et in kg_edge_types(graph)}
    assert {"publisher", "literaryGenre", "type", "hypernym"} <= relations
    for src, rel, dst in kg_edge_types(graph):
        e = graph[src, rel, dst].edge_index
        assert int(e[0].max()) < graph[src].num_nodes and int(e[1].max()) < graph[dst].num_nodes
        assert torch.equal(graph[dst, f"rev_{rel}", src].edge_index, e.flip(0))


def test_views_contain_the_right_edges(dbbook):
    views = build_views(build_cikg(dbbook))
    n_ui, n_int, n_kg = (views.edges[k].size(1) for k in ("interacts", "interest", "kg"))
    assert views.edge_index(View.COLLABORATIVE).size(1) == n_ui
    assert views.edge_index(View.INTEREST).size(1) == n_ui + n_int
    assert views.edge_index(View.KG).size(1) == n_ui + n_kg
    assert views.edge_index(View.FULL).size(1) == n_ui + n_int + n_kg
    assert views.n_nodes == sum(NODES["dbbook"])
    adj = views.adj(View.COLLABORATIVE)
    assert adj.layout == torch.sparse_csr and adj.shape == (views.n_nodes, views.n_nodes)
    # interest rows are empty in the collaborative view and present in the interest view
    interest_rows = views.node_slice("interest")
    crow = adj.crow_indices()
    assert int(crow[interest_rows.stop] - crow[interest_rows.start]) == 0
    crow = views.adj(View.INTEREST).crow_indices()
    assert int(crow[interest_rows.stop] - crow[interest_rows.start]) == n_int


@pytest.mark.parametrize("self_loops", [False, True])
def test_normalisation_against_dense(self_loops):
    torch.manual_seed(0)
    n = 12
    edges = torch.randint(0, n, (2, 30))
    edges = edges[:, edges[0] != edges[1]]
    adj = normalized_adjacency(edges, n, self_loops=self_loops).to_dense()
    dense = torch.zeros(n, n)
    dense[edges[0], edges[1]] = 1.0
    dense[edges[1], edges[0]] = 1.0
    if self_loops:
        dense += torch.eye(n)
    deg = dense.sum(1)
    inv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    expected = inv[:, None] * dense * inv[None, :]
    torch.testing.assert_close(adj, expected)
    torch.testing.assert_close(adj, adj.t())


def test_networkx_neighbourhood(dbbook):
    graph = build_cikg(dbbook)
    sub = to_networkx(graph, user=0)
    items = set(dbbook.history(0))
    assert {n[1] for n in sub.nodes if n[0] == "item"} == items
    interests = set(dbbook.user_interest[1, dbbook.user_interest[0] == 0].tolist())
    assert {n[1] for n in sub.nodes if n[0] == "interest"} == interests
    assert sub.nodes[("item", dbbook.history(0)[0])]["label"] == dbbook.item_text[dbbook.history(0)[0]]
    relations = {d["relation"] for _, _, d in sub.edges(data=True)}
    assert "interacts" in relations and "has_interest" in relations and len(relations) > 3
    assert sum(1 for _, _, d in sub.edges(data=True) if d["relation"] == "interacts") == len(items)
    with pytest.raises(GraphError, match="unknown user"):
        to_networkx(graph, user=10**6)


def test_networkx_whole_small_graph():
    ds = synthetic(40, 20, seed=1)
    nxg = to_networkx(build_cikg(ds))
    assert nxg.number_of_nodes() == ds.n_users + ds.n_entities + ds.n_interests
    assert nxg.number_of_edges() == ds.train.size(1) + ds.kg.size(1) + ds.user_interest.size(1)


def test_save_load_round_trip(bookcrossing, tmp_path):
    graph = build_cikg(bookcrossing)
    attach_features(graph, "item", torch.randn(bookcrossing.n_items, 8), {"method": "test"})
    again = load_graph(save_graph(graph, tmp_path / "g.pt"))
    assert set(again.edge_types) == set(graph.edge_types)
    for et in graph.edge_types:
        assert torch.equal(again[et].edge_index, graph[et].edge_index)
    assert torch.equal(again["item"].x, graph["item"].x)
    assert again.meta["features"]["item"] == {"method": "test", "dim": 8}
    assert again["item"].title == graph["item"].title
    (tmp_path / "bad.pt").write_bytes(b"not a graph")
    with pytest.raises(GraphError, match="not a cikg graph"):
        load_graph(tmp_path / "bad.pt")


def test_attach_features_checks_shape(small_synthetic):
    graph = build_cikg(small_synthetic)
    with pytest.raises(GraphError, match=r"must have shape \[300, dim\]"):
        attach_features(graph, "user", torch.zeros(5, 3), {})
    with pytest.raises(GraphError, match="unknown node type"):
        attach_features(graph, "movie", torch.zeros(5, 3), {})


def test_without_kg_or_interests(small_synthetic):
    graph = build_cikg(small_synthetic, include_kg=False, include_interests=False)
    assert graph["entity"].num_nodes == 0 and graph["interest"].num_nodes == 0
    assert graph.edge_types == [INTERACTS, ("item", "rev_interacts", "user")]
