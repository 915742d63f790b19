"""The SimCLR views made over a whole batch at once.

On small images such as CIFAR's 32 x 32 the per-image graph of `augment.simclr_view`
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

import math

import tensorflow as tf

from simclr_tf import augment
from simclr_tf.config import AugmentConfig

NUM_JITTER_OPS = 4  # brightness, contrast, saturation, hue
KEYS_A = -0.5  # the cubic kernel of tf.image.resize(method="bicubic")
KERNEL_TABLE_SIZE = 1024  # TF's bicubic kernel quantises the tap offset to 1/1024


def supports(config: AugmentConfig):
    """The batched stage covers the default transforms, not the paper's ablation ones."""
    return not any(p > 0 for p in (config.rotation_prob, config.cutout_prob, config.noise_prob,
                                   config.sobel_prob, config.color_drop_prob))


def _per_image(values):
    return tf.reshape(values, [-1, 1, 1, 1])


# --- Colour, on planes ---------------------------------------------------------------
# The colour ops read a batch as planes, [B, 3, H*W]: a channel is then a contiguous
# [B, H*W] slice, so HSV's max/min over channels are elementwise ops, and a per-image
# factor broadcasts over one contiguous block. On [B, H, W, 3] the same arithmetic needs
# reductions over a size-3 axis and broadcasts of [B, 1, 1, 3] or [B, H, W, 1], which
# TensorFlow's CPU kernels run several times slower (BENCHMARKS.md, session 4).


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
    hue = ((tf.math.divide_no_nan(numerator, chroma) + sector) * (1.0 / 6.0)
           + tf.reshape(delta, [-1, 1]))
    hue -= tf.floor(hue)
    hsv = tf.stack([hue, tf.math.divide_no_nan(chroma, value), value], axis=-1)
    return tf.transpose(tf.image.hsv_to_rgb(hsv), [0, 2, 1])


def _jitter_factors(batch, seed, strength, version):
    """[4, B] per-image factors, drawn from the ranges of `augment.color_jitter`."""
    b = c = s = 0.8 * strength
    h = min(0.2 * strength, 0.5)
    seeds = tf.random.experimental.stateless_split(seed, NUM_JITTER_OPS)
    brightness = (tf.random.stateless_uniform([batch], seeds[0], -b, b) if version == "v1"
                  else tf.random.stateless_uniform([batch], seeds[0], max(1 - b, 0.0), 1 + b))
    contrast = tf.random.stateless_uniform([batch], seeds[1], 1 - c, 1 + c)
    saturation = tf.random.stateless_uniform([batch], seeds[2], max(1 - s, 0.0), 1 + s)
    hue = tf.random.stateless_uniform([batch], seeds[3], -h, h)
    return tf.stack([brightness, contrast, saturation, hue])


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
    pipeline: BENCHMARKS.md, session 3.)
    """
    ops = [lambda x, f: adjust_brightness(x, f, version), adjust_contrast, adjust_saturation,
           adjust_hue]
    index = tf.range(tf.shape(planes)[0])
    op_of_image = tf.cast(order, tf.int32)
    if apply is not None:
        op_of_image = tf.where(apply[:, None], op_of_image, NUM_JITTER_OPS)  # 4: unchanged
    for stage in range(NUM_JITTER_OPS):
        parts = tf.dynamic_partition(planes, op_of_image[:, stage], NUM_JITTER_OPS + 1)
        where = tf.dynamic_partition(index, op_of_image[:, stage], NUM_JITTER_OPS + 1)
        results = [tf.clip_by_value(op(part, tf.gather(factors[k], rows)), 0.0, 1.0)
                   for k, (op, part, rows) in enumerate(zip(ops, parts, where))]
        planes = tf.reshape(tf.dynamic_stitch(where, results + parts[-1:]), tf.shape(planes))
    return planes



def color_jitter_selected(planes, factors, order, apply=None, version="v2"):
    """`color_jitter` with static shapes, for XLA: at each of the 4 stages every op runs
    on the whole batch and each image keeps the result of the op it takes next.

    Four times the arithmetic, but XLA fuses each stage into one pass over memory, and
    the batch needs no partitioning: 4.5 against 13.5 CPU ms per 256-image CIFAR view
    in the pipeline. Without XLA it is about 3x slower than `color_jitter`
    (BENCHMARKS.md, session 5).
    """
    ops = [lambda x, f: adjust_brightness(x, f, version), adjust_contrast, adjust_saturation,
           adjust_hue]
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
    """Separable blur with one sigma per image, zero padding (as `augment.gaussian_blur`).

    The batch is laid out as channels of one image so a depthwise conv applies every
    image's own kernel in one op.
    """
    shape = tf.shape(images)
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernels = tf.exp(-tf.square(x)[None, :] / (2.0 * tf.square(sigma)[:, None]))
    kernels /= tf.reduce_sum(kernels, axis=1, keepdims=True)  # [B, K]
    kernels = tf.reshape(tf.repeat(kernels, 3, axis=0), [-1, 2 * radius + 1])  # [B*3, K]
    kernels = tf.transpose(kernels)  # [K, B*3]
    as_channels = tf.reshape(tf.transpose(images, [1, 2, 0, 3]),
                             [1, shape[1], shape[2], shape[0] * 3])
    out = tf.nn.depthwise_conv2d(as_channels, kernels[None, :, :, None], [1, 1, 1, 1], "SAME")
    out = tf.nn.depthwise_conv2d(out, kernels[:, None, :, None], [1, 1, 1, 1], "SAME")
    return tf.transpose(tf.reshape(out, [shape[1], shape[2], shape[0], 3]), [2, 0, 1, 3])


def _coin(batch, seed, prob):
    return tf.random.stateless_uniform([batch], seed) < prob


def _where_per_image(chosen, new, old):
    """new where `chosen`, else old; a blend, as tf.where with broadcasting is slow here."""
    chosen = tf.reshape(tf.cast(chosen, old.dtype), [-1] + [1] * (len(old.shape) - 1))
    return old + chosen * (new - old)


def _grayscale(planes):
    """tf.image.rgb_to_grayscale's weights, the gray copied to the 3 channels."""
    r, g, b = tf.unstack(planes, axis=1)
    gray = 0.2989 * r + 0.5870 * g + 0.1140 * b
    return tf.stack([gray, gray, gray], axis=1)


