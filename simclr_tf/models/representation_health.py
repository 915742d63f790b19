"""Signs of a collapsing representation, cheap enough to log every pretraining step.

A contrastive loss can fall while the encoder maps every image to nearly one point
(e.g. without the projection head's L2 normalisation, or at a far too high learning
rate). Two numbers show it (Jing et al. 2022, "Understanding dimensional collapse in
contrastive self-supervised learning"; Roy and Vetterli 2007 for the rank):

- `proj_std`: the per-dimension standard deviation over the batch of the
  L2-normalised projection z, averaged over dimensions. Points spread over the unit
  sphere of d dimensions give about 1/sqrt(d); one point for every image gives 0.
- `effective_rank`: exp(entropy) of the normalised singular values of the centred
  batch of representations h, between 1 (every image on one line) and min(n, C).
"""

import math

import tensorflow as tf


def projection_std(z):
    """Mean over dimensions of the batch standard deviation of z / |z| (float32 [n, d])."""
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1)
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0))


def effective_rank(h):
    """exp(-sum p log p), p the singular values of the centred h [n, C] over their sum.

    The singular values come from the eigenvalues of the C x C Gram matrix (15x cheaper
    than an SVD of h at n = 512, C = 128 here); eigenvalues within float32 rounding of
    the largest (C u lambda_max) are zero. A monitor must not stop a run: h is scaled to
    a largest entry of 1 first (the rank is scale-free, and a diverging run's h would
    overflow the Gram matrix), and a batch with a non-finite entry gives NaN, which the
    run's own divergence check then reports."""
    h = tf.cast(h, tf.float32)
    finite = tf.reduce_all(tf.math.is_finite(h))
    h = tf.where(tf.math.is_finite(h), h, 0.0)
    h -= tf.reduce_mean(h, axis=0, keepdims=True)
    h /= tf.maximum(tf.reduce_max(tf.abs(h)), 1e-30)
    eigenvalues = tf.linalg.eigvalsh(tf.matmul(h, h, transpose_a=True))
    floor = tf.reduce_max(eigenvalues) * float(h.shape[-1]) * 2.0**-24
    s = tf.sqrt(tf.where(eigenvalues > floor, eigenvalues, 0.0))
    p = s / tf.maximum(tf.reduce_sum(s), 1e-12)
    entropy = -tf.reduce_sum(tf.where(p > 0, p * tf.math.log(tf.maximum(p, 1e-30)), 0.0))
    return tf.where(finite, tf.exp(entropy), float("nan"))


def healthy_std(dim):
    """The per-dimension standard deviation of points spread over a d-sphere."""
    return 1.0 / math.sqrt(dim)


def metrics(z, h):
    z, h = tf.stop_gradient(z), tf.stop_gradient(h)
    return {"proj_std": projection_std(z), "effective_rank": effective_rank(h)}
