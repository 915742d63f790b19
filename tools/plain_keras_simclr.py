"""A plain Keras 3 SimCLR ResNet-18 train step, written without any simclr_tf code.

The side-by-side baseline for `tools/benchmark.py step`: the straightforward way to
write SimCLR in Keras 3 (functional ResNet-18 with CIFAR stem, 2-layer head, NT-Xent,
momentum SGD), so the project's own step can be compared in the same process.
"""

import keras
import tensorflow as tf
from keras import layers


def _block(x, filters, stride):
    shortcut = x
    y = layers.Conv2D(filters, 3, stride, padding="same", use_bias=False)(x)
    y = layers.ReLU()(layers.BatchNormalization()(y))
    y = layers.Conv2D(filters, 3, 1, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization(gamma_initializer="zeros")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, stride, use_bias=False)(x)
        shortcut = layers.BatchNormalization()(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def resnet18(width=1.0, size=32):
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(int(64 * width), 3, 1, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for filters, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        x = _block(x, int(filters * width), stride)
        x = _block(x, int(filters * width), 1)
    return keras.Model(inputs, layers.GlobalAveragePooling2D()(x))


class PlainSimCLR(keras.Model):
    def __init__(self, width=1.0, size=32, temperature=0.5):
        super().__init__()
        self.encoder = resnet18(width, size)
        dim = int(512 * width)
        self.head = keras.Sequential([layers.Dense(dim), layers.ReLU(), layers.Dense(128)])
        self.temperature = temperature

    def call(self, images, training=False):
        return self.head(self.encoder(images, training=training))

    def train_step(self, data):
        view1, view2, _ = keras.utils.unpack_x_y_sample_weight(data)
        n = tf.shape(view1)[0]
        with tf.GradientTape() as tape:
            z = self(tf.concat([view1, view2], 0), training=True)
            z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1)
            logits = tf.matmul(z, z, transpose_b=True) / self.temperature
            logits -= 1e9 * tf.eye(2 * n)
            labels = tf.concat([tf.range(n, 2 * n), tf.range(n)], 0)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return {"loss": loss}


def build(width=1.0, size=32, jit_compile=False):
    model = PlainSimCLR(width, size)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=jit_compile)
    model(tf.zeros([1, size, size, 3]))
    return model
