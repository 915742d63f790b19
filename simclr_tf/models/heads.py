"""Projection head and the supervised (linear) head.

The projection head maps the representation h to z. Its hidden outputs are kept so a
classifier can fine-tune from head layer k, as SimCLRv2 does (k = 0 is h itself).
"""

import keras
from keras import layers

from simclr_tf.models.batch_norm import FusedBatchNormalization

BN_EPSILON = 1e-5


class DenseBN(layers.Layer):
    """Dense without bias + BN (+ ReLU); BN's beta plays the bias where wanted."""

    def __init__(self, units, relu, center=True, sync_bn=False, bn_momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.units, self.relu, self.center = units, relu, center
        self.sync_bn, self.bn_momentum = sync_bn, bn_momentum
        self.dense = layers.Dense(
            units, use_bias=False, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01)
        )
        self.bn = FusedBatchNormalization(
            momentum=bn_momentum, epsilon=BN_EPSILON, center=center, synchronized=sync_bn
        )

    def build(self, input_shape):
        # Built by hand, so enter each sublayer's name scope as Keras would: variable
        # names must be unique for TF1-style SavedModel loaders (saved_model_cli, Serving).
        with keras.name_scope(self.dense.name):
            self.dense.build(input_shape)
        with keras.name_scope(self.bn.name):
            self.bn.build((*input_shape[:-1], self.units))

    def call(self, x, training=None):
        x = self.bn(self.dense(x), training=training)
        return keras.ops.relu(x) if self.relu else x

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "relu": self.relu,
            "center": self.center,
            "sync_bn": self.sync_bn,
            "bn_momentum": self.bn_momentum,
        }


class ProjectionHead(layers.Layer):
    """The projection head g(h) = z.

    Args:
      mode: `nonlinear` (num_layers Dense+BN layers, ReLU between, hidden width =
        the input's), `linear` (one Dense+BN) or `none` (z = h).
      num_layers: layers of the nonlinear head (SimCLRv2: 3; v1: 2).
      out_dim: width of z.
      sync_bn, bn_momentum: as in `resnet`.

    Call: h float [B, C] -> the list [h, layer 1 output, ..., z]; fine-tuning from
    head layer k reads entry k (SimCLRv2 fine-tunes from k = 1).
    """

    def __init__(
        self, mode="nonlinear", num_layers=3, out_dim=128, sync_bn=False, bn_momentum=0.9, **kwargs
    ):
        super().__init__(**kwargs)
        if mode not in ("nonlinear", "linear", "none"):
            raise ValueError(f"proj_head_mode must be nonlinear, linear or none, got {mode!r}")
        if mode == "nonlinear" and num_layers < 1:
            raise ValueError(f"a nonlinear head needs num_proj_layers >= 1, got {num_layers}")
        self.mode, self.num_layers, self.out_dim = mode, num_layers, out_dim
        self.sync_bn, self.bn_momentum = sync_bn, bn_momentum
        self._num_built = 0

    @property
    def layers_(self):
        return [getattr(self, f"layer_{i}") for i in range(self._num_built)]

    def build(self, input_shape):
        width = input_shape[-1]
        kw = dict(sync_bn=self.sync_bn, bn_momentum=self.bn_momentum)
        if self.mode == "linear":
            layers_ = [DenseBN(self.out_dim, relu=False, center=False, **kw)]
        elif self.mode == "nonlinear":
            layers_ = [DenseBN(width, relu=True, **kw) for _ in range(self.num_layers - 1)]
            layers_.append(DenseBN(self.out_dim, relu=False, center=False, **kw))
        else:
            layers_ = []
        # Named attributes, not a list: TF checkpoints track attributes of Keras layers.
        for i, layer in enumerate(layers_):
            setattr(self, f"layer_{i}", layer)
        self._num_built = len(layers_)
        for layer in layers_:
            with keras.name_scope(layer.name):
                layer.build(input_shape)
            input_shape = (*input_shape[:-1], layer.units)

    def call(self, h, training=None):
        outputs = [h]
        for layer in self.layers_:
            outputs.append(layer(outputs[-1], training=training))
        return outputs

    @property
    def num_outputs(self):
        return {"none": 1, "linear": 2, "nonlinear": self.num_layers + 1}[self.mode]

    def get_config(self):
        return {
            **super().get_config(),
            "mode": self.mode,
            "num_layers": self.num_layers,
            "out_dim": self.out_dim,
            "sync_bn": self.sync_bn,
            "bn_momentum": self.bn_momentum,
        }


def linear_head(num_classes, name="linear_head", zero_init=True):
    """The linear classifier on a representation.

    Args:
      num_classes: logits per example.
      name: the layer's name (`linear_head`; the online probe is `probe`).
      zero_init: zero-initialised kernel, as in the reference fine-tuning code.

    Returns:
      A float32 `keras.layers.Dense` ([B, C] -> [B, num_classes] logits), so logits
      and the loss keep full precision under mixed precision.
    """
    init = "zeros" if zero_init else keras.initializers.RandomNormal(stddev=0.01)
    return layers.Dense(num_classes, kernel_initializer=init, name=name, dtype="float32")
