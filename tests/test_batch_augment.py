"""The batched colour stage against tf.image's per-image ops and the paper's rates."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.augment import batch_colour, batch_ops, image_ops, params
from simclr_tf.config import AugmentConfig, DataConfig
from simclr_tf.data import pipeline


def _images(n, size=8, seed=0):
    return tf.random.stateless_uniform([n, size, size, 3], [seed, 1])


def _on_planes(op, images, *args):
    """Runs a colour op (which reads [B, 3, H*W] planes) on [B, H, W, 3] images."""
    return batch_colour.from_planes(op(batch_colour.to_planes(images), *args), images.shape)


@pytest.mark.parametrize(
    "images",
    [
        _images(6),
        # Three levels per channel: ties between channels, grays (no chroma) and black pixels,
        # where HSV's hue and saturation take their special cases.
        tf.round(_images(6, seed=5) * 2.0) / 2.0,
    ],
    ids=["uniform", "ties_and_grays"],
)
def test_each_op_equals_tf_image_on_every_image(images):
    factors = tf.constant([0.3, 0.7, 1.0, 1.2, 1.5, 1.8])
    deltas = tf.constant([-0.2, -0.05, 0.0, 0.1, 0.15, 0.2])
    cases = [
        (batch_colour.adjust_contrast, tf.image.adjust_contrast, factors, ()),
        (batch_colour.adjust_saturation, tf.image.adjust_saturation, factors, ()),
        (batch_colour.adjust_hue, tf.image.adjust_hue, deltas, ()),
        (batch_colour.adjust_brightness, tf.image.adjust_brightness, deltas, ("v1",)),
        (batch_colour.adjust_brightness, lambda x, f: x * f, factors, ()),
        (
            lambda planes, _: batch_colour._grayscale(planes),
            lambda x, _: tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(x)),
            factors,
            (),
        ),
    ]
    for op, reference, values, extra in cases:
        batched = _on_planes(op, images, values, *extra)
        for i in range(6):
            np.testing.assert_allclose(batched[i], reference(images[i], values[i]), atol=2e-5)


@pytest.mark.parametrize(
    "jitter",
    [
        batch_colour.color_jitter,
        batch_colour.color_jitter_selected,
        tf.function(batch_colour.color_jitter_selected, jit_compile=True),
    ],
    ids=["partitioned", "selected", "selected_xla"],
)
def test_jitter_applies_each_image_its_own_order_with_clipping(jitter):
    images = _images(5, seed=3)
    factors = tf.constant(
        [
            [1.6, 0.5, 1.3, 0.4, 1.0],  # brightness (v2 factor)
            [0.3, 1.7, 1.5, 0.6, 1.1],  # contrast
            [1.8, 0.2, 0.9, 1.4, 0.5],  # saturation
            [0.1, -0.15, 0.2, -0.2, 0.0],
        ]
    )  # hue
    order = tf.constant([[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1], [0, 2, 1, 3]])
    out = _on_planes(jitter, images, factors, order)
    ops = [
        lambda x, f: x * f,
        tf.image.adjust_contrast,
        tf.image.adjust_saturation,
        tf.image.adjust_hue,
    ]
    for i in range(5):
        expected = images[i]
        for k in order[i].numpy():
            expected = tf.clip_by_value(ops[k](expected, factors[k, i]), 0.0, 1.0)
        np.testing.assert_allclose(out[i], expected, atol=3e-5)


def test_blur_uses_each_image_its_own_sigma():
    images = _images(4, size=12, seed=5)
    sigmas = tf.constant([0.1, 0.5, 1.0, 2.0])
    out = batch_colour.gaussian_blur(images, sigmas, radius=2)
    for i in range(4):
        np.testing.assert_allclose(
            out[i], image_ops.gaussian_blur(images[i], sigmas[i], 5), atol=1e-5
        )


def _changed(before, after):
    return np.abs(after.numpy() - before.numpy()).reshape(len(before), -1).max(axis=1) > 1e-6


@pytest.mark.parametrize(
    "field, expected", [("color_jitter_prob", 0.8), ("grayscale_prob", 0.2), ("blur_prob", 0.5)]
)
def test_each_transform_hits_its_share_of_images(field, expected):
    n = 2000
    images = _images(n, size=10, seed=7)
    only = {f: 0.0 for f in ("color_jitter_prob", "grayscale_prob", "blur_prob")}
    only[field] = expected
    config = AugmentConfig(**only)
    out = batch_ops.colour_stage(images, tf.constant([4, 2]), config)
    rate = _changed(images, out).mean()
    sigma = np.sqrt(expected * (1 - expected) / n)
    assert abs(rate - expected) < 4 * sigma, rate
    if field == "grayscale_prob":
        hit = _changed(images, out)
        channels = out.numpy()[hit]
        np.testing.assert_allclose(channels[..., 0], channels[..., 2], atol=1e-6)


def test_jitter_orders_are_uniform_permutations():
    n = 4800
    orders = batch_colour.random_orders(n, tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(np.sort(orders, axis=1), np.tile(np.arange(4), (n, 1)))
    counts = np.unique([tuple(o) for o in orders], axis=0, return_counts=True)[1]
    assert len(counts) == 24
    expected, sigma = n / 24, np.sqrt(n * (1 / 24) * (23 / 24))
    assert np.all(np.abs(counts - expected) < 4 * sigma), counts


def test_brightness_factors_are_drawn_per_image_over_the_paper_range():
    """On grey images contrast, saturation and hue are no-ops: out = 0.5 * factor."""
    n = 3000
    images = tf.fill([n, 2, 2, 3], 0.5)
    config = AugmentConfig(color_jitter_prob=1.0, grayscale_prob=0.0, blur_prob=0.0)
    factors = batch_ops.colour_stage(images, tf.constant([1, 1]), config).numpy() / 0.5
    assert np.allclose(factors, factors[:, :1, :1, :1], atol=1e-5)  # one factor per image
    factors = factors[:, 0, 0, 0]
    assert 0.2 - 1e-4 <= factors.min() and factors.max() <= 1.8 + 1e-4
    # Uniform on [0.2, 1.8]: mean 1.0, standard deviation 1.6 / sqrt(12).
    assert abs(factors.mean() - 1.0) < 4 * 0.462 / np.sqrt(n)
    assert abs(factors.std() - 1.6 / np.sqrt(12)) < 0.02


def test_same_seed_same_batch_and_different_seeds_differ():
    images = _images(16)
    config = AugmentConfig()
    a = batch_ops.colour_stage(images, tf.constant([9, 9]), config)
    b = batch_ops.colour_stage(images, tf.constant([9, 9]), config)
    c = batch_ops.colour_stage(images, tf.constant([9, 10]), config)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.numpy().min() >= 0.0 and a.numpy().max() <= 1.0


def test_ablation_transforms_fall_back_to_the_per_image_path():
    assert batch_ops.supports(AugmentConfig())
    assert not batch_ops.supports(AugmentConfig(rotation_prob=0.5))


class _ArraySource:
    num_classes = 2

    def __init__(self, images):
        self.images = images

    def load(self, split, shuffle_files=False, ids=None):
        labels = np.arange(len(self.images)) % 2
        names = [f"image{i}" for i in range(len(self.images))]
        return tf.data.Dataset.from_tensor_slices(
            {"image": self.images, "label": labels, "id": names}
        )

    def num_examples(self, split):
        return len(self.images)


@pytest.mark.parametrize("batched, compiled", [(True, True), (True, False), (False, False)])
def test_pretrain_pipeline_gives_views_of_the_same_shape_either_way(batched, compiled):
    images = np.random.default_rng(0).integers(0, 256, [12, 16, 16, 3], dtype=np.uint8)
    data = DataConfig(image_size=16, shuffle_buffer=4, deterministic=True)
    aug = AugmentConfig(batched_augment=batched, augment_jit_compile=compiled)
    first = [
        next(iter(pipeline.pretrain_dataset(_ArraySource(images), "train", data, aug, 4)))
        for _ in range(2)
    ]
    assert set(first[0]) == {"view1", "view2", "label"}
    assert first[0]["view1"].shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(first[0]["view1"], first[1]["view1"])  # replayable
    assert not np.allclose(first[0]["view1"], first[0]["view2"])
    fields = dataclasses.asdict(aug)
    assert fields["batched_augment"] is batched


@pytest.mark.parametrize("size, out", [(32, 32), (20, 12), (9, 16)])
def test_crop_and_resize_equals_tf_image_resize_of_each_crop(size, out):
    images = _images(6, size=size, seed=11)
    boxes = params.sample_crop_boxes(6, size, size, tf.constant([3, 4], tf.int64))
    boxes[0] = tf.tensor_scatter_nd_update(boxes[0], [[0]], [0])  # include a full-size crop
    boxes[1] = tf.tensor_scatter_nd_update(boxes[1], [[0]], [0])
    boxes[2] = tf.tensor_scatter_nd_update(boxes[2], [[0]], [size])
    boxes[3] = tf.tensor_scatter_nd_update(boxes[3], [[0]], [size])
    out_images = batch_ops.crop_and_resize(images, boxes, out)
    for i in range(6):
        top, left, h, w = (int(b[i]) for b in boxes)
        crop = tf.image.crop_to_bounding_box(images[i], top, left, h, w)
        expected = tf.clip_by_value(tf.image.resize(crop, [out, out], method="bicubic"), 0, 1)
        np.testing.assert_allclose(out_images[i], expected, atol=2e-5)


def test_crop_boxes_follow_the_paper_ranges():
    n, size = 4000, 32
    top, left, h, w = (
        b.numpy() for b in params.sample_crop_boxes(n, size, size, tf.constant([5, 6], tf.int64))
    )
    assert np.all(top >= 0) and np.all(left >= 0)
    assert np.all(top + h <= size) and np.all(left + w <= size)
    area = h * w / size**2
    # Rounding the sides to whole pixels moves area and aspect slightly off the range.
    assert area.min() >= 0.06 and area.max() <= 1.0
    assert np.all((w / h >= 0.6) & (w / h <= 1.7))
    assert 0.4 < area.mean() < 0.6  # E[area] = 0.54 for U(0.08, 1)
    # Offsets spread over the free range: the centre column is not always the same.
    assert len(np.unique(left[w == 16])) > 5


def test_flip_inside_the_resize_mirrors_exactly_the_chosen_images():
    images = _images(6, size=16, seed=2)
    boxes = params.sample_crop_boxes(6, 16, 16, tf.constant([1, 5], tf.int64))
    flip = tf.constant([True, False, True, True, False, False])
    plain = batch_ops.crop_and_resize(images, boxes, 12).numpy()
    out = batch_ops.crop_and_resize(images, boxes, 12, flip).numpy()
    for i, f in enumerate(flip.numpy()):
        np.testing.assert_allclose(out[i], plain[i, :, ::-1] if f else plain[i], atol=1e-6)


def test_about_half_the_views_are_mirrored():
    """Uncropped views of left-right asymmetric images: each is the image or its mirror."""
    n = 1000
    images = _images(n, size=6, seed=4)
    config = AugmentConfig(crop=False, color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
    out = batch_ops.view_of_batch(images, tf.constant([3, 3]), 6, config).numpy()
    flipped = np.all(np.isclose(out, images.numpy()[:, :, ::-1], atol=1e-5), axis=(1, 2, 3))
    kept = np.all(np.isclose(out, images.numpy(), atol=1e-5), axis=(1, 2, 3))
    assert np.all(flipped ^ kept)
    assert abs(flipped.mean() - 0.5) < 4 * np.sqrt(0.25 / n)


def test_two_views_of_a_uint8_batch():
    images = tf.constant(np.random.default_rng(3).integers(0, 256, [8, 32, 32, 3]), tf.uint8)
    v1, v2 = batch_ops.two_views_of_batch(images, tf.constant([1, 2]), 24, AugmentConfig())
    assert v1.shape == v2.shape == (8, 24, 24, 3) and v1.dtype == tf.float32
    assert v1.numpy().min() >= 0 and v1.numpy().max() <= 1
    assert not np.allclose(v1, v2)


@pytest.mark.parametrize("compiled", [True, False], ids=["xla", "no_xla"])
def test_view_equals_tf_image_ops_image_by_image(compiled):
    """Each image's crop, resize, flip, jitter in its order, grayscale and blur redone
    with tf.image's per-image ops from the drawn values."""
    n, size, out_size = 24, 16, 12
    images = _images(n, size=size, seed=8)
    # jitter 0.8 (strength 1), grayscale 0.2, blur 0.5
    config = AugmentConfig(augment_jit_compile=compiled)
    seed = tf.constant([6, 1], tf.int64)
    view = batch_ops.view_of_batch(images, seed, out_size, config).numpy()

    seeds = tf.random.experimental.stateless_split(seed, 3)
    boxes = params.sample_crop_boxes(n, size, size, seeds[0])
    flip = batch_colour.coin(n, seeds[1], 0.5).numpy()
    colour = {k: v.numpy() for k, v in batch_colour.colour_params(n, seeds[2], config).items()}
    ops = [
        lambda x, f: x * f,
        tf.image.adjust_contrast,
        tf.image.adjust_saturation,
        tf.image.adjust_hue,
    ]
    for field in ("jitter", "gray", "blur"):
        assert 0 < colour[field].sum() < n, field  # both outcomes occur in this batch
    assert 0 < flip.sum() < n
    for i in range(n):
        top, left, h, w = (int(b[i]) for b in boxes)
        x = tf.image.crop_to_bounding_box(images[i], top, left, h, w)
        x = tf.clip_by_value(tf.image.resize(x, [out_size, out_size], method="bicubic"), 0, 1)
        if flip[i]:
            x = tf.image.flip_left_right(x)
        if colour["jitter"][i]:
            for k in colour["order"][i]:
                x = tf.clip_by_value(ops[k](x, colour["factors"][k, i]), 0.0, 1.0)
        if colour["gray"][i]:
            x = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(x))
        if colour["blur"][i]:
            x = tf.clip_by_value(image_ops.gaussian_blur(x, colour["sigma"][i], 3), 0.0, 1.0)
        np.testing.assert_allclose(view[i], x, atol=5e-5, err_msg=f"image {i}")


