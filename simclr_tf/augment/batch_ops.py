"""The SimCLR views made over a whole batch at once.

On small images such as CIFAR's 32 x 32 the per-image graph of `image_ops.simclr_view`
costs more in op dispatch than in arithmetic (dozens of small ops per view, with
`switch_case` and `cond`), and on a CPU that work competes with the train step for
the same cores. Written over `[B, H, W, 3]` with per-image random values it is a
handful of ops per batch. The distribution is the per-image one: each image draws
its own crop, flip, apply decisions, jitter factors and order, and blur sigma, and
the ops compute the same values (`tf.image.resize`'s bicubic taps, `tf.image`'s HSV
saturation and hue, contrast about the per-channel mean, clipping after each op);
tests compare them image by image with the `tf.image` functions.

The random values are drawn first (`colour_params`, crop boxes, flips) and the pixel
arithmetic then reads them, so tests can redo each image with `tf.image` from the same
values. That arithmetic (crop matmuls, jitter, grayscale) runs as one XLA-compiled
function per view when `augment_jit_compile` is on (the default): XLA fuses its few
dozen elementwise ops into a few passes over the batch, where TensorFlow's kernels make
one pass per op. Under XLA the jitter is `color_jitter_selected` (static shapes),
otherwise the partitioned `color_jitter`.

`views_of_batch` needs images of one size (CIFAR, or any TFDS dataset with a fixed
shape); for images of mixed sizes the pipeline crops image by image and applies only
`colour_stage` per batch.
"""

import tensorflow as tf

from simclr_tf.augment import params as shared
from simclr_tf.augment.batch_colour import (
    blur_images,
    coin,
    colour_params,
    colour_planes,
    from_planes,
    to_planes,
)
from simclr_tf.config import AugmentConfig

KEYS_A = -0.5  # the cubic kernel of tf.image.resize(method="bicubic")
KERNEL_TABLE_SIZE = 1024  # TF's bicubic kernel quantises the tap offset to 1/1024


def supports(config: AugmentConfig):
    """The batched stage covers the default transforms, not the paper's ablation ones."""
    return not any(
        p > 0
        for p in (
            config.rotation_prob,
            config.cutout_prob,
            config.noise_prob,
            config.sobel_prob,
            config.color_drop_prob,
        )
    )


def _per_image(values):
    return tf.reshape(values, [-1, 1, 1, 1])


def _compiled(fn, config: AugmentConfig):
    """`fn` compiled by XLA when `config.augment_jit_compile`: the pixel arithmetic is
    a few dozen elementwise ops per view, which XLA fuses into a few passes over the
    batch; TensorFlow's kernels make one pass per op (BENCHMARKS.md)."""
    return tf.function(fn, jit_compile=True) if config.augment_jit_compile else fn


def apply_colour(images, params, config: AugmentConfig):
    """Jitter, grayscale and blur of a [B, H, W, 3] batch with the drawn `params`."""
    if "factors" in params or "gray" in params:

        def colour(images, params):
            return from_planes(colour_planes(to_planes(images), params, config), tf.shape(images))

        images = _compiled(colour, config)(images, params)
    return blur_images(images, params)


def colour_stage(images, seed, config: AugmentConfig):
    """Jitter (prob 0.8), grayscale (0.2), blur (0.5 by default) of a [B, H, W, 3] batch.

    `seed` is one [2] seed for the whole batch; every image still draws its own values.
    """
    params = colour_params(tf.shape(images)[0], seed, config)
    return apply_colour(images, params, config)


# --- Crop, resize and flip ----------------------------------------------------------


def _keys_cubic(x):
    x = tf.abs(x)
    a = KEYS_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return tf.where(x <= 1, near, tf.where(x < 2, far, tf.zeros_like(x)))


