"""The augmentation's parameters and random draws, shared by the per-image and the
batched views so the two cannot drift apart: colour-jitter ranges, the random
resized crop sampler, grayscale weights and the Gaussian blur kernel.

Values follow the SimCLR paper (Appendix A) and its reference code: jitter strength s
gives brightness, contrast and saturation 0.8 s and hue 0.2 s; crops cover 8-100% of
the area with aspect ratios 3/4-4/3; blur sigma is drawn from [0.1, 2.0] with a kernel
a tenth of the image side.
"""

import math

import tensorflow as tf

BLUR_SIGMA_RANGE = (0.1, 2.0)
# tf.image.rgb_to_grayscale's weights (ITU-R BT.601), for the batched grayscale.
GRAYSCALE_WEIGHTS = (0.2989, 0.5870, 0.1140)
CROP_ATTEMPTS = 100


def jitter_ranges(strength, version="v2"):
    """The draw range of each colour-jitter op at `strength`.

    Args:
      strength: the paper's s (1.0 for ImageNet, 0.5 for CIFAR-10).
      version: `v2` (brightness a factor, as SimCLRv2) or `v1` (an added delta).

    Returns:
      {"brightness", "contrast", "saturation", "hue"} -> (low, high) floats; hue is
      a shift of the hue angle in turns, at most half a turn.
    """
    c = s = 0.8 * strength
    h = min(0.2 * strength, 0.5)
    return {
        "brightness": brightness_range(0.8 * strength, version),
        "contrast": (1.0 - c, 1.0 + c),
        "saturation": (max(1.0 - s, 0.0), 1.0 + s),
        "hue": (-h, h),
    }


def brightness_range(delta, version="v2"):
    """v2: a factor in [1 - delta, 1 + delta] (never negative); v1: a delta added."""
    return (-delta, delta) if version == "v1" else (max(1.0 - delta, 0.0), 1.0 + delta)


def sample_crop_boxes(
    batch,
    height,
    width,
    seed,
    area_range=(0.08, 1.0),
    aspect_range=(3 / 4, 4 / 3),
    attempts=CROP_ATTEMPTS,
):
    """Random resized crop boxes, one per image.

    Area is a fraction of the image area; the aspect ratio (log-uniform) is relative to
    the image's own, as in the reference implementation, so crops of wide images are
    wide. All `attempts` draws are made at once and the first that fits is kept; the
    whole image when none fits.

    Args:
      batch: number of boxes B (int or scalar tensor).
      height, width: the images' size (int or scalar tensor).
      seed: int [2] stateless seed.
      area_range, aspect_range: (low, high) floats.
      attempts: draws per box.

    Returns:
      [top, left, crop_height, crop_width], each int32 [B].
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
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


def blur_radius(side):
    """Half the blur kernel of an image `side` pixels across: the kernel spans about a
    tenth of the side, and at least 3 taps."""
    return max(int(side) // 10 // 2, 1)


def gaussian_kernels(sigma, radius):
    """Normalised 1-D Gaussian kernels.

    Args:
      sigma: float [B], one standard deviation per kernel (pixels).
      radius: int; each kernel has 2 * radius + 1 taps.

    Returns:
      float32 [B, 2 * radius + 1], each row summing to 1.
    """
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.cast(sigma, tf.float32)
    kernels = tf.exp(-tf.square(x)[None, :] / (2.0 * tf.square(sigma)[:, None]))
    return kernels / tf.reduce_sum(kernels, axis=1, keepdims=True)
