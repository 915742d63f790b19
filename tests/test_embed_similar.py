"""tools/embed.py and tools/similar.py on a small folder of real CIFAR-10 images with
planted duplicates: an exact copy and a resized, re-encoded copy."""

import csv
import io
import json
import math
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO

sys.path.insert(0, str(REPO))

from tools import embed, similar  # noqa: E402

DISTINCT = 10


@pytest.fixture(scope="module")
def folder_and_run(tmp_path_factory, cifar_data_dir):
    """A folder (two class folders, ten distinct test images, an exact copy of the
    first, a 64 px JPEG of the second, one corrupt file) and a run directory holding
    an encoder (seeded initialisation: embeddings need weights, not training)."""
    from simclr_tf import run_dirs
    from simclr_tf.config import Config, DataConfig, ModelConfig, RunConfig
    from simclr_tf.data import open_source
    from simclr_tf.models import builders

    root = tmp_path_factory.mktemp("embed")
    folder = root / "images"
    source = open_source("cifar10", data_dir=cifar_data_dir)
    examples = list(source.load("test", False).take(DISTINCT))
    paths = []
    for n, example in enumerate(examples):
        path = folder / ("cats" if n % 2 else "dogs") / f"img_{n}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(example["image"].numpy()).save(path)
        paths.append(path)
    shutil.copy(paths[0], folder / "dogs" / "copy_of_0.png")
    buffer = io.BytesIO()
    Image.open(paths[1]).resize((64, 64), Image.BICUBIC).save(buffer, "JPEG", quality=90)
    (folder / "cats" / "resized_1.jpg").write_bytes(buffer.getvalue())
    (folder / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")

    run = root / "run"
    run.mkdir()
    tf.keras.utils.set_random_seed(0)
    config = Config(
        run=RunConfig(model_dir=str(run)),
        data=DataConfig(image_size=32),
        model=ModelConfig(depth=18, width_multiplier=0.25),
    )
    encoder = builders.build_encoder(config)
    head = builders.build_projection_head(config)
    h = encoder(tf.zeros([1, 32, 32, 3]))["final_avg_pool"]
    head(h)
    run_dirs.write_json_atomic(str(run / run_dirs.CONFIG_FILE), json.loads(config.to_json()))
    tf.train.Checkpoint(encoder=encoder, projection_head=head).save(str(run / "ckpt"))
    return folder, run


@pytest.fixture(scope="module")
def embedded(folder_and_run, tmp_path_factory):
    folder, run = folder_and_run
    out = tmp_path_factory.mktemp("out")
    code = embed.main(
        [
            f"--encoder={run}",
            f"--images=folder:{folder}",
            f"--out={out}",
            f"--map_out={out / 'map.png'}",
        ]
    )
    assert code == 0
    return out


def test_every_readable_image_is_embedded_with_its_id_and_label(embedded, folder_and_run):
    folder, _ = folder_and_run
    vectors = np.load(embedded / "embeddings.npy")
    ids = (embedded / "ids.txt").read_text().splitlines()
    labels = np.loadtxt(embedded / "labels.txt", dtype=int)
    readable = sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*.*") if p.name != "broken.png"
    )
    assert sorted(ids) == readable and vectors.shape[0] == len(ids) == DISTINCT + 2
    assert vectors.dtype == np.float32 and np.isfinite(vectors).all()
    # Class folders sorted: cats 0, dogs 1.
    assert [int(l) for l in labels] == [0 if i.startswith("cats/") else 1 for i in ids]
    record = json.loads((embedded / "embed.json").read_text())
    assert record["skipped_images"] == 1 and record["images"] == len(ids)
    assert Image.open(embedded / "map.png").size[0] > 100


