"""Batch normalization as one fused op per direction.

Keras 3's `BatchNormalization` casts bf16 activations to float32 and computes moments
and the affine transform as separate ops (and their gradients likewise), which made it
the bf16 bottleneck on CPU (BENCHMARKS.md). TensorFlow's fused kernel reads bf16
activations directly and keeps its statistics in float32. This subclass keeps the
Keras layer's variables, checkpoint names and moving-average convention (biased batch
variance) and only swaps the computation; cross-replica (synchronized) BN, masks and
renorm take the Keras path unchanged.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="simclr_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    def _fusable(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.synchronized
            and not self.renorm
            and self.axis in (-1, len(inputs.shape) - 1)
            and len(inputs.shape) in (2, 4)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.convert_to_tensor(inputs)
        if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            x = tf.cast(x, tf.float32)
        flat = len(x.shape) == 2
        if flat:  # the fused kernel wants NHWC
            x = x[:, None, None, :]
        channels = x.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels], tf.float32)
        beta = self.beta if self.center else tf.zeros([channels], tf.float32)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, is_training=True
            )
            # The kernel returns the Bessel-corrected variance; Keras averages the
            # biased one, and so do we, so both layers keep the same statistics.
            count = tf.cast(tf.size(x) // channels, tf.float32)
            variance *= (count - 1.0) / tf.maximum(count, 1.0)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum)
            )
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                gamma,
                beta,
                mean=self.moving_mean,
                variance=self.moving_variance,
                epsilon=self.epsilon,
                is_training=False,
            )
        if flat:
            y = y[:, 0, 0, :]
        return tf.cast(y, self.compute_dtype)
