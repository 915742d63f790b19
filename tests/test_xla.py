"""The full train steps compile with XLA (`--jit_compile`, what a TPU runs) and match
the uncompiled steps.

XLA fuses and reorders the step's sums, so its update differs from the uncompiled one
by rounding, and by how much depends on the batch: with batch norm over 8 images a
late layer's statistics nearly cancel, and on some batches float32 rounding moves a
step's update by 1e-5 of its norm, on others by 5e-3. So the yardstick is measured on
the same batch, not assumed: the uncompiled step on the batch's examples in another order
computes the same update (every reduction over the batch reordered) and differs by
rounding alone. The compiled step must stay within 10 times that difference (it
reorders every reduction, not only the batch's). The loss is a
forward pass, where no gradient cancels: a sum of K products is off by at most K*u
relatively (u = 2^-24), K <= 576 (a 3x3 conv over 64 channels), over some 20 layers:
20 * 576 * u = 7e-4; the tests allow 2e-3.
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_tf import losses, training_loop
from simclr_tf.config import Config, DataConfig, ModelConfig, OptimConfig, RunConfig
from simclr_tf.data import open_source, pipeline
from simclr_tf.models import builders

LOSS_TOLERANCE = 2e-3
BATCH = 8


def _config(jit_compile, mode="pretrain", **model):
    return Config(
        run=RunConfig(mode=mode, jit_compile=jit_compile, precision="float32"),
        data=DataConfig(batch_size=BATCH, shuffle_buffer=64, seed=1, deterministic=True),
        model=ModelConfig(**{"depth": 18, "width_multiplier": 0.125, **model}),
        optim=OptimConfig(learning_rate=1.0, warmup_epochs=0.0, weight_decay=1e-4),
    )


ORDER = [3, 0, 7, 1, 5, 2, 6, 4]


def _update(build, jit, batch):
    """Every variable's update after one step from the seeded initial weights, as one
    vector, and the step's loss."""
    keras.utils.set_random_seed(3)
    model = build(jit)
    assert model.jit_compile is jit
    before = [v.numpy() for v in model.trainable_variables]
    history = model.fit(
        tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=1, verbose=0, shuffle=False
    )
    update = np.concatenate(
        [(v.numpy() - b).ravel() for v, b in zip(model.trainable_variables, before)]
    )
    return update, history.history["loss"][-1]


def _assert_compiled_step_matches(build, batch):
    plain, plain_loss = _update(build, False, batch)
    compiled, compiled_loss = _update(build, True, batch)
    reordered, _ = _update(build, False, {k: tf.gather(v, ORDER) for k, v in batch.items()})
    rounding = np.linalg.norm(reordered - plain)
    assert np.count_nonzero(plain) > plain.size // 2  # real updates compared
    assert 0 < rounding < 1e-2 * np.linalg.norm(plain)
    error = np.linalg.norm(compiled - plain)
    assert error <= 10 * rounding, f"XLA moved the update by {error:.2e}, rounding {rounding:.2e}"
    assert abs(compiled_loss - plain_loss) <= LOSS_TOLERANCE * abs(plain_loss)


@pytest.fixture(scope="module")
def cifar(cifar_data_dir):
    return open_source("cifar10", cifar_data_dir)


@pytest.mark.slow  # about a minute (ResNet-50 with selective kernels); the fine-tuning
# step below keeps XLA compilation in the default suite.
def test_pretraining_step_compiles_with_xla_and_matches(cifar):
    """Selective-kernel encoder, nonlinear head, blockwise NT-Xent with its custom
    gradient over several (padded) blocks, the online probe and LARS, in one XLA
    computation."""
    # Selective kernels live in bottleneck blocks: ResNet-50.
    config = _config(False, depth=50, sk_ratio=0.0625)
    batch = next(
        iter(pipeline.pretrain_dataset(cifar, "train[:64]", config.data, config.augment, BATCH))
    )

    def build(jit):
        c = _config(jit, depth=50, sk_ratio=0.0625)
        model = builders.pretrain_model(c, num_classes=10)
        # 16 anchors in blocks of 5: four blocks, the last one padded.
        model.contrastive_loss = functools.partial(losses.nt_xent, temperature=0.2, block_rows=5)
        return training_loop.compile_for_run(model, c, total_steps=10, steps_per_epoch=10)

    _assert_compiled_step_matches(build, batch)


def test_fine_tuning_step_compiles_with_xla_and_matches(cifar):
    config = _config(False)
    batch = next(iter(pipeline.classifier_train_dataset(cifar, "train[:64]", config.data, BATCH)))

    def build(jit):
        c = _config(jit, mode="finetune")
        model = builders.classifier_model(c, num_classes=10)
        return training_loop.compile_for_run(model, c, total_steps=10, steps_per_epoch=10)

    _assert_compiled_step_matches(build, batch)