def colour_params(batch, seed, config: AugmentConfig):
    """The colour stage's random values for a batch: every image draws its own."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
    params = {}
    if config.color_jitter_prob > 0:
        params["factors"] = _jitter_factors(batch, seeds[0], config.color_jitter_strength,
                                            config.jitter_version)
        params["order"] = random_orders(batch, seeds[1])
        params["jitter"] = _coin(batch, seeds[2], config.color_jitter_prob)
    if config.grayscale_prob > 0:
        params["gray"] = _coin(batch, seeds[3], config.grayscale_prob)
    if config.blur_prob > 0:
        params["sigma"] = tf.random.stateless_uniform([batch], seeds[4],
                                                      *augment.BLUR_SIGMA_RANGE)
        params["blur"] = _coin(batch, seeds[5], config.blur_prob)
    return params


def colour_planes(planes, params, config: AugmentConfig):
    """Jitter and grayscale of [B, 3, H*W] planes with the drawn `params`."""
    if "factors" in params:
        jitter = color_jitter_selected if config.augment_jit_compile else color_jitter
        planes = jitter(planes, params["factors"], params["order"], params["jitter"],
                        config.jitter_version)
    if "gray" in params:
        planes = _where_per_image(params["gray"], _grayscale(planes), planes)
    return planes


def blur_images(images, params):
    """The per-image Gaussian blur of [B, H, W, 3] images drawn in `params`, if any."""
    if "blur" not in params:
        return images
    if images.shape[1] is None or images.shape[2] is None:
        raise ValueError("the batched blur needs a static image size")
    # The kernel size of augment.random_blur: a tenth of the side.
    radius = max(min(images.shape[1], images.shape[2]) // 10 // 2, 1)
    blurred = tf.clip_by_value(gaussian_blur(images, params["sigma"], radius), 0.0, 1.0)
    return _where_per_image(params["blur"], blurred, images)


def _compiled(fn, config: AugmentConfig):
    """`fn` compiled by XLA when `config.augment_jit_compile`: the pixel arithmetic is
    a few dozen elementwise ops per view, which XLA fuses into a few passes over the
    batch; TensorFlow's kernels make one pass per op (BENCHMARKS.md, session 5)."""
    return tf.function(fn, jit_compile=True) if config.augment_jit_compile else fn


