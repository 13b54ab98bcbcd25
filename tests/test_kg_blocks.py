"""The shared KG building blocks (cikg.models.kg): one triple store for CIKGRec's TransE and KGAT's TransR."""
from __future__ import annotations

import pytest
import torch

from cikg.models.kg import TripleStore, translation_distance


@pytest.fixture()
def store():
    # node 0: (0,0,1) (0,1,2); node 2: (2,0,0); nodes 1 and 3 have no triples; 4 nodes, 2 relations
    return TripleStore(torch.tensor([2, 0, 0]), torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2]), 4, 2)


def test_triples_are_sorted_by_head_keeping_order_inside_a_head(store):
    assert store.head.tolist() == [0, 0, 2] and store.tail.tolist() == [1, 2, 0]
    assert store.head_nodes.tolist() == [0, 2] and store.head_count.tolist() == [2, 1]
    assert store.head_start.tolist() == [0, 2] and len(store) == 3


def test_truth_lookup_by_key(store):
    head, rel, tail = torch.tensor([0, 0, 0, 2, 3]), torch.tensor([0, 1, 0, 0, 1]), torch.tensor([1, 2, 2, 0, 3])
    assert store.is_true(head, rel, tail).tolist() == [True, True, False, True, False]
    assert store.key(torch.tensor([1]), torch.tensor([1]), torch.tensor([3])).item() == (1 * 2 + 1) * 4 + 3


def test_heads_are_uniform_then_triples_inside_the_head(store):
    head, rel, tail = store.sample(40000, torch.Generator().manual_seed(0))
    assert bool(store.is_true(head, rel, tail).all())
    assert (head == 2).float().mean().item() == pytest.approx(0.5, abs=0.01)  # heads uniform, not triples
    assert ((head == 0) & (tail == 1)).float().mean().item() == pytest.approx(0.25, abs=0.01)


def test_corrupted_tails_stay_in_their_range_and_are_never_true(store):
    head = torch.zeros(5000, dtype=torch.long)
    rel = torch.zeros(5000, dtype=torch.long)  # true tails of (0, 0, ·): {1}
    low, span = torch.tensor(1), torch.tensor(2)  # tails in 1..2, so only 2 is a valid corruption
    tail = store.corrupt_tails(head, rel, low, span, torch.Generator().manual_seed(1))
    assert set(tail.tolist()) == {2}


def test_store_buffers_move_with_the_model_but_are_not_saved(store):
    model = torch.nn.Module()
    model.triples = store
    assert {name for name, _ in model.named_buffers()} >= {"triples.head", "triples.keys"}
    assert model.state_dict() == {}
    assert model.to(torch.float64).triples.head.dtype == torch.long  # index buffers keep their dtype


def test_translation_distance_by_hand():
    h, r, t = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, -1.0]]), torch.tensor([[1.0, 0.0]])
    assert translation_distance(h, r, t).tolist() == [0.5 ** 2 + 1.0 ** 2]


def test_cikgrec_and_kgat_stand_on_the_same_store(small_synthetic):
    from cikg.graph import build_cikg, build_views
    from cikg.models import CIKGRecConfig, KGATConfig

    views = build_views(build_cikg(small_synthetic))
    cikgrec = CIKGRecConfig(dim=8, layers=1).build(views, small_synthetic)
    kgat = KGATConfig(dim=8, relation_dim=8, layer_sizes=(8,), message_dropout=(0.1,)).build(views, small_synthetic)
    assert isinstance(cikgrec.triples, TripleStore) and isinstance(kgat.triples, TripleStore)
    batch = kgat.sample_kg_batch(512, torch.Generator().manual_seed(0))
    assert not bool(kgat.triples.is_true(batch.heads, batch.relations, batch.neg_tails).any())
    assert bool(((batch.neg_tails >= kgat.n_users) & (batch.neg_tails < kgat.n_nodes)).all())