def test_the_projector_config_is_what_tensorboard_reads(embedded):
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    directory = embedded / "projector"
    config = text_format.Parse(
        (directory / "projector_config.pbtxt").read_text(), projector_config_pb2.ProjectorConfig()
    )
    (embedding,) = config.embeddings
    tensors = np.loadtxt(directory / embedding.tensor_path, delimiter="\t")
    metadata = (directory / embedding.metadata_path).read_text().splitlines()
    assert metadata[0] == "id\tlabel" and len(metadata) - 1 == len(tensors) == DISTINCT + 2
    np.testing.assert_allclose(tensors, np.load(embedded / "embeddings.npy"), rtol=1e-5, atol=1e-6)
    sprite = Image.open(directory / embedding.sprite.image_path)
    side = math.ceil(math.sqrt(len(tensors))) * embedding.sprite.single_image_dim[0]
    assert sprite.size == (side, side)


def _cosines(embedded):
    vectors = np.load(embedded / "embeddings.npy").astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors @ vectors.T, (embedded / "ids.txt").read_text().splitlines()


def test_planted_duplicates_are_found_and_distinct_images_are_not(embedded, tmp_path):
    cos, ids = _cosines(embedded)
    index = {name: i for i, name in enumerate(ids)}
    exact = (index["dogs/copy_of_0.png"], index["dogs/img_0.png"])
    near = (index["cats/resized_1.jpg"], index["cats/img_1.png"])
    assert cos[exact] > 1 - 1e-5
    planted = {frozenset(exact), frozenset(near)}
    distinct = max(
        cos[i, j]
        for i in range(len(ids))
        for j in range(i + 1, len(ids))
        if frozenset((i, j)) not in planted
    )
    # The encoder must tell them apart for the threshold between to mean anything.
    assert cos[near] > distinct, (cos[near], distinct)
    threshold = (cos[near] + distinct) / 2
    out = tmp_path / "duplicates.csv"
    assert (
        similar.main(
            [f"--embeddings={embedded}", "--duplicates", f"--threshold={threshold}", f"--out={out}"]
        )
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    assert {frozenset((r["id_a"], r["id_b"])) for r in rows} == {
        frozenset(("dogs/copy_of_0.png", "dogs/img_0.png")),
        frozenset(("cats/resized_1.jpg", "cats/img_1.png")),
    }
    assert float(rows[0]["cosine"]) >= float(rows[1]["cosine"])


def test_neighbour_order_matches_numpy(embedded, folder_and_run, tmp_path):
    folder, _ = folder_and_run
    cos, ids = _cosines(embedded)
    q = ids.index("cats/img_3.png")
    expected = [ids[j] for j in np.argsort(-cos[q], kind="stable") if j != q][:5]
    out = tmp_path / "grid.png"
    assert (
        similar.main(
            [f"--embeddings={embedded}", "--query=cats/img_3.png", "--k=5", f"--out={out}"]
        )
        == 0
    )
    vectors, _, _, _ = similar.load(str(embedded))
    top, _ = similar.nearest(vectors, vectors[q], 5, exclude=q)
    assert [ids[j] for j in top] == expected
    assert Image.open(out).size[0] > 0
    # A file as the query: the same image's file finds itself first, at cosine ~1.
    top, cosines = similar.nearest(
        vectors,
        similar.embed_file(
            str(folder / "cats" / "img_3.png"), json.loads((embedded / "embed.json").read_text())
        )[0],
        3,
    )
    assert ids[top[0]] == "cats/img_3.png" and cosines[0] > 1 - 1e-5


def test_bad_inputs_are_one_line_errors(tmp_path, embedded, capsys):
    assert (
        embed.main(["--encoder=/nonexistent", f"--images=folder:{tmp_path}", f"--out={tmp_path}/o"])
        == 2
    )
    assert "embed: error:" in capsys.readouterr().err
    assert (
        similar.main([f"--embeddings={embedded}", "--query=no_such_id", f"--out={tmp_path}/g.png"])
        == 2
    )
    assert "neither an id" in capsys.readouterr().err
    assert os.path.exists(embedded / "embeddings.npy")
