"""Warm starts (``train.init_from``): a model's user and item ID embeddings from another trained run, as KGAT's
published protocol starts from a trained BPR-MF."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml

from cikg.cli import main
from cikg.data import synthetic
from cikg.errors import ConfigError
from cikg.models import BPRMFConfig, CIKGRecConfig, KGATConfig, KGINConfig, LightGCNConfig, SimGCLConfig
from cikg.models.base import Recommender
from cikg.train import DataConfig, RunConfig, TrainConfig, Trainer, load_run
from cikg.train.warmstart import warm_start

DIM = 16


def _dataset(seed: int = 3):
    return synthetic(n_users=60, n_items=50, seed=seed)


def _config(model, epochs: int = 1, init_from=None) -> RunConfig:
    data = DataConfig(dataset="synthetic", synthetic_users=60, synthetic_items=50, synthetic_seed=3)
    return RunConfig(model=model, data=data,
                     train=TrainConfig(epochs=epochs, lr=1e-2, batch_size=256, seed=0, progress=False,
                                       ks=(5, 10), select=("recall@5",), init_from=init_from))


@pytest.fixture(scope="module")
def bprmf_run(tmp_path_factory):
    """A trained BPR-MF run (two epochs) and its selected user and item embeddings."""
    run_dir = tmp_path_factory.mktemp("warm") / "bprmf"
    Trainer(_config(BPRMFConfig(dim=DIM), epochs=2), run_dir, dataset=_dataset(), trackers=[]).fit()
    users, items = load_run(run_dir).model.embed()
    return run_dir, users.detach(), items.detach()


@pytest.mark.parametrize("model", [KGATConfig(dim=DIM, relation_dim=8, layer_sizes=(8,), message_dropout=(0.0,)),
                                   KGINConfig(dim=DIM, layers=1), LightGCNConfig(dim=DIM, layers=1),
                                   SimGCLConfig(dim=DIM, layers=1), CIKGRecConfig(dim=DIM, layers=1),
                                   BPRMFConfig(dim=DIM)],
                         ids=["kgat", "kgin", "lightgcn", "simgcl", "cikgrec", "bprmf"])
def test_id_rows_are_the_source_runs_embeddings_and_the_rest_keeps_its_init(bprmf_run, model):
    run_dir, users, items = bprmf_run
    trainer = Trainer(_config(model), run_dir.parent / "target", dataset=_dataset(), trackers=[])
    own_users, own_items = trainer.model.id_embeddings()
    assert own_users.shape == (60, DIM) and own_items.shape == (50, DIM)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    warm_start(trainer.model, trainer.dataset, run_dir)
    own_users, own_items = trainer.model.id_embeddings()
    assert torch.equal(own_users, users) and torch.equal(own_items, items)
    if isinstance(model, KGATConfig):  # entity rows (after the items) and every other parameter: untouched
        table = trainer.model.node_embedding
        assert torch.equal(table[60 + 50:], before["node_embedding"][60 + 50:])
        assert torch.equal(trainer.model.relation_projection, before["relation_projection"])
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {KGATConfig: {"node_embedding"}, KGINConfig: {"embedding"},
                       LightGCNConfig: {"embedding.weight"}, SimGCLConfig: {"embedding.weight"},
                       CIKGRecConfig: {"encoder.embedding.weight"},
                       BPRMFConfig: {"user_emb.weight", "item_emb.weight"}}[type(model)]  # only the ID tables


def test_reopening_the_source_run_keeps_this_processs_torch_threads(tmp_path):
    source = tmp_path / "one-thread"
    config = _config(BPRMFConfig(dim=DIM))
    config.train = dataclasses.replace(config.train, threads=1)
    Trainer(config, source, dataset=_dataset(), trackers=[]).fit()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        target = Trainer(_config(BPRMFConfig(dim=DIM)), tmp_path / "target", dataset=_dataset(), trackers=[])
        warm_start(target.model, target.dataset, source)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_warm_started_bprmf_scores_as_its_source_before_training(bprmf_run):
    """Two code paths agree: the source run's scores and those of a fresh model that starts from it."""
    run_dir, _, _ = bprmf_run
    source = load_run(run_dir).model
    trainer = Trainer(_config(BPRMFConfig(dim=DIM)), run_dir.parent / "copy", dataset=_dataset(), trackers=[])
    warm_start(trainer.model, trainer.dataset, run_dir)
    users = torch.arange(60)
    assert torch.allclose(trainer.model.score(users), source.score(users))


def test_fit_starts_from_the_run_records_it_absolute_and_resumes_without_starting_again(bprmf_run, tmp_path,
                                                                                       monkeypatch):
    run_dir, users, _ = bprmf_run
    monkeypatch.chdir(run_dir.parent)
    config = _config(LightGCNConfig(dim=DIM, layers=1), epochs=1, init_from="bprmf")
    target = tmp_path / "lightgcn"
    first = Trainer(config, target, dataset=_dataset(), trackers=[])
    first.fit()
    recorded = yaml.safe_load((target / "config.yaml").read_text())["train"]["init_from"]
    assert recorded == str(run_dir.resolve())
    trained = first.model.id_embeddings()[0].detach().clone()
    assert not torch.equal(trained, users)  # it trained on from there
    # fitting the finished run again resumes its checkpoint: the ID rows stay the trained ones
    again = Trainer(_config(LightGCNConfig(dim=DIM, layers=1), epochs=1, init_from=str(run_dir)), target,
                    dataset=_dataset(), trackers=[])
    again.fit()
    assert torch.equal(again.model.id_embeddings()[0], trained)


def test_refusals_name_the_key_and_say_why(bprmf_run, tmp_path):
    run_dir, _, _ = bprmf_run
    wide = Trainer(_config(LightGCNConfig(dim=2 * DIM, layers=1)), tmp_path / "a", dataset=_dataset(), trackers=[])
    with pytest.raises(ConfigError, match=r"'train.init_from'.*user embeddings to start from are \(60, 16\); "
                                          r"LightGCN expects \(60, 32\)"):
        warm_start(wide.model, wide.dataset, run_dir)
    other = Trainer(_config(LightGCNConfig(dim=DIM, layers=1)), tmp_path / "b", dataset=_dataset(seed=4),
                    trackers=[])
    with pytest.raises(ConfigError, match="trained on other data"):
        warm_start(other.model, other.dataset, run_dir)
    with pytest.raises(ConfigError, match="not a trained run directory"):
        warm_start(other.model, other.dataset, tmp_path)
    class Popularity(Recommender):  # a model with no ID table
        pass

    with pytest.raises(ConfigError, match="Popularity has no user and item ID embeddings"):
        Popularity().init_embeddings(torch.zeros(60, DIM), torch.zeros(50, DIM))


def test_cli_train_refuses_a_missing_run_in_one_line(tmp_path, capsys):
    code = main(["train", "-", "model.name=bprmf", "data.dataset=synthetic", "data.synthetic_users=60",
                 "data.synthetic_items=120", "train.epochs=1", "train.progress=false",
                 f"train.init_from={tmp_path / 'nowhere'}", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a trained run directory" in err[0], err
