"""Pictures: the view grid, its TensorBoard summary, and the PNG tools on real runs."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_train import _replace, tiny_config

from simclr_tf import train, view_grid

from conftest import REPO


def test_pair_grid_places_each_pair_side_by_side():
    rng = np.random.default_rng(0)
    v1, v2 = rng.random((5, 6, 6, 3)), rng.random((5, 6, 6, 3))
    grid = view_grid.pair_grid(v1, v2, max_pairs=16, columns=2)
    gap, tile = view_grid.GAP, 2 * 6 + view_grid.GAP
    assert grid.shape == (3 * (6 + gap) + gap, 2 * (tile + 2 * gap) + gap, 3)
    assert grid.dtype == np.uint8
    # Pair 3 sits in row 1, column 1: its first view, then after a gap its second.
    top, left = gap + (6 + gap), gap + (tile + 2 * gap)
    np.testing.assert_array_equal(grid[top : top + 6, left : left + 6], np.round(v1[3] * 255))
    right = left + 6 + gap
    np.testing.assert_array_equal(grid[top : top + 6, right : right + 6], np.round(v2[3] * 255))
    assert np.all(grid[:gap, :] == 255)  # the white border


def _png(path):
    image = np.asarray(Image.open(path).convert("RGB"), np.float32)
    assert image.std() > 10, f"{path} is blank"
    return image


def test_plot_views_draws_the_training_views(tmp_path, cifar_data_dir):
    out = tmp_path / "views.png"
    result = _tool(
        "tools/plot_views.py",
        "--flagfile=flags/quickstart.cfg",
        f"--data_dir={cifar_data_dir}",
        "--train_split=train[:500]",
        "--pairs=6",
        "--columns=3",
        f"--out={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    image = _png(out)
    gap, scale = view_grid.GAP, 256 // 32
    expected = (2 * (32 + gap) + gap, 3 * (2 * 32 + 3 * gap) + gap)
    assert image.shape[:2] == (expected[0] * scale, expected[1] * scale)


def test_plot_views_refuses_a_missing_out():
    result = _tool("tools/plot_views.py", "--flagfile=flags/quickstart.cfg")
    assert result.returncode == 2 and "--out" in result.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cifar_data_dir):
    run_dir = tmp_path_factory.mktemp("pictures") / "run"
    config = tiny_config(run_dir, cifar_data_dir, mode="pretrain", train_steps=4)
    train.run(_replace(config, "run", summary_steps=1))
    return run_dir


def test_a_run_logs_its_views_and_plot_curves_draws_it(tmp_path, tiny_run):
    run_dir = tiny_run
    images = []
    for path in sorted((run_dir / "logs" / "train").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            images += [v for v in event.summary.value if v.tag == "views"]
    assert len(images) == 1
    encoded = tf.make_ndarray(images[0].tensor)[2]  # [width, height, png]
    grid = tf.io.decode_png(encoded).numpy()
    assert (
        grid.shape
        == view_grid.pair_grid(np.zeros((16, 32, 32, 3)), np.zeros((16, 32, 32, 3))).shape
    )
    assert grid.std() > 10

    out = tmp_path / "curves.png"
    result = _tool(
        "tools/plot_curves.py", f"--runs={run_dir},{run_dir}", "--labels=a,b", f"--out={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loss" in result.stdout and "learning_rate" in result.stdout
    image = _png(out)
    panels = result.stdout.split(": ", 1)[1].split(" of ")[0].split(", ")
    assert image.shape[:2] == (340, int(420 * len(panels)))  # 4.2 x 3.4 inches at 100 dpi


def _tool(*args):
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_plot_neighbors_draws_queries_and_their_neighbours(tmp_path, tiny_run, cifar_data_dir):
    out = tmp_path / "neighbors.png"
    result = _tool(
        "tools/plot_neighbors.py",
        f"--model_dir={tiny_run}",
        f"--data_dir={cifar_data_dir}",
        "--bank_split=train[:2000]",
        "--query_split=test[:500]",
        "--bank_size=300",
        "--queries=4",
        "--k=5",
        f"--out={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "share the query's class" in result.stdout
    image = _png(out)
    assert image.shape[:2] == (round(1.2 * 4 * 100), round(1.2 * 6 * 100))  # 1.2 in per tile


def test_neighbours_are_the_most_similar_rows():
    from tools.plot_neighbors import neighbours

    rng = np.random.default_rng(1)
    bank = rng.normal(size=(50, 8))
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    queries = bank[[4, 9]] + 1e-3
    nearest = neighbours(bank, queries, 3)
    assert nearest[:, 0].tolist() == [4, 9]
    sims = queries @ bank.T
    for q in range(2):  # best first, and nothing outside beats the third
        chosen = sims[q, nearest[q]]
        assert list(chosen) == sorted(chosen, reverse=True)
        assert np.delete(sims[q], nearest[q]).max() <= chosen[-1]


def test_tsne_keeps_clusters_apart():
    from tools import tsne

    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 20)) * 10
    labels = np.repeat(np.arange(3), 40)
    x = centres[labels] + rng.normal(size=(120, 20))
    y = tsne.tsne(x, perplexity=15, iterations=300)
    d = np.sum((y[:, None] - y[None]) ** 2, -1)
    np.fill_diagonal(d, np.inf)
    assert np.mean(labels[d.argmin(1)] == labels) > 0.95
    assert tsne.trustworthiness(x, y) > 0.5
    shuffled = rng.permutation(y)
    assert tsne.trustworthiness(x, shuffled) < 0.2  # the measure can fail


def test_plot_embedding_draws_a_map(tmp_path, tiny_run, cifar_data_dir):
    out = tmp_path / "embedding.png"
    result = _tool(
        "tools/plot_embedding.py",
        f"--model_dir={tiny_run}",
        f"--data_dir={cifar_data_dir}",
        "--split=test[:500]",
        "--size=200",
        "--iterations=200",
        f"--out={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _png(out).shape[:2] == (600, 600)


def test_picture_tools_refuse_a_run_that_is_not_there(tmp_path):
    for tool in ("tools/plot_neighbors.py", "tools/plot_embedding.py"):
        result = _tool(tool, f"--model_dir={tmp_path / 'nothing'}", f"--out={tmp_path / 'x.png'}")
        assert result.returncode == 2 and "error" in result.stderr, result.stderr[-2000:]
    result = _tool("tools/plot_curves.py", f"--runs={tmp_path}", f"--out={tmp_path / 'x.png'}")
    assert result.returncode == 2 and "no logs/" in result.stderr
