"""A plain Keras 3 SimCLR ResNet-18 train step, written without any simclr_tf code.

The side-by-side baseline for `python -m tools.benchmark step`: the straightforward way to
write SimCLR in Keras 3 (functional ResNet-18 with CIFAR stem, 2-layer head, NT-Xent,
momentum SGD). `benchmark.py` builds it in its own process (same TensorFlow settings)
and, where the project changed TensorFlow's defaults (oneDNN on an AVX2 CPU), also runs
it as a script with TensorFlow's defaults, as a user would get them:

  python tools/plain_keras_simclr.py BATCH.npz --width=0.25 --warmup=4 --repeats=10

BATCH.npz holds `view1` and `view2` [n, h, w, 3] float32 (real augmented images).
Prints one JSON line per precision: {"precision", "step_s"}.
"""

import argparse
import json
import statistics
import time

import keras
import numpy as np
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
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return {"loss": loss}


def build(width=1.0, size=32, jit_compile=False):
    model = PlainSimCLR(width, size)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=jit_compile)
    model(tf.zeros([1, size, size, 3]))
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("batch_npz")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--precisions", default="float32")
    args = parser.parse_args()
    data = np.load(args.batch_npz)
    view1, view2 = tf.constant(data["view1"]), tf.constant(data["view2"])
    for precision in args.precisions.split(","):
        keras.mixed_precision.set_global_policy(precision)
        model = build(args.width, view1.shape[1])
        for _ in range(args.warmup):
            model.train_on_batch(view1, view2)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model.train_on_batch(view1, view2)
            times.append(time.perf_counter() - start)
        print(json.dumps({"precision": precision, "step_s": statistics.median(times)}), flush=True)


if __name__ == "__main__":
    main()
