"""Seed handling shared by the augmentation modules."""

import tensorflow as tf


def split_seed(seed, num):
    """`num` independent `[2]` seeds derived from one `[2]` seed."""
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num)


def random_apply(fn, prob, image, seed):
    """Applies `fn(image)` with probability `prob` (a Python float)."""
    if prob <= 0.0:
        return image
    if prob >= 1.0:
        return fn(image)
    draw = tf.random.stateless_uniform([], seed=seed)
    return tf.cond(draw < prob, lambda: fn(image), lambda: image)