def apply_colour(images, params, config: AugmentConfig):
    """Jitter, grayscale and blur of a [B, H, W, 3] batch with the drawn `params`."""
    if "factors" in params or "gray" in params:
        def colour(images, params):
            return from_planes(colour_planes(to_planes(images), params, config),
                               tf.shape(images))

        images = _compiled(colour, config)(images, params)
    return blur_images(images, params)


def colour_stage(images, seed, config: AugmentConfig):
    """Jitter (prob 0.8), grayscale (0.2), blur (0.5 by default) of a [B, H, W, 3] batch.

    `seed` is one [2] seed for the whole batch; every image still draws its own values.
    """
    params = colour_params(tf.shape(images)[0], seed, config)
    return apply_colour(images, params, config)


# --- Crop, resize and flip ----------------------------------------------------------


def sample_crop_boxes(batch, height, width, seed, area_range=(0.08, 1.0),
                      aspect_range=(3 / 4, 4 / 3), attempts=100):
    """Per-image (top, left, crop height, crop width), as `augment.sample_crop_box`."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = tf.random.stateless_uniform([batch, attempts], seeds[0], *area_range)
    log_low, log_high = math.log(aspect_range[0]), math.log(aspect_range[1])
    ratio = tf.exp(tf.random.stateless_uniform([batch, attempts], seeds[1], log_low, log_high))
    crop_h = tf.round(h * tf.sqrt(area / ratio))
    crop_w = tf.round(w * tf.sqrt(area * ratio))
    fits = (crop_h <= h) & (crop_w <= w) & (crop_h >= 1) & (crop_w >= 1)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    found = tf.reduce_any(fits, axis=1)
    crop_h = tf.where(found, tf.gather(crop_h, first, batch_dims=1), h)
    crop_w = tf.where(found, tf.gather(crop_w, first, batch_dims=1), w)
    u = tf.random.stateless_uniform([2, batch], seeds[2])
    top = tf.minimum(tf.floor(u[0] * (h - crop_h + 1)), h - crop_h)
    left = tf.minimum(tf.floor(u[1] * (w - crop_w + 1)), w - crop_w)
    return [tf.cast(v, tf.int32) for v in (top, left, crop_h, crop_w)]


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
    return tf.add_n([weights[..., k, None] * tf.one_hot(index[..., k], full)
                     for k in range(4)])


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
    return from_planes(crop_and_resize_planes(images, boxes, size, flip),
                       [shape[0], size, size, shape[3]])


def to_float_images(images):
    images = tf.image.convert_image_dtype(images, tf.float32)
    return tf.image.grayscale_to_rgb(images) if images.shape[-1] == 1 else images


def view_of_batch(images, seed, size, config: AugmentConfig):
    """One SimCLR view of every image of a float [B, H, W, 3] batch of one size."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    shape = tf.shape(images)
    batch = shape[0]
    if config.crop:
        boxes = sample_crop_boxes(batch, shape[1], shape[2], seeds[0], config.area_range,
                                  config.aspect_range)
    else:
        zeros = tf.zeros([batch], tf.int32)
        boxes = [zeros, zeros, zeros + shape[1], zeros + shape[2]]
    flip = _coin(batch, seeds[1], 0.5) if config.flip else tf.zeros([batch], tf.bool)
    colour = colour_params(batch, seeds[2], config)

    def pixels(images, boxes, flip, colour):
        planes = colour_planes(crop_and_resize_planes(images, boxes, size, flip), colour,
                               config)
        return from_planes(planes, [tf.shape(images)[0], size, size, 3])

    images = _compiled(pixels, config)(images, boxes, flip, colour)
    images = blur_images(images, colour)
    return tf.ensure_shape(images, [None, size, size, 3])


def two_views_of_batch(images, seed, size, config: AugmentConfig):
    """The two views of every image of a [B, H, W, C] batch (uint8 or float in [0, 1])."""
    images = to_float_images(images)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    return (view_of_batch(images, seeds[0], size, config),
            view_of_batch(images, seeds[1], size, config))
