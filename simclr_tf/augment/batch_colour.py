"""The colour half of the batched views: jitter, grayscale and blur over [B, H, W, 3]
with per-image random values (see `batch_ops` for why views are made per batch).

The random values are drawn first (`colour_params`) and the pixel arithmetic then
reads them, so tests redo each image with `tf.image` from the same values.
"""

import tensorflow as tf

from simclr_tf.augment import params as shared
from simclr_tf.config import AugmentConfig

NUM_JITTER_OPS = 4  # brightness, contrast, saturation, hue


def coin(batch, seed, prob):
    """[B] bool: each image's own draw of an event of probability `prob`."""
    return tf.random.stateless_uniform([batch], seed) < prob


# --- Colour, on planes ---------------------------------------------------------------
# The colour ops read a batch as planes, [B, 3, H*W]: a channel is then a contiguous
# [B, H*W] slice, so HSV's max/min over channels are elementwise ops, and a per-image
# factor broadcasts over one contiguous block. On [B, H, W, 3] the same arithmetic needs
# reductions over a size-3 axis and broadcasts of [B, 1, 1, 3] or [B, H, W, 1], which
# TensorFlow's CPU kernels run several times slower (BENCHMARKS.md).


def to_planes(images):
    """[B, H, W, 3] -> [B, 3, H*W]."""
    return tf.transpose(tf.reshape(images, [tf.shape(images)[0], -1, 3]), [0, 2, 1])


def from_planes(planes, shape):
    """[B, 3, H*W] -> `shape` ([B, H, W, 3])."""
    return tf.reshape(tf.transpose(planes, [0, 2, 1]), shape)


def _per_plane_image(values):
    return tf.reshape(values, [-1, 1, 1])


def _value_and_chroma(planes):
    r, g, b = tf.unstack(planes, axis=1)
    value = tf.maximum(tf.maximum(r, g), b)
    return (r, g, b), value, value - tf.minimum(tf.minimum(r, g), b)


def adjust_brightness(planes, factor, version="v2"):
    """v2 multiplies by `factor`, v1 adds it (one value per image)."""
    f = _per_plane_image(factor)
    return planes + f if version == "v1" else planes * f


def adjust_contrast(planes, factor):
    """(x - mean) * f + mean, the mean taken per image and channel."""
    mean = tf.reduce_mean(planes, axis=2, keepdims=True)
    f = _per_plane_image(factor)
    return planes * f + mean * (1.0 - f)


def adjust_saturation(planes, factor):
    """HSV saturation x factor (clipped to 1), without leaving RGB.

    With V = max(r, g, b) fixed, every channel is V - V * S * k(H), so scaling S by f
    moves each channel towards V by f; S' = min(f S, 1) caps f at 1 / S = V / (V - min).
    """
    channels, value, chroma = _value_and_chroma(planes)
    f = tf.minimum(tf.reshape(factor, [-1, 1]), tf.math.divide_no_nan(value, chroma))
    return tf.stack([value + f * (c - value) for c in channels], axis=1)


def adjust_hue(planes, delta):
    """HSV hue + delta, wrapped to [0, 1); S and V untouched.

    The hue is computed from the planes (tf.image's hexcone formula); the way back is
    `tf.image.hsv_to_rgb`, whose kernel is fast, unlike `rgb_to_hsv`'s.
    """
    (r, g, b), value, chroma = _value_and_chroma(planes)
    is_r, is_g = value == r, value == g
    numerator = tf.where(is_r, g - b, tf.where(is_g, b - r, r - g))
    sector = tf.where(is_r, 0.0, tf.where(is_g, 2.0, 4.0))
    hue = (tf.math.divide_no_nan(numerator, chroma) + sector) * (1.0 / 6.0) + tf.reshape(
        delta, [-1, 1]
    )
    hue -= tf.floor(hue)
    hsv = tf.stack([hue, tf.math.divide_no_nan(chroma, value), value], axis=-1)
    return tf.transpose(tf.image.hsv_to_rgb(hsv), [0, 2, 1])


def _jitter_factors(batch, seed, strength, version):
    """[4, B] per-image factors, drawn from `params.jitter_ranges`."""
    ranges = shared.jitter_ranges(strength, version)
    seeds = tf.random.experimental.stateless_split(seed, NUM_JITTER_OPS)
    ops = ("brightness", "contrast", "saturation", "hue")
    return tf.stack(
        [tf.random.stateless_uniform([batch], seeds[i], *ranges[op]) for i, op in enumerate(ops)]
    )


def random_orders(batch, seed):
    """[B, 4] uniformly random permutations of the jitter ops, one per image."""
    keys = tf.random.stateless_uniform([batch, NUM_JITTER_OPS], seed)
    return tf.argsort(keys, axis=1)


def color_jitter(planes, factors, order, apply=None, version="v2"):
    """Applies the 4 jitter ops in each image's own `order` ([B, 4] permutations) to
    [B, 3, H*W] planes.

    At each of the 4 stages the batch is partitioned by the op each image takes next
    (images with `apply` false pass through untouched), so every jittered image goes
    through each op exactly once and the work is 4 ops per image. (All 4 ops on the
    whole batch with a per-image selection, fused by XLA, measured no cheaper in the
    pipeline: BENCHMARKS.md.)
    """
    ops = [
        lambda x, f: adjust_brightness(x, f, version),
        adjust_contrast,
        adjust_saturation,
        adjust_hue,
    ]
    index = tf.range(tf.shape(planes)[0])
    op_of_image = tf.cast(order, tf.int32)
    if apply is not None:
        op_of_image = tf.where(apply[:, None], op_of_image, NUM_JITTER_OPS)  # 4: unchanged
    for stage in range(NUM_JITTER_OPS):
        parts = tf.dynamic_partition(planes, op_of_image[:, stage], NUM_JITTER_OPS + 1)
        where = tf.dynamic_partition(index, op_of_image[:, stage], NUM_JITTER_OPS + 1)
        results = [
            tf.clip_by_value(op(part, tf.gather(factors[k], rows)), 0.0, 1.0)
            for k, (op, part, rows) in enumerate(zip(ops, parts, where))
        ]
        planes = tf.reshape(tf.dynamic_stitch(where, results + parts[-1:]), tf.shape(planes))
    return planes


