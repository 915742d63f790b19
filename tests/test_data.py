"""Data sources on small real files written here: formats, corrupt files, errors, sharding."""

import functools
import importlib.util
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO
from simclr_tf import pipeline, sources
from simclr_tf.config import AugmentConfig, DataConfig
from simclr_tf.datasource import DataError


def _save(path, mode, size, fmt):
    rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}.get(mode, 1)
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)
    if mode == "P":
        image = image.convert("P")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)


def make_folder(root, labeled=True, bad=True):
    """Two classes of mixed formats and sizes, plus a corrupt and a truncated file."""
    root = pathlib.Path(root)
    prefix = (lambda c: root / c) if labeled else (lambda c: root)
    _save(prefix("cat") / "a.png", "RGB", (40, 30), "PNG")
    _save(prefix("cat") / "b.jpg", "RGB", (64, 48), "JPEG")
    _save(prefix("cat") / "c_gray.png", "L", (33, 33), "PNG")
    _save(prefix("cat") / "d.bmp", "RGB", (20, 50), "BMP")
    _save(prefix("dog") / "e_rgba.png", "RGBA", (32, 32), "PNG")
    _save(prefix("dog") / "f_palette.png", "P", (50, 20), "PNG")
    _save(prefix("dog") / "g.gif", "P", (28, 28), "GIF")
    _save(prefix("dog") / "h.jpeg", "RGB", (100, 80), "JPEG")
    bad_files = 0
    if bad:
        (prefix("dog") / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
        (prefix("cat") / "truncated.png").write_bytes((prefix("cat") / "a.png").read_bytes()[:60])
        bad_files = 2
    return 8, bad_files


def _all(ds):
    return list(ds.as_numpy_iterator())


def test_labeled_folder_of_mixed_formats_skips_and_counts_corrupt_files(tmp_path):
    good, bad = make_folder(tmp_path)
    source = sources.open_source(f"folder:{tmp_path}")
    assert source.num_classes == 2 and source.num_examples("train") == good + bad
    examples = _all(source.load("train"))
    assert len(examples) == good
    for ex in examples:
        assert ex["image"].dtype == np.uint8 and ex["image"].ndim == 3
        assert ex["image"].shape[-1] == 3
    labels = sorted(int(ex["label"]) for ex in examples)
    assert labels == [0] * 4 + [1] * 4  # cat = 0, dog = 1 (sorted folder names)
    assert source.skipped.value == bad


def test_strict_decoding_fails_on_a_corrupt_file(tmp_path):
    make_folder(tmp_path)
    source = sources.open_source(f"folder:{tmp_path}", strict=True)
    with pytest.raises(tf.errors.InvalidArgumentError):
        _all(source.load("train"))


def test_unlabeled_folder_and_split_folders(tmp_path):
    make_folder(tmp_path / "flat", labeled=False, bad=False)
    flat = sources.open_source(f"folder:{tmp_path / 'flat'}")
    assert flat.num_classes == 0 and not flat.labeled
    assert {int(ex["label"]) for ex in _all(flat.load("train"))} == {-1}
    make_folder(tmp_path / "split" / "train", bad=False)
    make_folder(tmp_path / "split" / "test", bad=False)
    split = sources.open_source(f"folder:{tmp_path / 'split'}")
    assert sorted(split.split_sizes) == ["test", "train"] and split.num_classes == 2


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "image folder not found"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no images"),
])
def test_bad_folders_give_one_line_errors(tmp_path, make, message):
    with pytest.raises(DataError, match=message) as info:
        sources.open_source(f"folder:{make(tmp_path)}")
    assert "\n" not in str(info.value)


def test_wrong_split_and_missing_tfrecords(tmp_path, cifar_data_dir):
    cifar = sources.open_source("cifar10", cifar_data_dir)
    with pytest.raises(DataError, match="no split 'validation'"):
        cifar.load("validation")
    with pytest.raises(DataError, match="no TFRecord files match"):
        sources.open_source(f"tfrecord:{tmp_path}/*.tfrecord")


def test_tfds_absent_without_network_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not prepared"):
        sources.open_source("cifar10", str(tmp_path), download=False)