def resize_matrices(start, length, full, out):
    """[B, out, full]: row i holds the bicubic taps of output sample i when the span
    [start, start + length) of a `full`-long axis is resized to `out` samples.

    The taps are those of `tf.image.resize(..., "bicubic")` (half-pixel centres, Keys
    a = -0.5, offsets quantised to 1/1024, taps outside the span dropped and the rest
    renormalised), so `A_y @ image @ A_x^T` is crop-then-resize.
    """
    length = tf.cast(length, tf.float32)[:, None]
    centre = (tf.range(out, dtype=tf.float32)[None, :] + 0.5) * (length / out) - 0.5
    base = tf.floor(centre)
    delta = tf.round((centre - base) * KERNEL_TABLE_SIZE) / KERNEL_TABLE_SIZE
    offsets = tf.constant([-1.0, 0.0, 1.0, 2.0])
    taps = base[..., None] + offsets  # [B, out, 4]
    weights = _keys_cubic(delta[..., None] - offsets)
    inside = (taps >= 0) & (taps < length[..., None])
    weights = tf.where(inside, weights, 0.0)
    weights /= tf.reduce_sum(weights, axis=-1, keepdims=True)
    index = tf.cast(taps, tf.int32) + tf.cast(start, tf.int32)[:, None, None]
    index = tf.where(inside, index, -1)  # one_hot of -1 is all zeros
    return tf.add_n([weights[..., k, None] * tf.one_hot(index[..., k], full) for k in range(4)])


def crop_and_resize_planes(images, boxes, size, flip=None):
    """Bicubic crop-and-resize of every [B, H, W, C] image to `size` x `size`, clipped
    to [0, 1], as [B, C, size * size] planes.

    `flip` ([B] bool) mirrors those outputs left-right, for free: their column
    matrices are reversed.
    """
    top, left, crop_h, crop_w = boxes
    shape = tf.shape(images)
    rows = resize_matrices(top, crop_h, shape[1], size)
    cols = resize_matrices(left, crop_w, shape[2], size)
    if flip is not None:
        cols = tf.where(_per_image(flip)[..., 0], tf.reverse(cols, axis=[1]), cols)
    # rows @ channel @ cols^T for every image and channel: two batched matmuls.
    channels = tf.transpose(images, [0, 3, 1, 2])  # [B, C, H, W]
    out = tf.matmul(tf.matmul(rows[:, None], channels), cols[:, None], transpose_b=True)
    return tf.clip_by_value(tf.reshape(out, [shape[0], shape[3], size * size]), 0.0, 1.0)


def crop_and_resize(images, boxes, size, flip=None):
    """`crop_and_resize_planes` as [B, size, size, C] images."""
    shape = tf.shape(images)
    return from_planes(
        crop_and_resize_planes(images, boxes, size, flip), [shape[0], size, size, shape[3]]
    )


def to_float_images(images):
    images = tf.image.convert_image_dtype(images, tf.float32)
    return tf.image.grayscale_to_rgb(images) if images.shape[-1] == 1 else images


def view_of_batch(images, seed, size, config: AugmentConfig):
    """One SimCLR view of every image of a float [B, H, W, 3] batch of one size."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    shape = tf.shape(images)
    batch = shape[0]
    if config.crop:
        boxes = shared.sample_crop_boxes(
            batch, shape[1], shape[2], seeds[0], config.area_range, config.aspect_range
        )
    else:
        zeros = tf.zeros([batch], tf.int32)
        boxes = [zeros, zeros, zeros + shape[1], zeros + shape[2]]
    flip = coin(batch, seeds[1], 0.5) if config.flip else tf.zeros([batch], tf.bool)
    colour = colour_params(batch, seeds[2], config)

    def pixels(images, boxes, flip, colour):
        planes = colour_planes(crop_and_resize_planes(images, boxes, size, flip), colour, config)
        return from_planes(planes, [tf.shape(images)[0], size, size, 3])

    images = _compiled(pixels, config)(images, boxes, flip, colour)
    images = blur_images(images, colour)
    return tf.ensure_shape(images, [None, size, size, 3])


def two_views_of_batch(images, seed, size, config: AugmentConfig):
    """The two views of every image of a [B, H, W, C] batch (uint8 or float in [0, 1])."""
    images = to_float_images(images)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    return (
        view_of_batch(images, seeds[0], size, config),
        view_of_batch(images, seeds[1], size, config),
    )
