"""The SimCLR augmentation graph as pure, stateless `tf.image` functions.

Every random op is `op(image, seed, ...)` with `seed` a `[2]` integer tensor and is
built on `tf.image.stateless_*` / `tf.random.stateless_*`, so the same seed gives the
same output eagerly and inside `tf.data.Dataset.map`, and a run can be replayed.
Images are float32 in [0, 1] throughout; there is no mean/std normalisation.
"""

import dataclasses

import tensorflow as tf

from simclr_tf.augment import ablation_ops, params
from simclr_tf.augment.random_ops import random_apply, split_seed
from simclr_tf.config import AugmentConfig

CIFAR_SIZE = 32
EVAL_CROP_PROPORTION = 0.875


def to_float_image(image):
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1] with 3 channels."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    if image.shape.rank != 3:
        raise ValueError(f"expected one image [H, W, C], got shape {image.shape}")
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif image.shape[-1] not in (3, None):
        raise ValueError(f"expected 1 or 3 channels, got shape {image.shape}")
    return image


# --- Random resized crop ------------------------------------------------------------


def sample_crop_box(image_shape, seed, area_range=(0.08, 1.0), aspect_range=(3 / 4, 4 / 3)):
    """(offset [y, x], size [h, w]) of one random resized crop (`params.sample_crop_boxes`)."""
    top, left, crop_h, crop_w = params.sample_crop_boxes(
        1, image_shape[0], image_shape[1], seed, area_range, aspect_range
    )
    return tf.stack([top[0], left[0]]), tf.stack([crop_h[0], crop_w[0]])


def random_resized_crop(
    image, seed, height, width, area_range=(0.08, 1.0), aspect_range=(3 / 4, 4 / 3)
):
    shape = tf.shape(image)
    offset, size = sample_crop_box(shape, seed, area_range, aspect_range)
    crop = tf.image.crop_to_bounding_box(image, offset[0], offset[1], size[0], size[1])
    return resize(crop, height, width)


def resize(image, height, width):
    """Bicubic resize, clipped back to [0, 1] (bicubic overshoots)."""
    image = tf.image.resize(image, [height, width], method=tf.image.ResizeMethod.BICUBIC)
    return tf.clip_by_value(image, 0.0, 1.0)


def random_flip(image, seed):
    return tf.image.stateless_random_flip_left_right(image, seed)


# --- Colour distortion --------------------------------------------------------------


def random_brightness(image, seed, delta, version="v2"):
    """v2: multiplicative factor in [1-delta, 1+delta]; v1: additive delta."""
    if version == "v1":
        return tf.image.stateless_random_brightness(image, delta, seed)
    low, high = params.brightness_range(delta, version)
    return image * tf.random.stateless_uniform([], seed, low, high)


def color_jitter(image, seed, strength=1.0, version="v2"):
    """Brightness, contrast, saturation and hue in a random order, clipped after each."""
    ranges = params.jitter_ranges(strength, version)
    seeds = split_seed(seed, 5)
    ops = [
        lambda x: random_brightness(x, seeds[0], 0.8 * strength, version),
        lambda x: tf.image.stateless_random_contrast(x, *ranges["contrast"], seeds[1]),
        lambda x: tf.image.stateless_random_saturation(x, *ranges["saturation"], seeds[2]),
        lambda x: tf.image.stateless_random_hue(x, ranges["hue"][1], seeds[3]),
    ]
    order = tf.random.experimental.stateless_shuffle(tf.range(4), seeds[4])
    for i in range(4):
        image = tf.switch_case(order[i], [lambda op=op: op(image) for op in ops])
        image = tf.clip_by_value(image, 0.0, 1.0)
    return image


def to_grayscale(image):
    return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


# --- Gaussian blur ------------------------------------------------------------------


def gaussian_blur(image, sigma, kernel_size):
    """Separable blur with an odd kernel of about `kernel_size` pixels, zero padding."""
    radius = max(int(kernel_size) // 2, 1)
    kernel = params.gaussian_kernels(tf.reshape(sigma, [1]), radius)[0]
    channels = tf.shape(image)[-1]
    kernel_h = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    kernel_v = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    batch = image[tf.newaxis]
    batch = tf.nn.depthwise_conv2d(batch, kernel_h, [1, 1, 1, 1], "SAME")
    batch = tf.nn.depthwise_conv2d(batch, kernel_v, [1, 1, 1, 1], "SAME")
    return batch[0]


def random_blur(image, seed, side):
    sigma = tf.random.stateless_uniform([], seed, *params.BLUR_SIGMA_RANGE)
    kernel_size = 2 * params.blur_radius(side) + 1
    return tf.clip_by_value(gaussian_blur(image, sigma, kernel_size), 0.0, 1.0)


# --- Composition --------------------------------------------------------------------


def make_config(options) -> AugmentConfig:
    known = {f.name for f in dataclasses.fields(AugmentConfig)}
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"unknown augmentation options {sorted(unknown)}; known: {sorted(known)}")
    return AugmentConfig(**options)