def color_jitter_selected(planes, factors, order, apply=None, version="v2"):
    """`color_jitter` with static shapes, for XLA: at each of the 4 stages every op runs
    on the whole batch and each image keeps the result of the op it takes next.

    Four times the arithmetic, but XLA fuses each stage into one pass over memory, and
    the batch needs no partitioning: 4.5 against 13.5 CPU ms per 256-image CIFAR view
    in the pipeline. Without XLA it is about 3x slower than `color_jitter`
    (BENCHMARKS.md).
    """
    ops = [
        lambda x, f: adjust_brightness(x, f, version),
        adjust_contrast,
        adjust_saturation,
        adjust_hue,
    ]
    op_of_image = tf.cast(order, tf.int32)
    if apply is not None:
        op_of_image = tf.where(apply[:, None], op_of_image, NUM_JITTER_OPS)  # 4: unchanged
    for stage in range(NUM_JITTER_OPS):
        out = planes
        for k, op in enumerate(ops):
            takes_k = tf.reshape(op_of_image[:, stage] == k, [-1, 1, 1])
            out = tf.where(takes_k, tf.clip_by_value(op(planes, factors[k]), 0.0, 1.0), out)
        planes = out
    return planes


def gaussian_blur(images, sigma, radius):
    """Separable blur with one sigma per image, zero padding (as `image_ops.gaussian_blur`).

    The batch is laid out as channels of one image so a depthwise conv applies every
    image's own kernel in one op.
    """
    shape = tf.shape(images)
    kernels = shared.gaussian_kernels(sigma, radius)  # [B, K]
    kernels = tf.reshape(tf.repeat(kernels, 3, axis=0), [-1, 2 * radius + 1])  # [B*3, K]
    kernels = tf.transpose(kernels)  # [K, B*3]
    as_channels = tf.reshape(
        tf.transpose(images, [1, 2, 0, 3]), [1, shape[1], shape[2], shape[0] * 3]
    )
    out = tf.nn.depthwise_conv2d(as_channels, kernels[None, :, :, None], [1, 1, 1, 1], "SAME")
    out = tf.nn.depthwise_conv2d(out, kernels[:, None, :, None], [1, 1, 1, 1], "SAME")
    return tf.transpose(tf.reshape(out, [shape[1], shape[2], shape[0], 3]), [2, 0, 1, 3])


def _where_per_image(chosen, new, old):
    """new where `chosen`, else old; a blend, as tf.where with broadcasting is slow here."""
    chosen = tf.reshape(tf.cast(chosen, old.dtype), [-1] + [1] * (len(old.shape) - 1))
    return old + chosen * (new - old)


def _grayscale(planes):
    """tf.image.rgb_to_grayscale's weights, the gray copied to the 3 channels."""
    r, g, b = tf.unstack(planes, axis=1)
    wr, wg, wb = shared.GRAYSCALE_WEIGHTS
    gray = wr * r + wg * g + wb * b
    return tf.stack([gray, gray, gray], axis=1)


def colour_params(batch, seed, config: AugmentConfig):
    """The colour stage's random values for a batch: every image draws its own."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
    params = {}
    if config.color_jitter_prob > 0:
        params["factors"] = _jitter_factors(
            batch, seeds[0], config.color_jitter_strength, config.jitter_version
        )
        params["order"] = random_orders(batch, seeds[1])
        params["jitter"] = coin(batch, seeds[2], config.color_jitter_prob)
    if config.grayscale_prob > 0:
        params["gray"] = coin(batch, seeds[3], config.grayscale_prob)
    if config.blur_prob > 0:
        params["sigma"] = tf.random.stateless_uniform([batch], seeds[4], *shared.BLUR_SIGMA_RANGE)
        params["blur"] = coin(batch, seeds[5], config.blur_prob)
    return params


def colour_planes(planes, params, config: AugmentConfig):
    """Jitter and grayscale of [B, 3, H*W] planes with the drawn `params`."""
    if "factors" in params:
        jitter = color_jitter_selected if config.augment_jit_compile else color_jitter
        planes = jitter(
            planes, params["factors"], params["order"], params["jitter"], config.jitter_version
        )
    if "gray" in params:
        planes = _where_per_image(params["gray"], _grayscale(planes), planes)
    return planes


def blur_images(images, params):
    """The per-image Gaussian blur of [B, H, W, 3] images drawn in `params`, if any."""
    if "blur" not in params:
        return images
    if images.shape[1] is None or images.shape[2] is None:
        raise ValueError("the batched blur needs a static image size")
    radius = shared.blur_radius(min(images.shape[1], images.shape[2]))
    blurred = tf.clip_by_value(gaussian_blur(images, params["sigma"], radius), 0.0, 1.0)
    return _where_per_image(params["blur"], blurred, images)
