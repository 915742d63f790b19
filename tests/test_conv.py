"""Patch-matmul kernel gradients (simclr_tf.conv) against numpy and Keras' own Conv2D."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.models import conv, resnet

from conftest import requires_bf16_kernels

BF16_UNIT_ROUNDOFF = 2.0**-8  # 8 significant bits


def numpy_kernel_grad(x, dy, k, stride, pad):
    """dK[i, j, c, o] = sum over n, y, x of xpad[n, y*s + i, x*s + j, c] * dy[n, y, x, o]."""
    xp = np.pad(x, ((0, 0), pad, pad, (0, 0)))
    dk = np.zeros((k, k, x.shape[-1], dy.shape[-1]))
    for i in range(k):
        for j in range(k):
            window = xp[
                :, i : i + stride * dy.shape[1] : stride, j : j + stride * dy.shape[2] : stride
            ]
            dk[i, j] = np.einsum("nyxc,nyxo->co", window, dy)
    return dk


@pytest.mark.parametrize(
    "k, stride, padding, size, pad",
    [
        (3, 1, "SAME", 4, (1, 1)),
        (3, 2, "VALID", 10, (0, 0)),
        (1, 2, "VALID", 8, (0, 0)),
        (3, 1, "SAME", 5, (1, 1)),
    ],
)
def test_kernel_grad_equals_numpy_formula(k, stride, padding, size, pad):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, size, size, 5)).astype(np.float32)
    out = (size + 2 * pad[0] - k) // stride + 1
    dy = rng.normal(size=(3, out, out, 7)).astype(np.float32)
    got = conv.matmul_kernel_grad(tf.constant(x), tf.constant(dy), (k, k, 5, 7), stride, padding)
    np.testing.assert_allclose(
        got.numpy(), numpy_kernel_grad(x, dy, k, stride, pad), rtol=1e-5, atol=1e-4
    )


def test_custom_gradient_equals_tensorflow_conv_gradient_in_float32():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(4, 10, 10, 6)).astype(np.float32))
    kernel = tf.constant(rng.normal(size=(3, 3, 6, 8)).astype(np.float32))
    target = tf.constant(rng.normal(size=(4, 4, 4, 8)).astype(np.float32))
    grads = []
    for fn in (
        conv.conv2d_matmul_kernel_grad,
        lambda x, k, s, p: tf.nn.conv2d(x, k, [1, s, s, 1], p),
    ):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = fn(x, kernel, 2, "VALID")
            loss = tf.reduce_sum((y - target) ** 2)
        grads.append([y] + tape.gradient(loss, [x, kernel]))
    for ours, reference in zip(*grads):
        np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5, atol=1e-4)


def _gradient_ops(layer, x):
    @tf.function
    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(layer(x), tf.float32) ** 2)
        return tape.gradient(loss, layer.trainable_variables)

    graph = grads.get_concrete_function(tf.TensorSpec(x.shape, tf.float32)).graph
    return {op.type for op in graph.get_operations()}, grads(x)


@pytest.fixture
def bf16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def _bf16(x):
    return tf.cast(tf.cast(x, tf.bfloat16), tf.float64).numpy()


@requires_bf16_kernels
def test_bf16_layer_takes_matmul_path_and_agrees_with_keras_conv(bf16_policy):
    rng = np.random.default_rng(2)
    # 2 images, 4 x 4 outputs: each kernel-gradient element sums K = 32 products.
    x = tf.constant(rng.normal(size=(2, 4, 4, 256)).astype(np.float32))
    ours = conv.Conv2D(64, 3, padding="same", use_bias=False)
    plain = keras.layers.Conv2D(64, 3, padding="same", use_bias=False)
    ours.build(x.shape)
    plain.build(x.shape)
    plain.set_weights(ours.get_weights())
    ops_ours, (grad_ours,) = _gradient_ops(ours, x)
    ops_plain, (grad_plain,) = _gradient_ops(plain, x)
    assert "ExtractImagePatches" in ops_ours and "ExtractImagePatches" not in ops_plain
    y = ours(x)
    np.testing.assert_array_equal(y.numpy(), plain(x).numpy())
    # Reference: exact (float64) sums over the bf16 values both layers see; the loss
    # sum(y^2) sends back dy = 2y, exact in bf16.
    xb, dy = _bf16(x), 2.0 * tf.cast(y, tf.float64).numpy()
    exact = numpy_kernel_grad(xb, dy, 3, 1, (1, 1))
    magnitude = numpy_kernel_grad(np.abs(xb), np.abs(dy), 3, 1, (1, 1))
    # bf16 products are exact in float32. Summing K of them with unit roundoff at most
    # u (a bf16 accumulator, the worst case) errs by gamma_K = K u / (1 - K u) times
    # the sum of |products|; the bf16 result then rounds once more (u |exact|).
    k, u = x.shape[0] * 4 * 4, BF16_UNIT_ROUNDOFF
    bound = k * u / (1 - k * u) * magnitude + u * np.abs(exact)
    for grad in (grad_ours, grad_plain):
        error = np.abs(grad.numpy().astype(np.float64) - exact)
        assert np.all(error <= bound), float(np.max(error / bound))


@requires_bf16_kernels
def test_matmul_path_only_in_bf16_and_when_enabled(bf16_policy):
    x = tf.zeros([2, 4, 4, 256])
    off = conv.Conv2D(8, 3, padding="same", use_bias=False, matmul_kernel_grad=False)
    assert "ExtractImagePatches" not in _gradient_ops(off, x)[0]
    keras.mixed_precision.set_global_policy("float32")
    fp32 = conv.Conv2D(8, 3, padding="same", use_bias=False)
    assert "ExtractImagePatches" not in _gradient_ops(fp32, x)[0]
    restored = conv.Conv2D.from_config(off.get_config())
    assert restored.matmul_kernel_grad is False


@pytest.mark.parametrize(
    "width, expected",
    [
        # ResNet-18 on 32 x 32 images: the last stage's 4 x 4 outputs. Full width: its four
        # 3 x 3 convs (one strided, three 512-deep); 0.25x: the strided one only.
        (1.0, ["3x3 s2 256->512", "3x3 s1 512->512", "3x3 s1 512->512", "3x3 s1 512->512"]),
        (0.25, ["3x3 s2 64->128"]),
    ],
)
def test_resnet18_cifar_takes_matmul_path_in_the_last_stage_only(bf16_policy, width, expected):
    encoder = resnet.resnet(18, width, cifar_stem=True, input_shape=(32, 32, 3))
    picked = []
    for layer in encoder.layers:
        if isinstance(layer, conv.Conv2D):
            x = keras.KerasTensor(layer.input.shape, "bfloat16")
            if layer._use_matmul(x):
                k, _, cin, cout = layer.kernel.shape
                picked.append(f"{k}x{k} s{layer.strides[0]} {cin}->{cout}")
    assert sorted(picked) == sorted(expected)
