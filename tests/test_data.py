"""Data sources on small real files written here: formats, corrupt files, errors, sharding."""

import functools
import importlib.util
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simclr_tf import data as sources
from simclr_tf.config import AugmentConfig, DataConfig
from simclr_tf.data import pipeline, subsets
from simclr_tf.data.source import DataError

from conftest import REPO


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


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "image folder not found"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no images"),
    ],
)
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


@functools.cache
def _converter():
    spec = importlib.util.spec_from_file_location(
        "images_to_tfrecord", REPO / "tools" / "images_to_tfrecord.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_folder_to_tfrecord_round_trip(tmp_path):
    good, bad = make_folder(tmp_path / "images")
    written, skipped = _converter().convert(
        str(tmp_path / "images"), str(tmp_path / "tfr" / "train"), num_shards=3, verbose=False
    )
    assert (written, skipped) == (good + bad, 0)  # raw copy: bad files are kept as-is
    assert len(list((tmp_path / "tfr").glob("train-*-of-00003.tfrecord"))) == 3
    source = sources.open_source(f"tfrecord:{tmp_path}/tfr/{{split}}-*.tfrecord")
    assert source.num_classes == 2 and source.num_examples("train") == good + bad
    examples = _all(source.load("train"))
    assert len(examples) == good and source.skipped.value == bad
    folder = sources.open_source(f"folder:{tmp_path / 'images'}")
    key = lambda ex: (int(ex["label"]), ex["image"].shape, int(ex["image"].sum()))  # noqa
    assert sorted(map(key, examples)) == sorted(map(key, _all(folder.load("train"))))
    # The converter names each record as the folder source names its file.
    ids = lambda exs: sorted(ex["id"] for ex in exs)  # noqa
    assert ids(examples) == ids(_all(folder.load("train")))
    written, skipped = _converter().convert(
        str(tmp_path / "images"),
        str(tmp_path / "valid" / "train"),
        num_shards=2,
        validate=True,
        verbose=False,
    )
    assert (written, skipped) == (good, bad)


def test_class_balanced_subset_is_deterministic_and_balanced():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    ids = np.array([f"img{i:03d}.png" for i in range(100)], dtype=object)
    subset = subsets.class_balanced_subset(ids, labels, 0.1, seed=3)
    label_of = dict(zip(ids, labels))
    assert np.bincount([label_of[i] for i in subset]).tolist() == [5, 3, 2]
    np.testing.assert_array_equal(subset, subsets.class_balanced_subset(ids, labels, 0.1, 3))
    # The order a source lists its examples in does not change the choice.
    order = np.random.default_rng(0).permutation(100)
    np.testing.assert_array_equal(
        subset, subsets.class_balanced_subset(ids[order], labels[order], 0.1, 3)
    )
    assert not np.array_equal(subset, subsets.class_balanced_subset(ids, labels, 0.1, 4))
    with pytest.raises(DataError):
        subsets.class_balanced_subset(np.array(["a", "b"]), np.array([0, -1]), 0.5, 0)


def _solid_folder(root, classes=10, per_class=30):
    """Images of one colour each, the colour coding the image's index."""
    for c in range(classes):
        for k in range(per_class):
            i = c * per_class + k
            pixels = np.zeros((8, 8, 3), np.uint8)
            pixels[..., 0], pixels[..., 1], pixels[..., 2] = i % 256, i // 256, 77
            path = pathlib.Path(root) / f"class{c}" / f"img{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return {f"class{i // per_class}/img{i:03d}.png": i for i in range(classes * per_class)}


def _image_index(views):
    """The index a solid image codes (crop, flip and resize keep a solid colour)."""
    pixels = np.round(views[:, 4, 4, :] * 255).astype(int)
    return pixels[:, 0] + 256 * pixels[:, 1]


def test_label_subset_is_the_same_examples_in_every_pass(tmp_path):
    index_of = _solid_folder(tmp_path)
    source = sources.open_source(f"folder:{tmp_path}")
    ids, labels = source.index("train")
    assert sorted(ids) == sorted(index_of)
    subset = subsets.class_balanced_subset(ids, labels, 0.1, seed=0)
    assert len(subset) == 30
    # The default pipeline: parallel, non-deterministic decoding and shuffling.
    data = DataConfig(image_size=8, shuffle_buffer=300)
    ds = pipeline.classifier_train_dataset(source, "train", data, 10, subset=subset)
    seen = np.concatenate([_image_index(b["image"].numpy()) for b in ds.take(12)])
    # 12 batches of 10: four passes over the 30 chosen examples, each seen 4 times.
    assert sorted(set(seen)) == sorted(index_of[i] for i in subset)
    assert set(np.bincount(seen)[seen]) == {4}


def test_input_pipelines_get_disjoint_shards_by_example_id(tmp_path):
    index_of = _solid_folder(tmp_path, classes=2, per_class=20)
    source = sources.open_source(f"folder:{tmp_path}")
    data = DataConfig(image_size=8, shuffle_buffer=8)
    shards = []
    for pipeline_id in range(2):
        ctx = tf.distribute.InputContext(2, pipeline_id, 2)
        ds = pipeline._examples(source, "train", data, ctx, train=False)
        shards.append([ex["id"].decode() for ex in ds.as_numpy_iterator()])
        batch = next(
            iter(
                pipeline.pretrain_dataset(
                    source, "train", data, AugmentConfig(), batch_size=2, ctx=ctx
                )
            )
        )
        assert batch["view1"].shape == (2, 8, 8, 3)
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(index_of)
    assert all(len(s) > 0 for s in shards)


def test_subset_files_round_trip_and_unknown_ids_are_refused(tmp_path):
    index_of = _solid_folder(tmp_path / "images", classes=2, per_class=10)
    source = sources.open_source(f"folder:{tmp_path / 'images'}")
    ids, _ = source.index("train")
    path = tmp_path / "subset.txt"
    subsets.write_subset_file(str(path), ["class1/img015.png", "class0/img003.png"])
    path.write_text("# a published list\n" + path.read_text() + "\nimg007.png\n")
    listed = subsets.read_subset_file(str(path))
    # Whole ids, and bare file names (as SimCLR's ImageNet lists give them).
    assert list(subsets.match_subset(listed, ids)) == [
        "class0/img003.png",
        "class0/img007.png",
        "class1/img015.png",
    ]
    with pytest.raises(DataError, match="1 of 2 ids .*'nope.png'"):
        subsets.match_subset(np.array(["class0/img003.png", "nope.png"]), ids)
    assert len(index_of) == 20


def test_deterministic_pipeline_replays(tmp_path):
    make_folder(tmp_path, bad=False)
    source = sources.open_source(f"folder:{tmp_path}")
    data = DataConfig(image_size=16, deterministic=True, shuffle_buffer=8, seed=5)
    first = [
        next(iter(pipeline.pretrain_dataset(source, "train", data, AugmentConfig(), 4)))
        for _ in range(2)
    ]
    np.testing.assert_array_equal(first[0]["view1"].numpy(), first[1]["view1"].numpy())


def test_pretraining_from_a_folder_with_bad_files(tmp_path):
    import json

    from simclr_tf import train
    from simclr_tf.config import Config, ModelConfig, RunConfig

    good, bad = make_folder(tmp_path / "images", labeled=False)
    config = Config(
        run=RunConfig(
            mode="pretrain",
            model_dir=str(tmp_path / "run"),
            train_steps=6,
            checkpoint_steps=3,
            strategy="one_device",
        ),
        data=DataConfig(
            dataset=f"folder:{tmp_path / 'images'}", image_size=16, batch_size=4, shuffle_buffer=16
        ),
        model=ModelConfig(depth=18, width_multiplier=0.125, num_proj_layers=2),
    )
    _, results = train.run(config)
    assert results["global_step"] == 6
    # 24 examples drawn from 8 good images: at least two passes, each skipping both bad.
    assert results["skipped_images"] >= 2 * bad
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["skipped_images"] == results["skipped_images"]
    assert "knn_acc" not in saved  # unlabeled: no kNN monitor, no probe
    assert (tmp_path / "run" / "ckpt-6.index").exists()


def test_label_fraction_run_writes_its_subset_and_a_rerun_from_the_file_matches(tmp_path):
    from simclr_tf import train
    from simclr_tf.config import Config, ModelConfig, OptimConfig, RunConfig

    _solid_folder(tmp_path / "images", classes=4, per_class=10)

    def linear_eval(name, **data):
        config = Config(
            run=RunConfig(
                mode="linear_eval",
                model_dir=str(tmp_path / name),
                train_steps=2,
                checkpoint_steps=2,
                strategy="one_device",
                precision="float32",
            ),
            data=DataConfig(
                dataset=f"folder:{tmp_path / 'images'}",
                image_size=8,
                batch_size=4,
                shuffle_buffer=16,
                eval_split="train",
                **data,
            ),
            model=ModelConfig(depth=18, width_multiplier=0.125, num_proj_layers=2),
            optim=OptimConfig(optimizer="momentum", learning_rate=0.1, weight_decay=0.0),
        )
        _, results = train.run(config)
        return results, (tmp_path / name / subsets.SUBSET_FILE).read_text().split()

    results, chosen = linear_eval("fraction", label_fraction=0.2, seed=1)
    assert results["train_examples"] == len(chosen) == 8  # 2 of each class's 10
    assert sorted({c.split("/")[0] for c in chosen}) == [f"class{i}" for i in range(4)]
    again, same = linear_eval("again", label_fraction=0.2, seed=1)
    assert same == chosen
    from_file, listed = linear_eval(
        "from_file", label_subset=str(tmp_path / "fraction" / subsets.SUBSET_FILE)
    )
    assert listed == chosen and from_file["train_examples"] == 8


def test_tfds_examples_carry_their_dataset_ids(cifar_data_dir):
    source = sources.open_source("cifar10", cifar_data_dir, download=False)
    ids, labels = source.index("test")
    assert len(ids) == len(set(ids)) == 10000 and len(labels) == 10000
    assert all(i.startswith("test_") for i in ids[:100])


def test_unprepared_tfds_dataset_offline_fails_at_once_with_the_data_dir_hint(tmp_path):
    import socket
    import time

    from simclr_tf.data import tfds_source

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    assert tfds_source.reachable([f"https://127.0.0.1:{port}/data.gz"], timeout=2) is False
    assert tfds_source.reachable([]) is None
    tried = []

    def offline(urls):
        tried.extend(urls)
        return tfds_source.reachable(
            [f"https://127.0.0.1:{port}/{u[-8:]}" for u in urls], timeout=2
        )

    with pytest.raises(DataError, match="cannot be reached; .*--data_dir or set TFDS_DATA_DIR"):
        tfds_source.tfds_source("mnist", str(tmp_path), probe=offline)
    assert tried and all(u.startswith("https://") for u in tried)  # the dataset's own URLs
    assert time.perf_counter() - start < 30
    assert not list(tmp_path.glob("downloads/*"))  # no download was started


def test_grayscale_and_rgba_tfds_images_become_rgb():
    from simclr_tf.data import tfds_source

    gray = tf.constant(np.arange(12, dtype=np.uint8).reshape(2, 2, 3)[..., :1])
    np.testing.assert_array_equal(
        tfds_source._rgb(gray, 1).numpy(), np.repeat(gray.numpy(), 3, axis=-1)
    )
    rgba = tf.constant(np.arange(16, dtype=np.uint8).reshape(2, 2, 4))
    np.testing.assert_array_equal(tfds_source._rgb(rgba, 4).numpy(), rgba.numpy()[..., :3])


def test_a_tfrecord_without_image_encoded_is_refused_at_open(tmp_path):
    path = str(tmp_path / "bad.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        example = tf.train.Example(
            features=tf.train.Features(
                feature={"image/raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))}
            )
        )
        writer.write(example.SerializeToString())
    with pytest.raises(DataError, match="no 'image/encoded' feature .found: image/raw") as info:
        sources.open_source(f"tfrecord:{path}")
    assert "\n" not in str(info.value)
    (tmp_path / "junk.tfrecord").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="cannot read TFRecords"):
        sources.open_source(f"tfrecord:{tmp_path}/junk.tfrecord")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe\x00garbage\x80", "not a text file"),
        (b"a.jpg\nb.jpg 3\n", "line 2: 'b.jpg 3' is not one id"),
        (b"# only a comment\n\n", "lists no examples"),
    ],
)
def test_a_bad_label_subset_file_is_one_line(tmp_path, content, message):
    from simclr_tf.data import subsets

    path = tmp_path / "subset.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        subsets.read_subset_file(str(path))
    assert "\n" not in str(info.value)
