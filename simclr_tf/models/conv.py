"""Conv2D whose bf16 kernel gradient is one matmul over patches where that is faster.

On CPUs with AVX-512 BF16 but no AMX (e.g. Zen 4), oneDNN's bf16 kernel-gradient
(backward-weights) convolution is slow - about 2x its own float32 time, and 1.7-3x the
matmul below - when the output is a few pixels across and the input deep: a ResNet's
last stage on 32 x 32 images (4 x 4 output, 512 channels). Forward and input-gradient
convolutions are fast. There the kernel gradient `patches(x)^T @ dy` is a single
matmul of ordinary size
(`python -m tools.benchmark conv` measures both ways per layer; BENCHMARKS.md). Everything
else - forward, input gradient, variables, checkpoints - is the Keras layer's.
"""

import keras
import tensorflow as tf

# Where the matmul kernel gradient measured faster on CPU (BENCHMARKS.md, `conv`): small
# outputs of spatial (not 1 x 1) kernels, either strided or deep.
MAX_OUTPUT_POSITIONS = 16
MIN_PATCH_DEPTH = 2304  # kernel height x width x input channels: 3 x 3 x 256


def matmul_kernel_grad_pays(output_positions, kernel_size, in_channels, strides):
    """The measured rule for when the patch matmul beats the native bf16 kernel gradient."""
    if output_positions > MAX_OUTPUT_POSITIONS or kernel_size == 1:
        return False
    return strides > 1 or kernel_size * kernel_size * in_channels >= MIN_PATCH_DEPTH


def matmul_kernel_grad(x, dy, kernel_shape, strides, padding):
    """The kernel gradient of `tf.nn.conv2d(x, kernel, strides, padding)` (NHWC, square
    strides, no dilation) for output gradient `dy`, as patches(x)^T @ dy."""
    kh, kw, cin, cout = kernel_shape
    # Patches are laid out (row, column, channel), as the kernel's first 3 axes.
    patches = tf.image.extract_patches(
        x, [1, kh, kw, 1], [1, strides, strides, 1], [1, 1, 1, 1], padding
    )
    dk = tf.matmul(
        tf.reshape(patches, [-1, kh * kw * cin]), tf.reshape(dy, [-1, cout]), transpose_a=True
    )
    return tf.reshape(dk, kernel_shape)


def conv2d_matmul_kernel_grad(x, kernel, strides, padding):
    """`tf.nn.conv2d` whose kernel gradient is `matmul_kernel_grad`; the input gradient
    is TensorFlow's own."""
    stride_list = [1, strides, strides, 1]

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dx = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x),
                filter=kernel,
                out_backprop=dy,
                strides=stride_list,
                padding=padding,
            )
            return dx, matmul_kernel_grad(x, dy, kernel.shape, strides, padding)

        return tf.nn.conv2d(x, kernel, stride_list, padding), grad

    return conv(x, kernel)


@keras.saving.register_keras_serializable(package="simclr_tf")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` that takes the patch-matmul kernel gradient in bf16 when
    `matmul_kernel_grad` is on and the traced shapes satisfy the measured rule."""

    def __init__(self, *args, matmul_kernel_grad=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.matmul_kernel_grad = matmul_kernel_grad

    def _use_matmul(self, inputs):
        if not (
            self.matmul_kernel_grad
            and self.compute_dtype == "bfloat16"
            and keras.backend.backend() == "tensorflow"
            and self.data_format == "channels_last"
            and self.groups == 1
            and tuple(self.dilation_rate) == (1, 1)
            and self.strides[0] == self.strides[1]
            and self.kernel_size[0] == self.kernel_size[1]
        ):
            return False
        _, out_h, out_w, _ = self.compute_output_shape(inputs.shape)
        if out_h is None or out_w is None:
            return False
        return matmul_kernel_grad_pays(
            out_h * out_w, self.kernel_size[0], inputs.shape[-1], self.strides[0]
        )

    def convolution_op(self, inputs, kernel):
        if not self._use_matmul(inputs):
            return super().convolution_op(inputs, kernel)
        return conv2d_matmul_kernel_grad(
            tf.convert_to_tensor(inputs),
            tf.convert_to_tensor(kernel),
            self.strides[0],
            self.padding.upper(),
        )

    def get_config(self):
        return {**super().get_config(), "matmul_kernel_grad": self.matmul_kernel_grad}
