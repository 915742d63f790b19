"""The paper's other augmentations (its Figure 4 ablations), stateless like the rest.

Constants chosen here (the paper does not pin them) are module-level so a study can
cite them: cutout side in [0.1, 0.5] of the image side, filled with 0; Gaussian noise
with sigma drawn from [0, 0.1]; Sobel magnitude scaled to [0, 1].
"""

import tensorflow as tf

from simclr_tf.augment.random_ops import random_apply, split_seed

CUTOUT_SIDE_RANGE = (0.1, 0.5)
NOISE_SIGMA_RANGE = (0.0, 0.1)


def random_rotation(image, seed):
    """Rotation by 90, 180 or 270 degrees (square images keep their shape)."""
    k = tf.random.stateless_uniform([], seed, 1, 4, dtype=tf.int32)
    return tf.image.rot90(image, k)


def cutout(image, seed):
    seeds = split_seed(seed, 3)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    fraction = tf.random.stateless_uniform([], seeds[0], *CUTOUT_SIDE_RANGE)
    side = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    side = tf.maximum(side, 1)
    top = tf.random.stateless_uniform([], seeds[1], 0, height - side + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[2], 0, width - side + 1, dtype=tf.int32)
    rows = tf.range(height)[:, tf.newaxis]
    cols = tf.range(width)[tf.newaxis, :]
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return tf.where(inside[..., tf.newaxis], tf.zeros_like(image), image)


def gaussian_noise(image, seed):
    seeds = split_seed(seed, 2)
    sigma = tf.random.stateless_uniform([], seeds[0], *NOISE_SIGMA_RANGE)
    noise = tf.random.stateless_normal(tf.shape(image), seeds[1]) * sigma
    return tf.clip_by_value(image + noise, 0.0, 1.0)


def sobel(image):
    """Edge magnitude of the grayscale image, scaled to [0, 1], as 3 channels."""
    gray = tf.image.rgb_to_grayscale(image)[tf.newaxis]
    edges = tf.image.sobel_edges(gray)[0, :, :, 0, :]  # [H, W, (dy, dx)]
    magnitude = tf.norm(edges, axis=-1, keepdims=True)
    magnitude = magnitude / (tf.reduce_max(magnitude) + 1e-12)
    return tf.tile(magnitude, [1, 1, 3])


def color_drop(image):
    return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


def apply_all(image, seed, config):
    """Applies each enabled ablation op, in a fixed order."""
    seeds = split_seed(seed, 8)
    image = random_apply(
        lambda x: random_rotation(x, seeds[0]), config.rotation_prob, image, seeds[1]
    )
    image = random_apply(lambda x: cutout(x, seeds[2]), config.cutout_prob, image, seeds[3])
    image = random_apply(lambda x: gaussian_noise(x, seeds[4]), config.noise_prob, image, seeds[5])
    image = random_apply(sobel, config.sobel_prob, image, seeds[6])
    image = random_apply(color_drop, config.color_drop_prob, image, seeds[7])
    return image