def _xla_compiled_calls(fn, *args):
    """Names of the functions that `fn`'s graph calls with XLA's must-compile mark."""
    graph = tf.function(fn).get_concrete_function(*args).graph.as_graph_def()
    return [f.signature.name for f in graph.library.function if f.attr["_XlaMustCompile"].b]


@pytest.mark.parametrize("compiled", [True, False])
def test_pixel_arithmetic_is_compiled_by_xla_only_when_asked(compiled):
    images = tf.TensorSpec([4, 8, 8, 3], tf.uint8)
    config = AugmentConfig(augment_jit_compile=compiled)
    calls = _xla_compiled_calls(
        lambda x: batch_ops.two_views_of_batch(x, tf.constant([1, 2]), 8, config), images
    )
    assert len(calls) == (2 if compiled else 0)  # one per view
    floats = tf.TensorSpec([4, 8, 8, 3], tf.float32)
    calls = _xla_compiled_calls(
        lambda x: batch_ops.colour_stage(x, tf.constant([1, 2]), config), floats
    )
    assert len(calls) == (1 if compiled else 0)


def test_compiled_and_plain_views_agree():
    """Same seed, same drawn values: the XLA and TensorFlow arithmetic give the same
    views up to float rounding, on CIFAR-sized batches."""
    images = tf.cast(_images(64, size=32, seed=12) * 255, tf.uint8)
    views = [
        batch_ops.two_views_of_batch(
            images,
            tf.constant([5, 5]),
            32,
            AugmentConfig(color_jitter_strength=0.5, augment_jit_compile=c),
        )
        for c in (True, False)
    ]
    for xla, plain in zip(*views):
        np.testing.assert_allclose(xla, plain, atol=5e-5)