@functools.lru_cache(maxsize=None)
def _converter():
    spec = importlib.util.spec_from_file_location("images_to_tfrecord",
                                                  REPO / "tools" / "images_to_tfrecord.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_folder_to_tfrecord_round_trip(tmp_path):
    good, bad = make_folder(tmp_path / "images")
    written, skipped = _converter().convert(str(tmp_path / "images"),
                                            str(tmp_path / "tfr" / "train"), num_shards=3,
                                            verbose=False)
    assert (written, skipped) == (good + bad, 0)  # raw copy: bad files are kept as-is
    assert len(list((tmp_path / "tfr").glob("train-*-of-00003.tfrecord"))) == 3
    source = sources.open_source(f"tfrecord:{tmp_path}/tfr/{{split}}-*.tfrecord")
    assert source.num_classes == 2 and source.num_examples("train") == good + bad
    examples = _all(source.load("train"))
    assert len(examples) == good and source.skipped.value == bad
    folder = sources.open_source(f"folder:{tmp_path / 'images'}")
    key = lambda ex: (int(ex["label"]), ex["image"].shape, int(ex["image"].sum()))  # noqa
    assert sorted(map(key, examples)) == sorted(map(key, _all(folder.load("train"))))
    written, skipped = _converter().convert(str(tmp_path / "images"),
                                            str(tmp_path / "valid" / "train"), num_shards=2,
                                            validate=True, verbose=False)
    assert (written, skipped) == (good, bad)


def test_class_balanced_subset_is_deterministic_and_balanced():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    subset = pipeline.class_balanced_subset(labels, 0.1, seed=3)
    assert np.bincount(labels[subset]).tolist() == [5, 3, 2]
    np.testing.assert_array_equal(subset, pipeline.class_balanced_subset(labels, 0.1, seed=3))
    assert not np.array_equal(subset, pipeline.class_balanced_subset(labels, 0.1, seed=4))
    with pytest.raises(DataError):
        pipeline.class_balanced_subset(np.array([0, -1]), 0.5, 0)


def test_input_pipelines_get_disjoint_shards(tmp_path):
    make_folder(tmp_path, bad=False)
    source = sources.open_source(f"folder:{tmp_path}")
    data = DataConfig(image_size=16, deterministic=True, shuffle_buffer=8)
    seen = []
    for pipeline_id in range(2):
        ctx = tf.distribute.InputContext(2, pipeline_id, 2)
        ds = pipeline.pretrain_dataset(source, "train", data,
                                       AugmentConfig(),
                                       batch_size=2, ctx=ctx)
        batch = next(iter(ds))
        assert batch["view1"].shape == (2, 16, 16, 3)
        seen.append(ds)
    a = next(iter(seen[0]))["view1"].numpy()
    b = next(iter(seen[1]))["view1"].numpy()
    assert not np.allclose(a, b)


def test_deterministic_pipeline_replays(tmp_path):
    make_folder(tmp_path, bad=False)
    source = sources.open_source(f"folder:{tmp_path}")
    data = DataConfig(image_size=16, deterministic=True, shuffle_buffer=8, seed=5)
    first = [next(iter(pipeline.pretrain_dataset(source, "train", data, AugmentConfig(), 4)))
             for _ in range(2)]
    np.testing.assert_array_equal(first[0]["view1"].numpy(), first[1]["view1"].numpy())


def test_pretraining_from_a_folder_with_bad_files(tmp_path):
    import json

    from simclr_tf import train
    from simclr_tf.config import Config, ModelConfig, RunConfig
    good, bad = make_folder(tmp_path / "images", labeled=False)
    config = Config(
        run=RunConfig(mode="pretrain", model_dir=str(tmp_path / "run"), train_steps=6,
                      checkpoint_steps=3, strategy="one_device"),
        data=DataConfig(dataset=f"folder:{tmp_path / 'images'}", image_size=16,
                        batch_size=4, shuffle_buffer=16),
        model=ModelConfig(depth=18, width_multiplier=0.125, num_proj_layers=2))
    _, results = train.run(config)
    assert results["global_step"] == 6
    # 24 examples drawn from 8 good images: at least two passes, each skipping both bad.
    assert results["skipped_images"] >= 2 * bad
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["skipped_images"] == results["skipped_images"]
    assert "knn_acc" not in saved  # unlabeled: no kNN monitor, no probe
    assert (tmp_path / "run" / "ckpt-6.index").exists()
