"""Augmentations: determinism, ranges and the paper's probabilities measured over draws."""

import math

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.augment import ablation_ops, image_ops, params
from simclr_tf.config import AugmentConfig

DRAWS = 2000


def _image(seed=0, h=32, w=32):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


def _binomial_tolerance(p, n):
    return 4 * math.sqrt(p * (1 - p) / n)


def _draw_views(image, config, n=DRAWS, size=32):
    """n views of one image with seeds (k, 7), computed inside tf.data like training."""
    ds = tf.data.Dataset.range(n).map(
        lambda k: image_ops.simclr_view(image, tf.stack([k, 7]), size, size, config)
    )
    return np.concatenate([b.numpy() for b in ds.batch(500)])


def test_same_seed_same_views_eager_and_in_dataset():
    image = _image()
    options = dict(blur_prob=0.5, color_jitter_strength=0.5)
    eager = image_ops.two_views(image, tf.constant([3, 4]), 32, 32, **options)
    ds = tf.data.Dataset.from_tensors(image).map(
        lambda x: image_ops.two_views(x, tf.constant([3, 4]), 32, 32, **options)
    )
    mapped = next(iter(ds))
    for a, b in zip(eager, mapped):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    again = image_ops.two_views(image, tf.constant([3, 4]), 32, 32, **options)
    np.testing.assert_array_equal(eager[0].numpy(), again[0].numpy())


def test_views_differ_and_stay_in_unit_range():
    image = _image(1, 48, 40)
    for k in range(20):
        v1, v2 = image_ops.two_views(image, tf.constant([k, 0]), 24, 24, blur_prob=0.5)
        assert v1.shape == (24, 24, 3) and v1.dtype == tf.float32
        assert float(tf.reduce_min(v1)) >= 0.0 and float(tf.reduce_max(v1)) <= 1.0
        assert float(tf.reduce_max(tf.abs(v1 - v2))) > 0.01


def test_unknown_option_is_rejected():
    with pytest.raises(ValueError, match="unknown augmentation options"):
        image_ops.two_views(_image(), tf.constant([0, 0]), 32, 32, colour=1.0)


def test_crop_boxes_inside_image_with_paper_area_and_aspect():
    shape = tf.constant([60, 80, 3])
    areas, aspects = [], []
    for k in range(DRAWS):
        (top, left), (h, w) = [t.numpy() for t in image_ops.sample_crop_box(shape, [k, 1])]
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
        areas.append(h * w / (60 * 80))
        aspects.append((w / h) / (80 / 60))
    areas, aspects = np.array(areas), np.array(aspects)
    # Rounding to whole pixels moves the area by at most about one row/column.
    assert areas.min() >= 0.08 - 2 / 60 and areas.max() <= 1.0
    assert areas.min() < 0.12 and areas.max() > 0.9  # the range is really used
    assert aspects.min() >= 3 / 4 * 0.85 and aspects.max() <= 4 / 3 * 1.15


def test_grayscale_rate_is_0_2():
    config = AugmentConfig(crop=False, flip=False, color_jitter_prob=0.0, blur_prob=0.0)
    views = _draw_views(image_ops.to_float_image(_image(2)), config)
    gray = np.all(np.abs(views[..., 0] - views[..., 1]) < 1e-6, axis=(1, 2))
    assert abs(gray.mean() - 0.2) < _binomial_tolerance(0.2, DRAWS)


def test_color_jitter_rate_is_0_8():
    config = AugmentConfig(crop=False, flip=False, grayscale_prob=0.0, blur_prob=0.0)
    image = image_ops.to_float_image(_image(3))
    views = _draw_views(image, config)
    changed = np.max(np.abs(views - image.numpy()), axis=(1, 2, 3)) > 1e-4
    assert abs(changed.mean() - 0.8) < _binomial_tolerance(0.8, DRAWS)


