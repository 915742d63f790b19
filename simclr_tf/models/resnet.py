"""ResNet v1 encoders (18-200), width multipliers, CIFAR stem, selective kernels.

Built with the Keras functional API from plain arguments; the model maps
`[B, H, W, 3]` images in [0, 1] to a dict of named endpoints, `final_avg_pool` being
the representation h. The SK variant (SimCLRv2) uses selective-kernel 3x3 convs and
ResNet-D stem and shortcuts.

The layers are those of the reference implementation (google-research/simclr), in its
creation order and under its names (`conv2d`, `conv2d_1`, ..., `batch_normalization`,
...), so its checkpoints convert exactly (`simclr_tf.convert`): the first block of
every group, block_group1 included, has a projection shortcut, and ResNet-D shortcuts
average-pool first in every group (stride 1 with SAME padding in block_group1).
"""

import keras
from keras import layers, ops

from simclr_tf.models.batch_norm import FusedBatchNormalization
from simclr_tf.models.conv import Conv2D

BLOCKS = {  # depth -> (bottleneck?, blocks per group)
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
    200: (True, (3, 24, 36, 3)),
}
BN_EPSILON = 1e-5
SK_MIN_DIM = 32


class _Builder:
    """Holds the per-model settings so block functions take only shapes."""

    def __init__(self, sk_ratio, sync_bn, bn_momentum, matmul_kernel_grad):
        self.sk_ratio = sk_ratio
        self.sync_bn = sync_bn
        self.bn_momentum = bn_momentum
        self.matmul_kernel_grad = matmul_kernel_grad
        self._count = {"conv2d": 0, "batch_normalization": 0}

    def name(self, kind):
        """The reference's name of the next layer of this kind (`conv2d_3`)."""
        index = self._count[kind]
        self._count[kind] += 1
        return kind if index == 0 else f"{kind}_{index}"

    def bn(self, x, relu=True, zero_gamma=False):
        x = FusedBatchNormalization(
            momentum=self.bn_momentum,
            epsilon=BN_EPSILON,
            synchronized=self.sync_bn,
            gamma_initializer="zeros" if zero_gamma else "ones",
            name=self.name("batch_normalization"),
        )(x)
        return layers.ReLU()(x) if relu else x

    def conv(self, x, filters, kernel_size, strides=1):
        """Conv whose padding depends only on the kernel, not the input size."""
        if strides > 1:
            pad = kernel_size - 1
            x = layers.ZeroPadding2D(((pad // 2, pad - pad // 2),) * 2)(x)
        return Conv2D(
            filters,
            kernel_size,
            strides,
            padding="same" if strides == 1 else "valid",
            use_bias=False,
            kernel_initializer="variance_scaling",
            matmul_kernel_grad=self.matmul_kernel_grad,
            name=self.name("conv2d"),
        )(x)

    def conv3x3(self, x, filters, strides):
        """BN-ReLU'd 3x3 conv, selective-kernel when sk_ratio > 0."""
        if self.sk_ratio <= 0:
            return self.bn(self.conv(x, filters, 3, strides))
        names = {
            k: self.name(kind)
            for k, kind in (
                ("conv", "conv2d"),
                ("bn", "batch_normalization"),
                ("squeeze", "conv2d"),
                ("squeeze_bn", "batch_normalization"),
                ("expand", "conv2d"),
            )
        }
        return SelectiveKernel(
            filters,
            strides,
            self.sk_ratio,
            self.sync_bn,
            self.bn_momentum,
            self.matmul_kernel_grad,
            layer_names=names,
        )(x)

    def shortcut(self, x, filters, strides):
        if self.sk_ratio > 0:  # ResNet-D: 2x2 average pool, then a stride-1 1x1 conv.
            if strides > 1:  # padded as the reference pads: after, then VALID
                x = layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
            x = layers.AveragePooling2D(2, strides, padding="same" if strides == 1 else "valid")(x)
            strides = 1
        return self.bn(self.conv(x, filters, 1, strides), relu=False)

    def basic_block(self, x, filters, strides, project):
        """The reference's basic block keeps plain 3x3 convs even with sk_ratio > 0
        (selective kernels replace bottleneck 3x3 convs only)."""
        shortcut = self.shortcut(x, filters, strides) if project else x
        x = self.bn(self.conv(x, filters, 3, strides))
        x = self.bn(self.conv(x, filters, 3), relu=False, zero_gamma=True)
        return layers.ReLU()(layers.Add()([x, shortcut]))

    def bottleneck_block(self, x, filters, strides, project):
        shortcut = self.shortcut(x, 4 * filters, strides) if project else x
        x = self.bn(self.conv(x, filters, 1))
        x = self.conv3x3(x, filters, strides)
        x = self.bn(self.conv(x, 4 * filters, 1), relu=False, zero_gamma=True)
        return layers.ReLU()(layers.Add()([x, shortcut]))

    def stem(self, x, filters, cifar_stem):
        """(the stem's conv output, the same after the max-pool); the CIFAR stem has
        no max-pool."""
        if cifar_stem:
            x = self.bn(self.conv(x, filters, 3, 1))
            return x, x
        if self.sk_ratio > 0:  # ResNet-D stem: three 3x3 convs.
            x = self.bn(self.conv(x, filters // 2, 3, 2))
            x = self.bn(self.conv(x, filters // 2, 3, 1))
            x = self.bn(self.conv(x, filters, 3, 1))
        else:
            x = self.bn(self.conv(x, filters, 7, 2))
        x = layers.Identity(name="initial_conv")(x)
        return x, layers.MaxPooling2D(3, 2, padding="same")(x)


class SelectiveKernel(layers.Layer):
    """SK conv (SimCLRv2): two 3x3 paths mixed by a softmax over global context."""

    def __init__(
        self,
        filters,
        strides,
        sk_ratio,
        sync_bn=False,
        bn_momentum=0.9,
        matmul_kernel_grad=True,
        layer_names=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        names = layer_names or {}
        self.layer_names = dict(names)
        self.filters, self.strides, self.sk_ratio = filters, strides, sk_ratio
        self.sync_bn, self.bn_momentum = sync_bn, bn_momentum
        self.matmul_kernel_grad = matmul_kernel_grad
        self._pad = layers.ZeroPadding2D(1) if strides > 1 else None
        self.conv = Conv2D(
            2 * filters,
            3,
            strides,
            use_bias=False,
            padding="valid" if strides > 1 else "same",
            kernel_initializer="variance_scaling",
            matmul_kernel_grad=matmul_kernel_grad,
            name=names.get("conv"),
        )
        self.bn = FusedBatchNormalization(
            momentum=bn_momentum, epsilon=BN_EPSILON, synchronized=sync_bn, name=names.get("bn")
        )
        mid = max(int(filters * sk_ratio), SK_MIN_DIM)
        self.squeeze = layers.Conv2D(
            mid,
            1,
            use_bias=False,
            kernel_initializer="variance_scaling",
            name=names.get("squeeze"),
        )
        self.squeeze_bn = FusedBatchNormalization(
            momentum=bn_momentum,
            epsilon=BN_EPSILON,
            synchronized=sync_bn,
            name=names.get("squeeze_bn"),
        )
        self.expand = layers.Conv2D(
            2 * filters,
            1,
            use_bias=False,
            kernel_initializer="variance_scaling",
            name=names.get("expand"),
        )

    def call(self, x, training=None):
        if self._pad is not None:
            x = self._pad(x)
        x = ops.relu(self.bn(self.conv(x), training=training))
        paths = ops.stack(ops.split(x, 2, axis=-1))  # [2, B, H, W, C]
        context = ops.mean(ops.sum(paths, axis=0), axis=(1, 2), keepdims=True)
        context = ops.relu(self.squeeze_bn(self.squeeze(context), training=training))
        mixing = ops.stack(ops.split(self.expand(context), 2, axis=-1))
        mixing = ops.softmax(mixing, axis=0)
        return ops.sum(paths * mixing, axis=0)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "sk_ratio": self.sk_ratio,
            "sync_bn": self.sync_bn,
            "bn_momentum": self.bn_momentum,
            "matmul_kernel_grad": self.matmul_kernel_grad,
            "layer_names": self.layer_names,
        }


def resnet(
    depth,
    width_multiplier=1.0,
    sk_ratio=0.0,
    cifar_stem=False,
    *,
    input_shape=(None, None, 3),
    sync_bn=False,
    bn_momentum=0.9,
    matmul_kernel_grad=True,
    name=None,
):
    """ResNet v1 encoder (SimCLR's, SimCLRv2's with selective kernels).

    Args:
      depth: 18, 34, 50, 101, 152 or 200.
      width_multiplier: channel multiplier; may be fractional (e.g. 0.25 for CPU runs).
      sk_ratio: > 0 for selective-kernel 3x3 convs and the ResNet-D stem (SimCLRv2
        uses 0.0625).
      cifar_stem: a 3x3 stride-1 stem without max-pool, for 32 x 32 images.
      input_shape: (H, W, 3) of the float images in [0, 1].
      sync_bn: batch-norm statistics over the global batch (all replicas).
      bn_momentum: moving-average momentum of batch norm.
      matmul_kernel_grad: see `simclr_tf.models.conv` (bf16 kernel gradients of small
        outputs as one matmul, where that is faster).
      name: the Keras model's name.

    Returns:
      A functional `keras.Model` mapping [B, H, W, 3] images to a dict:
      `initial_conv` (the stem before its max-pool), `initial_max_pool`,
      `block_group1..4` ([B, h, w, C] feature maps) and
      `final_avg_pool` ([B, C], the representation h).
    """
    if depth not in BLOCKS:
        raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS)}, got {depth}")
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}")
    if sk_ratio < 0:
        raise ValueError(f"sk_ratio must be >= 0, got {sk_ratio}")
    bottleneck, counts = BLOCKS[depth]
    builder = _Builder(sk_ratio, sync_bn, bn_momentum, matmul_kernel_grad)
    block = builder.bottleneck_block if bottleneck else builder.basic_block

    def width(base):
        return max(int(base * width_multiplier), 1)

    inputs = keras.Input(shape=input_shape, name="images")
    endpoints = {}
    conv_out, x = builder.stem(inputs, width(64), cifar_stem)
    if cifar_stem:
        conv_out = x = layers.Identity(name="initial_conv")(x)
    endpoints["initial_conv"] = conv_out
    x = endpoints["initial_max_pool"] = layers.Identity(name="initial_max_pool")(x)
    for group, (count, base, strides) in enumerate(
        zip(counts, (64, 128, 256, 512), (1, 2, 2, 2)), start=1
    ):
        filters = width(base)
        for i in range(count):
            # The reference projects in the first block of every group, even where the
            # shape does not change (block_group1 of ResNet-18 and -34).
            x = block(x, filters, strides if i == 0 else 1, project=i == 0)
        # Named identity layers mark the endpoints, so callers can freeze "up to" one.
        x = endpoints[f"block_group{group}"] = layers.Identity(name=f"block_group{group}")(x)
    endpoints["final_avg_pool"] = layers.GlobalAveragePooling2D(name="final_avg_pool")(x)
    name = name or f"resnet{depth}_w{width_multiplier:g}" + ("_sk" if sk_ratio > 0 else "")
    return keras.Model(inputs, endpoints, name=name)


def representation_dim(depth, width_multiplier=1.0):
    """Channels of `final_avg_pool`."""
    bottleneck, _ = BLOCKS[depth]
    return max(int(512 * width_multiplier), 1) * (4 if bottleneck else 1)


def freeze_through(encoder, endpoint):
    """Makes every layer up to and including `endpoint` non-trainable (BN frozen too)."""
    stop = encoder.layers.index(encoder.get_layer(endpoint))
    for layer in encoder.layers[: stop + 1]:
        layer.trainable = False
