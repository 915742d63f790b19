"""Steps per execution and deterministic resumption: neither changes what is trained.

With `deterministic` data a resumed run reads the very batches the uninterrupted run
would have read from that step on, and several steps per compiled call run the same
per-step arithmetic, so both end at the uninterrupted single-step run's weights. On one
device the ops and their order are the same, so the weights agree to float32 rounding
of identical computations: the test allows 1e-6 of each variable's norm.
"""

import numpy as np
import pytest
from test_train import _replace, tiny_config

from simclr_tf import train
from simclr_tf.training_loop import steps_per_execution_for

TOLERANCE = 1e-6


@pytest.mark.parametrize(
    "requested, start, total, loop, expected",
    [
        (0, 0, 100, 50, 1),  # auto off TPU: one step per call
        (1, 0, 100, 50, 1),
        (8, 0, 100, 50, 5),  # the largest count <= 8 dividing 50 and 100
        (8, 25, 100, 50, 5),
        (32, 0, 96, 64, 32),
        (32, 48, 96, 64, 16),  # resumed at step 48: calls must end on 48 + 16k
        (4, 7, 100, 50, 1),
    ],
)
def test_steps_per_execution_divides_every_boundary(requested, start, total, loop, expected):
    import tensorflow as tf

    got = steps_per_execution_for(requested, tf.distribute.get_strategy(), start, total, loop)
    assert got == expected
    assert loop % got == 0 and total % got == 0 and (start % got == 0)


def _deterministic(tmp_path, name, cifar_data_dir, **run):
    config = tiny_config(tmp_path / name, cifar_data_dir, mode="pretrain", **run)
    config = _replace(config, "data", deterministic=True, eval_split=None)
    return _replace(config, "run", checkpoint_steps=3)


class _Killed(Exception):
    pass


def _interrupted_at_3(config):
    """The run killed as step 4 begins, after its step-3 checkpoint."""
    import keras

    class Kill(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 3:
                raise _Killed

    with pytest.raises(_Killed):
        train.run(config, extra_callbacks=[Kill()])


def _weights(model):
    return [v.numpy() for v in model.trainable_variables]


def test_resumed_and_multi_step_runs_end_at_the_uninterrupted_weights(tmp_path, cifar_data_dir):
    whole, _ = train.run(_deterministic(tmp_path, "whole", cifar_data_dir, train_steps=6))
    _interrupted_at_3(_deterministic(tmp_path, "split", cifar_data_dir, train_steps=6))
    resumed, results = train.run(_deterministic(tmp_path, "split", cifar_data_dir, train_steps=6))
    assert results["global_step"] == 6
    multi, results = train.run(
        _deterministic(tmp_path, "multi", cifar_data_dir, train_steps=6, steps_per_execution=3)
    )
    assert results["global_step"] == 6
    assert multi.steps_per_execution == 3
    assert sorted(p.name for p in (tmp_path / "multi").glob("ckpt-*.index")) == [
        "ckpt-3.index",
        "ckpt-6.index",
    ]
    reference = _weights(whole)
    for other in (resumed, multi):
        for a, b in zip(reference, _weights(other)):
            assert np.linalg.norm(b - a) <= TOLERANCE * max(np.linalg.norm(a), 1e-30)