def test_blur_rate_is_0_5_and_flip_rate_is_0_5():
    image = image_ops.to_float_image(_image(4))
    blur_only = AugmentConfig(
        crop=False, flip=False, color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.5
    )
    views = _draw_views(image, blur_only, n=1000)
    blurred = np.max(np.abs(views - image.numpy()), axis=(1, 2, 3)) > 1e-4
    assert abs(blurred.mean() - 0.5) < _binomial_tolerance(0.5, 1000)
    flip_only = AugmentConfig(crop=False, color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
    views = _draw_views(image, flip_only, n=1000)
    flipped = np.all(np.abs(views - image.numpy()[:, ::-1]) < 1e-6, axis=(1, 2, 3))
    assert abs(flipped.mean() - 0.5) < _binomial_tolerance(0.5, 1000)


def test_brightness_v2_multiplies_v1_adds():
    black = tf.zeros([8, 8, 3])
    gray = tf.fill([8, 8, 3], 0.5)
    for k in range(10):
        seed = tf.constant([k, 0])
        assert float(tf.reduce_max(image_ops.random_brightness(black, seed, 0.4, "v2"))) == 0.0
        factor = image_ops.random_brightness(gray, seed, 0.4, "v2").numpy() / 0.5
        assert 0.6 - 1e-6 <= factor.min() and factor.max() <= 1.4 + 1e-6
        shifted = image_ops.random_brightness(black, seed, 0.4, "v1").numpy()
        assert np.allclose(shifted, shifted.flat[0]) and abs(shifted.flat[0]) <= 0.4


def test_gaussian_kernel_matches_formula_and_blur_of_impulse():
    sigma, radius = 1.3, 3
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    reference = np.exp(-(x**2) / (2 * sigma**2))
    reference /= reference.sum()
    np.testing.assert_allclose(
        params.gaussian_kernels([sigma], radius)[0].numpy(), reference, rtol=1e-5
    )
    impulse = np.zeros([15, 15, 3], np.float32)
    impulse[7, 7] = 1.0
    blurred = image_ops.gaussian_blur(tf.constant(impulse), sigma, 2 * radius + 1).numpy()
    expected = np.zeros([15, 15])
    expected[4:11, 4:11] = np.outer(reference, reference)
    np.testing.assert_allclose(blurred[..., 1], expected, atol=1e-6)


def test_eval_view_small_images_unchanged_large_images_center_cropped():
    small = _image(5)
    np.testing.assert_allclose(
        image_ops.eval_view(small, 32, 32).numpy(), small.numpy() / 255.0, atol=1e-5
    )
    large = np.zeros([64, 80, 3], np.uint8)
    large[4:60, 12:68] = 255  # exactly the 87.5% centre crop of the short side (56 px)
    out = image_ops.eval_view(tf.constant(large), 16, 16).numpy()
    assert out.min() > 0.99  # nothing of the black border survives the crop


def test_train_view_has_no_colour_change():
    gray = tf.fill([32, 32, 3], 0.25)
    out = image_ops.train_view(gray, tf.constant([1, 2]), 32, 32).numpy()
    np.testing.assert_allclose(out, 0.25, atol=1e-5)


def test_grayscale_and_rgba_inputs_are_handled():
    one_channel = tf.zeros([10, 10, 1], tf.uint8)
    assert image_ops.to_float_image(one_channel).shape == (10, 10, 3)
    with pytest.raises(ValueError):
        image_ops.to_float_image(tf.zeros([10, 10, 4]))


def test_rotation_keeps_pixels_and_cutout_zeroes_a_square():
    image = image_ops.to_float_image(_image(6))
    rotated = ablation_ops.random_rotation(image, tf.constant([0, 1])).numpy()
    assert not np.allclose(rotated, image.numpy())
    np.testing.assert_allclose(np.sort(rotated.ravel()), np.sort(image.numpy().ravel()))
    ones = tf.ones([32, 32, 3])
    cut = ablation_ops.cutout(ones, tf.constant([2, 3])).numpy()[..., 0]
    rows, cols = np.nonzero(cut == 0)
    side_r, side_c = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert side_r == side_c and (cut == 0).sum() == side_r * side_c
    assert 0.1 * 32 - 1 <= side_r <= 0.5 * 32


def test_sobel_noise_and_color_drop():
    flat = tf.fill([16, 16, 3], 0.3)
    assert float(tf.reduce_max(ablation_ops.sobel(flat))) == 0.0
    step = np.zeros([16, 16, 3], np.float32)
    step[:, 8:] = 1.0
    edges = ablation_ops.sobel(tf.constant(step)).numpy()
    assert edges[:, 7:9].min() > 0.5 and edges[:, :6].max() == 0.0
    noisy = ablation_ops.gaussian_noise(flat, tf.constant([5, 5])).numpy()
    assert noisy.min() >= 0 and noisy.max() <= 1 and noisy.std() > 0
    dropped = ablation_ops.color_drop(image_ops.to_float_image(_image(7))).numpy()
    np.testing.assert_allclose(dropped[..., 0], dropped[..., 2])
