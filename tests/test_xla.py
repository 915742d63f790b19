"""The full train steps compile with XLA (`--jit_compile`, what a TPU runs) and match
the uncompiled steps.

Tolerance, from float32 arithmetic: XLA fuses and reorders sums, so each result
differs by rounding only. A sum of K products carries a relative error of at most
about K*u (u = 2^-24, float32's unit roundoff); the largest K here is a 3x3 conv over
64 channels (576), and a gradient passes some 40 such layers forward and back, so
40 * 576 * u = 1.4e-3 bounds the relative error of any gradient, hence of each
update. The tests allow 2e-3 on the update (one vector of every variable: the bound
is relative to the magnitudes summed, which a nearly cancelling gradient's result
is not) and on the loss.
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

TOLERANCE = 2e-3
BATCH = 8


def _config(jit_compile, mode="pretrain", **model):
    return Config(
        run=RunConfig(mode=mode, jit_compile=jit_compile, precision="float32"),
        data=DataConfig(batch_size=BATCH, shuffle_buffer=64, seed=1),
        model=ModelConfig(depth=18, width_multiplier=0.125, **model),
        optim=OptimConfig(learning_rate=1.0, warmup_epochs=0.0, weight_decay=1e-4),
    )


def _updates_and_losses(build, batch, steps=2):
    """Per-variable updates after `steps` steps on `batch`, compiled without and with
    XLA from the same initial weights, and the loss each reported."""
    out = {}
    for jit in (False, True):
        keras.utils.set_random_seed(3)
        model = build(jit)
        before = [v.numpy() for v in model.trainable_variables]
        history = model.fit(
            tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=steps, verbose=0
        )
        after = [v.numpy() for v in model.trainable_variables]
        out[jit] = ([a - b for a, b in zip(after, before)], history.history["loss"][-1])
        assert model.jit_compile is jit
    return out[False], out[True]


def _assert_close(plain, compiled):
    (plain_updates, plain_loss), (xla_updates, xla_loss) = plain, compiled
    assert abs(xla_loss - plain_loss) <= TOLERANCE * abs(plain_loss), (xla_loss, plain_loss)
    plain_flat = np.concatenate([u.ravel() for u in plain_updates])
    xla_flat = np.concatenate([u.ravel() for u in xla_updates])
    assert np.count_nonzero(plain_flat) > plain_flat.size // 2  # real updates compared
    error = np.linalg.norm(xla_flat - plain_flat) / np.linalg.norm(plain_flat)
    assert error <= TOLERANCE, f"updates differ by {error:.2e} of their norm"


@pytest.fixture(scope="module")
def cifar(cifar_data_dir):
    return open_source("cifar10", cifar_data_dir)


def test_pretraining_step_compiles_with_xla_and_matches(cifar):
    """Selective-kernel encoder, nonlinear head, blockwise NT-Xent with its custom
    gradient over several (padded) blocks, the online probe and LARS, in one XLA
    computation."""
    config = _config(False, sk_ratio=0.0625)
    batch = next(
        iter(pipeline.pretrain_dataset(cifar, "train[:64]", config.data, config.augment, BATCH))
    )

    def build(jit):
        c = _config(jit, sk_ratio=0.0625)
        model = builders.pretrain_model(c, num_classes=10)
        # 16 anchors in blocks of 5: four blocks, the last one padded.
        model.contrastive_loss = functools.partial(losses.nt_xent, temperature=0.2, block_rows=5)
        return training_loop.compile_for_run(model, c, total_steps=10, steps_per_epoch=10)

    _assert_close(*_updates_and_losses(build, batch))


def test_fine_tuning_step_compiles_with_xla_and_matches(cifar):
    config = _config(False)
    batch = next(iter(pipeline.classifier_train_dataset(cifar, "train[:64]", config.data, BATCH)))

    def build(jit):
        c = _config(jit, mode="finetune")
        model = builders.classifier_model(c, num_classes=10)
        return training_loop.compile_for_run(model, c, total_steps=10, steps_per_epoch=10)

    _assert_close(*_updates_and_losses(build, batch))