def simclr_view(image, seed, height, width, config: AugmentConfig):
    """One pretraining view of one image."""
    seeds = split_seed(seed, 8)
    image = to_float_image(image)
    if config.crop:
        image = random_resized_crop(
            image, seeds[0], height, width, config.area_range, config.aspect_range
        )
    else:
        image = resize(image, height, width)
    if config.flip:
        image = random_flip(image, seeds[1])
    image = random_apply(
        lambda x: color_jitter(x, seeds[3], config.color_jitter_strength, config.jitter_version),
        config.color_jitter_prob,
        image,
        seeds[2],
    )
    image = random_apply(to_grayscale, config.grayscale_prob, image, seeds[4])
    image = random_apply(
        lambda x: random_blur(x, seeds[6], min(height, width)), config.blur_prob, image, seeds[5]
    )
    image = ablation_ops.apply_all(image, seeds[7], config)
    image = tf.ensure_shape(image, [height, width, 3])
    return image


def two_views(image, seed, height=None, width=None, **options):
    """The pair of views SimCLR contrasts, from one image.

    Args:
      image: uint8 [H, W, C] (0-255) or float [H, W, C] in [0, 1], C = 1 or 3.
      seed: int [2] stateless seed; the same seed gives the same views.
      height, width: the views' size (default: the image's static size).
      **options: fields of `AugmentConfig` (e.g. `color_jitter_strength=0.5`), or
        `config=AugmentConfig(...)`.

    Returns:
      (view1, view2), float32 [height, width, 3] in [0, 1] each.
    """
    config = options.pop("config", None) or make_config(options)
    height = height or image.shape[0]
    width = width or image.shape[1]
    if height is None or width is None:
        raise ValueError("two_views needs height and width when the image size is not static")
    seeds = split_seed(seed, 2)
    return (
        simclr_view(image, seeds[0], height, width, config),
        simclr_view(image, seeds[1], height, width, config),
    )


def train_view(image, seed, height, width):
    """Classifier training view (linear eval, fine-tuning): crop and flip, no colour."""
    seeds = split_seed(seed, 2)
    image = to_float_image(image)
    image = random_resized_crop(image, seeds[0], height, width)
    image = random_flip(image, seeds[1])
    return tf.ensure_shape(image, [height, width, 3])


def center_crop_box(image_height, image_width, height, width, proportion):
    """Centre box with the target aspect ratio covering `proportion` of the limiting side."""
    image_height = tf.cast(image_height, tf.float32)
    image_width = tf.cast(image_width, tf.float32)
    target_aspect = width / height
    wider = image_width / image_height > target_aspect
    crop_height = tf.where(
        wider, proportion * image_height, proportion * image_width / target_aspect
    )
    crop_width = tf.where(
        wider, proportion * image_height * target_aspect, proportion * image_width
    )
    crop_height = tf.cast(tf.round(crop_height), tf.int32)
    crop_width = tf.cast(tf.round(crop_width), tf.int32)
    offset_y = (tf.cast(image_height, tf.int32) - crop_height + 1) // 2
    offset_x = (tf.cast(image_width, tf.int32) - crop_width + 1) // 2
    return offset_y, offset_x, crop_height, crop_width


def eval_view(image, height, width):
    """Deterministic eval preprocessing: centre crop 87.5% for large images, none at <=32 px."""
    image = to_float_image(image)
    shape = tf.shape(image)

    def cropped():
        oy, ox, ch, cw = center_crop_box(shape[0], shape[1], height, width, EVAL_CROP_PROPORTION)
        return tf.image.crop_to_bounding_box(image, oy, ox, ch, cw)

    small = tf.minimum(shape[0], shape[1]) <= CIFAR_SIZE
    image = tf.cond(small, lambda: image, cropped)
    image = resize(image, height, width)
    return tf.ensure_shape(image, [height, width, 3])
