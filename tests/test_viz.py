"""Every ``cikg.viz`` plot renders to a real PNG from real small inputs (a tiny training run, dbbook2014's CIKG,
MiniLM embeddings of kg-profile phrases), and ``cikg train ... --plots`` writes its PNGs."""
from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cikg.errors import CikgError
from cikg.viz import (
    loss_terms,
    plot_degrees,
    plot_groups,
    plot_interest_map,
    plot_loss_terms,
    plot_mask_schedule,
    plot_run,
    plot_valid_metrics,
    read_history,
)
from cikg.viz.groups import group_label
from cikg.viz.interests import place_labels

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
                        "CIKGRec": CIKGRecConfig(dim=16, layers=2, total_epoch=6, use_transe=False)}.items():
        fit = Trainer(RunConfig(model=model, train=train, name=name), root / name, dataset=dataset,
                      views=views).fit(resume=False)
        runs[name] = (root / name, read_history(root / name), fit.groups)
    yield runs
    plt.close("all")


def test_loss_terms_draws_every_logged_term_even_one_that_is_zero(tiny_runs, tmp_path):
    _, history, _ = tiny_runs["CIKGRec"]
    assert {"bpr", "uir", "cl_user", "cl_item", "l2", "loss"} <= set(history.columns) and len(history) == 3
    # epoch 1 masks int(0.079 * 12 interests) == 0 interests (the schedule over total_epoch=6): UIR is exactly 0
    assert history["uir"].iloc[0] == 0.0 and history["uir"].iloc[-1] > 0
    fig = plot_loss_terms(history, tmp_path / "loss.png", title="CIKGRec", best_epoch=2)
    lines = {line.get_label(): (ax, line) for ax in fig.axes for line in ax.get_lines()
             if not line.get_label().startswith("selected")}
    assert set(lines) == set(loss_terms(history)) == {"loss", "bpr", "l2", "uir", "cl_user", "cl_item"}
    ax, uir = lines["uir"]
    assert list(uir.get_xdata()) == [1, 2, 3]
    assert list(uir.get_ydata()) == pytest.approx(history["uir"].tolist())
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] <= 0.0  # the zero is on the axis, not hidden
    for ax in fig.axes:  # the selected epoch is marked on every panel
        marks = [line for line in ax.get_lines() if line.get_label().startswith("selected")]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [2, 2]
    assert_png(tmp_path / "loss.png")


def _integer_ticks(fig) -> None:
    fig.canvas.draw()
    for ax in fig.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)


def test_epoch_axes_have_integer_ticks(tiny_runs):
    _, history, _ = tiny_runs["CIKGRec"]  # 3 epochs: matplotlib's default locator would tick 1.0, 1.25, ...
    _integer_ticks(plot_loss_terms(history))
    _integer_ticks(plot_valid_metrics({"CIKGRec": history}))
    _integer_ticks(plot_mask_schedule(history["mask_rate"].tolist()))
    plt.close("all")


def test_valid_metrics_star_the_selected_epochs(tiny_runs):
    histories = {name: history for name, (_, history, _) in tiny_runs.items()}
    fig = plot_valid_metrics(histories, metrics=("recall@20",), best_epochs={"CIKGRec": 2, "LightGCN": 3})
    stars = [line for line in fig.axes[0].get_lines() if line.get_marker() == "*"]
    assert sorted(float(s.get_xdata()[0]) for s in stars) == [2.0, 3.0]
    star = next(s for s in stars if s.get_xdata()[0] == 2)
    assert star.get_ydata()[0] == pytest.approx(histories["CIKGRec"].set_index("epoch").loc[2, "valid_recall@20"])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["LightGCN (selected: epoch 3)", "CIKGRec (selected: epoch 2)"]
    assert fig.axes[0].get_title() == "validation recall@20" and fig.axes[0].get_ylabel() == "recall@20"
    with pytest.raises(CikgError, match="no run logged validation recall@99"):
        plot_valid_metrics(histories, metrics=("recall@99",))
    plt.close("all")


def test_valid_metrics_of_two_runs(tiny_runs, tmp_path):
    fig = plot_valid_metrics({name: history for name, (_, history, _) in tiny_runs.items()},
                             metrics=("recall@20", "ndcg@10"), path=tmp_path / "valid.png")
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 2]
    assert_png(tmp_path / "valid.png")


def test_mask_schedule(tiny_runs, tmp_path):
    _, history, _ = tiny_runs["CIKGRec"]
    rates = history["mask_rate"].tolist()
    assert all(0 <= r <= 1 for r in rates)
    fig = plot_mask_schedule(rates, tmp_path / "mask.png", n_interests=12)
    scheduled, masked = fig.axes[0].get_lines()
    assert list(scheduled.get_ydata()) == pytest.approx(rates)
    assert list(masked.get_ydata()) == pytest.approx([int(r * 12) / 12 for r in rates])
    assert masked.get_ydata()[0] == 0.0  # epoch 1 masks no interest: why UIR is 0 there
    assert_png(tmp_path / "mask.png")


