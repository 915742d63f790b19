"""The fused BN layer against the batch-norm formula in numpy and against Keras' own layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.models.batch_norm import FusedBatchNormalization

from conftest import requires_bf16_kernels

EPS = 1e-5


def _numpy_bn(x, gamma, beta, mean=None, var=None):
    axes = tuple(range(x.ndim - 1))
    if mean is None:
        mean, var = x.mean(axes), x.var(axes)  # biased, as BN normalises with
    return gamma * (x - mean) / np.sqrt(var + EPS) + beta, mean, var


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (16, 7)])
def test_training_output_gradients_and_moving_stats_match_numpy(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=shape).astype(np.float32)
    layer = FusedBatchNormalization(momentum=0.9, epsilon=EPS)
    layer.build(shape)
    gamma = rng.uniform(0.5, 2, shape[-1]).astype(np.float32)
    beta = rng.normal(size=shape[-1]).astype(np.float32)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    weights = rng.normal(size=shape).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=True)
        loss = tf.reduce_sum(y * weights)
    dx, dgamma, dbeta = tape.gradient(loss, [xt, layer.gamma, layer.beta])

    expected, mean, var = _numpy_bn(x, gamma, beta)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * var, rtol=1e-5)
    # Gradients of sum(w * BN(x)) by the closed form of the batch-norm backward pass.
    axes = tuple(range(x.ndim - 1))
    x_hat = (x - mean) / np.sqrt(var + EPS)
    np.testing.assert_allclose(dbeta.numpy(), weights.sum(axes), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dgamma.numpy(), (weights * x_hat).sum(axes), rtol=1e-4, atol=1e-3)
    g = weights * gamma
    dx_expected = (g - g.mean(axes) - x_hat * (g * x_hat).mean(axes)) / np.sqrt(var + EPS)
    np.testing.assert_allclose(dx.numpy(), dx_expected, rtol=1e-3, atol=1e-4)


def test_inference_uses_the_moving_statistics():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3, 3, 5)).astype(np.float32)
    layer = FusedBatchNormalization(epsilon=EPS, center=False)
    layer.build(x.shape)
    mean, var = rng.normal(size=5).astype(np.float32), rng.uniform(1, 3, 5).astype(np.float32)
    layer.moving_mean.assign(mean)
    layer.moving_variance.assign(var)
    expected, _, _ = _numpy_bn(x, np.ones(5, np.float32), 0.0, mean, var)
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert layer.beta is None


@requires_bf16_kernels
def test_bfloat16_matches_keras_layer_and_keeps_float32_statistics():
    x = tf.random.stateless_normal([8, 4, 4, 6], seed=[1, 2]) * 3.0 + 1.0
    policy = keras.DTypePolicy("mixed_bfloat16")
    fused = FusedBatchNormalization(dtype=policy)
    plain = keras.layers.BatchNormalization(dtype=policy)
    ys = [layer(x, training=True) for layer in (fused, plain)]
    assert ys[0].dtype == tf.bfloat16 and fused.moving_mean.dtype == "float32"
    np.testing.assert_allclose(tf.cast(ys[0], tf.float32), tf.cast(ys[1], tf.float32), atol=0.05)
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), atol=1e-2)
    np.testing.assert_allclose(
        fused.moving_variance.numpy(), plain.moving_variance.numpy(), rtol=1e-2
    )


def test_synchronized_layer_takes_the_keras_path_with_the_same_result():
    x = tf.random.stateless_normal([8, 3, 3, 4], seed=[3, 4])
    sync = FusedBatchNormalization(synchronized=True)
    fused = FusedBatchNormalization()
    np.testing.assert_allclose(
        sync(x, training=True).numpy(), fused(x, training=True).numpy(), atol=1e-4
    )


def test_is_still_a_keras_batch_norm_and_round_trips_through_config():
    layer = FusedBatchNormalization(momentum=0.8, epsilon=1e-3)
    assert isinstance(layer, keras.layers.BatchNormalization)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is FusedBatchNormalization and clone.momentum == 0.8


@pytest.mark.parametrize("synchronized", [True, False])
def test_global_batch_norm_uses_the_whole_global_batch(synchronized):
    """2 replicas, different data on each: synchronized BN normalises with the statistics
    of both replicas' examples together (numpy reference); per-replica BN does not."""
    from simclr_tf import keras_compat

    from conftest import cpu_devices

    strategy = keras_compat.mirrored_strategy(cpu_devices(2))
    with strategy.scope():
        layer = FusedBatchNormalization(synchronized=synchronized, momentum=0.9, epsilon=1e-5)
        layer.build((None, 4, 4, 3))
    rng = np.random.default_rng(0)
    halves = [
        rng.normal(size=(4, 4, 4, 3)).astype(np.float32),
        (3 * rng.normal(size=(4, 4, 4, 3)) + 5).astype(np.float32),
    ]
    inputs = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(halves[ctx.replica_id_in_sync_group])
    )

    @tf.function
    def forward(x):
        return strategy.run(lambda v: layer(v, training=True), args=(x,))

    got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(forward(inputs))])
    full = np.concatenate(halves).astype(np.float64)
    mean, var = full.mean(axis=(0, 1, 2)), full.var(axis=(0, 1, 2))
    expected = (full - mean) / np.sqrt(var + 1e-5)
    if synchronized:
        np.testing.assert_allclose(got, expected, atol=1e-4)
        np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean, atol=1e-5)
    else:
        assert not np.allclose(got, expected, atol=1e-2)
