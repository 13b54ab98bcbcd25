"""Every ``cikg.viz`` plot renders to a real PNG from real small inputs (a tiny training run, dbbook2014's CIKG,
MiniLM embeddings of kg-profile phrases), and ``cikg train ... --plots`` writes its PNGs."""
from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cikg.viz import (
    plot_degrees,
    plot_groups,
    plot_interest_map,
    plot_loss_terms,
    plot_mask_schedule,
    plot_run,
    plot_valid_metrics,
    read_history,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_kb: float = 5.0) -> np.ndarray:
    """A non-empty, decodable PNG with real content (not one flat colour)."""
    path = Path(path)
    assert path.is_file(), f"{path} was not written"
    blob = path.read_bytes()
    assert blob[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(blob) > min_kb * 1024, f"{path} is only {len(blob)} bytes"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4), image.shape
    assert image.shape[0] >= 200 and image.shape[1] >= 300, image.shape
    assert float(image[..., :3].std()) > 0.01, f"{path} is blank"
    return image


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """LightGCN and CIKGRec, 3 short epochs each on a small synthetic CIKG: real histories and groups."""
    from cikg.data import synthetic
    from cikg.graph import build_cikg, build_views
    from cikg.models import CIKGRecConfig, LightGCNConfig
    from cikg.train import RunConfig, TrainConfig, Trainer

    root = tmp_path_factory.mktemp("viz-runs")
    dataset = synthetic(300, 90, seed=5)
    views = build_views(build_cikg(dataset))
    train = TrainConfig(epochs=3, batch_size=256, lr=5e-3, ks=(10, 20), select=("recall@20",), seed=0, threads=1,
                        max_batches=4, progress=False)
    runs = {}
    for name, model in {"LightGCN": LightGCNConfig(dim=16, layers=2),
                        "CIKGRec": CIKGRecConfig(dim=16, layers=2, total_epoch=3, use_transe=False)}.items():
        fit = Trainer(RunConfig(model=model, train=train, name=name), root / name, dataset=dataset,
                      views=views).fit(resume=False)
        runs[name] = (root / name, read_history(root / name), fit.groups)
    yield runs
    plt.close("all")


def test_loss_terms(tiny_runs, tmp_path):
    _, history, _ = tiny_runs["CIKGRec"]
    assert {"bpr", "uir", "cl_user", "cl_item"} <= set(history.columns) and len(history) == 3
    fig = plot_loss_terms(history, tmp_path / "loss.png", title="CIKGRec")
    assert len(fig.axes[0].get_lines()) >= 3  # bpr, cl_*, l2... (uir is 0 in the first epochs: not drawn)
    assert_png(tmp_path / "loss.png")


def test_valid_metrics_of_two_runs(tiny_runs, tmp_path):
    fig = plot_valid_metrics({name: history for name, (_, history, _) in tiny_runs.items()},
                             metrics=("recall@20", "ndcg@10"), path=tmp_path / "valid.png")
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 2]
    assert_png(tmp_path / "valid.png")


def test_mask_schedule(tiny_runs, tmp_path):
    _, history, _ = tiny_runs["CIKGRec"]
    rates = history["mask_rate"].tolist()
    assert all(0 <= r <= 1 for r in rates)
    plot_mask_schedule(rates, tmp_path / "mask.png")
    assert_png(tmp_path / "mask.png")


def test_group_bars(tiny_runs, tmp_path):
    groups = {name: frame for name, (_, _, frame) in tiny_runs.items()}
    fig = plot_groups(groups, metric="recall@20", path=tmp_path / "groups.png")
    assert len(fig.axes[0].patches) == 2 * len(groups["CIKGRec"])
    assert_png(tmp_path / "groups.png")


def test_degrees_of_a_real_cikg(dbbook, tmp_path):
    from cikg.graph import build_cikg

    fig = plot_degrees(build_cikg(dbbook), tmp_path / "degrees.png")
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert [label.split()[0] for label in labels] == ["user", "item", "entity", "interest"]
    assert_png(tmp_path / "degrees.png")


def test_interest_map_of_real_phrases(dbbook, tmp_path):
    from cikg.interests import ClusterConfig, Encoder, structure_interests
    from cikg.llm import KGProfileBackend, infer_interests

    inferred = infer_interests(dbbook, KGProfileBackend(dbbook), users=range(80))
    encoder = Encoder(tmp_path / "emb.sqlite", n_threads=1, show_progress=False)
    clustering = structure_interests(inferred.frame, ClusterConfig(kappa=6, seed=0, n_threads=1,
                                                                   max_user_fraction=0.9),
                                     encoder=encoder).clustering
    kept = clustering.phrases[clustering.phrases["kept"]]
    vectors = encoder.encode(kept["phrase"].tolist())
    assert vectors.shape == (len(kept), 384)
    plot_interest_map(vectors, kept["cluster"], labels=dict(enumerate(clustering.labels)),
                      path=tmp_path / "map.png")
    assert_png(tmp_path / "map.png")


def test_plot_run_writes_every_png(tiny_runs):
    run_dir, _, _ = tiny_runs["CIKGRec"]
    paths = plot_run(run_dir)
    assert {p.name for p in paths} == {"loss_terms.png", "valid_metrics.png", "mask_rate.png", "groups.png"}
    for path in paths:
        assert_png(path)


def test_cli_train_plots(tmp_path, capsys):
    from cikg.cli import main

    run_dir = tmp_path / "run"
    rc = main(["train", "-", "model.name=cikgrec", "model.dim=16", "model.use_transe=false", "data.dataset=synthetic",
               "data.synthetic_users=200", "data.synthetic_items=60", "train.epochs=2", "train.max_batches=3",
               "train.threads=1", "train.progress=false", "train.ks=[10,20]", "--run-dir", str(run_dir), "--plots"])
    out = capsys.readouterr().out
    assert rc == 0, out
    written = [Path(line.split("plot: ", 1)[1]) for line in out.splitlines() if line.startswith("plot: ")]
    assert {p.name for p in written} == {"loss_terms.png", "valid_metrics.png", "mask_rate.png", "groups.png"}
    for path in written:
        assert path.parent == run_dir
        assert_png(path)
    assert pd.read_csv(run_dir / "groups.csv")["group"].iloc[0] == "all"