def test_group_bars_are_labelled_with_ranges_and_sizes(tiny_runs, tmp_path):
    groups = {name: frame for name, (_, _, frame) in tiny_runs.items()}
    frame = groups["CIKGRec"]
    fig = plot_groups(groups, metric="recall@20", path=tmp_path / "groups.png")
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * len(frame)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert len(ticks) == len(frame)
    for tick, row in zip(ticks, frame.itertuples()):
        assert f"n={row.n_users:,}" in tick, tick
        if row.n_users:
            low, high = int(row.min_train), int(row.max_train)
            assert (f"{low}–{high}" if low != high else f"{low}") in tick, tick
    assert ticks[0].startswith("all\n") and any(t.startswith("≤5\n") for t in ticks)
    assert "test recall@20" in ax.get_ylabel() and "train interactions" in ax.get_xlabel()
    assert_png(tmp_path / "groups.png")


def test_group_label_format():
    row = {"group": "train<=5", "n_users": 1234, "min_train": 1, "max_train": 5}
    assert group_label(row) == "≤5\n1–5 · n=1,234"
    assert group_label({"group": "Q2", "n_users": 7, "min_train": 12, "max_train": 12}) == "Q2\n12 · n=7"
    assert group_label({"group": "train<=3", "n_users": 0, "min_train": None, "max_train": None}) == "≤3\nn=0"


def test_group_bars_refuse_groups_of_different_users(tiny_runs):
    frame = tiny_runs["CIKGRec"][2]
    other = frame.copy()
    other.loc[1, "n_users"] += 1
    with pytest.raises(CikgError, match="differ"):
        plot_groups({"a": frame, "b": other})
    with pytest.raises(CikgError, match="no recall@99"):
        plot_groups({"a": frame}, metric="recall@99")
    plt.close("all")


def test_degrees_of_a_real_cikg(dbbook, tmp_path):
    from cikg.graph import build_cikg

    fig = plot_degrees(build_cikg(dbbook), tmp_path / "degrees.png")
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert [label.split()[0] for label in labels] == ["user", "item", "entity", "interest"]
    assert_png(tmp_path / "degrees.png")


def _text_boxes(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [(t.get_text(), t.get_window_extent(renderer)) for ax in fig.axes for t in ax.texts]


def _assert_no_overlap(boxes) -> None:
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            assert not box_a.overlaps(box_b), f"labels {a!r} and {b!r} overlap"


def test_interest_map_of_real_phrases(dbbook, tmp_path):
    from cikg.interests import ClusterConfig, Encoder, structure_interests
    from cikg.llm import KGProfileBackend, infer_interests

    inferred = infer_interests(dbbook, KGProfileBackend(dbbook), users=range(80))
    encoder = Encoder(tmp_path / "emb.sqlite", n_threads=1, show_progress=False)
    clustering = structure_interests(inferred.frame, ClusterConfig(kappa=10, seed=0, n_threads=1,
                                                                   max_user_fraction=0.9),
                                     encoder=encoder).clustering
    kept = clustering.phrases[clustering.phrases["kept"]]
    vectors = encoder.encode(kept["phrase"].tolist())
    assert vectors.shape == (len(kept), 384)
    labels = dict(enumerate(clustering.labels))
    fig = plot_interest_map(vectors, kept["cluster"], labels=labels, path=tmp_path / "map.png", max_clusters=8)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("PC1 (") and "variance" in ax.get_xlabel()
    assert ax.get_ylabel().startswith("PC2 (") and "variance" in ax.get_ylabel()
    sizes = kept["cluster"].value_counts()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    largest = sizes.index[:8]
    for cluster in largest:  # the 8 largest clusters by name and size; the rest as one grey entry
        assert f"{labels[cluster][:31]}" in "".join(legend) and f"({sizes[cluster]})" in "".join(legend)
    assert legend[0] == f"{len(sizes) - 8} smaller clusters ({int(sizes.iloc[8:].sum())})"
    boxes = _text_boxes(fig)
    assert 4 <= len(boxes) <= 8 and {text for text, _ in boxes} <= {labels[c][:32] for c in largest} | {
        labels[c][:31] + "…" for c in largest}
    _assert_no_overlap(boxes)
    frame = ax.get_window_extent()
    assert all(frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
               for _, box in boxes)
    assert_png(tmp_path / "map.png")


def test_place_labels_never_overlaps_crowded_labels():
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(rng.normal(size=200), rng.normal(size=200))
    fig.tight_layout()
    items = [(f"cluster label {k}", (0.05 * k, 0.0)) for k in range(40)]  # 40 labels piled on one spot
    texts = place_labels(ax, items)
    assert 10 <= len(texts) < 40  # many placed, the ones with no free room left out
    _assert_no_overlap(_text_boxes(fig))
    moved = [line for line in ax.get_lines()]  # a leader line for every label moved off its anchor
    assert len(moved) == sum(t.get_position() != items[int(t.get_text().split()[-1])][1] for t in texts)
    plt.close(fig)


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
