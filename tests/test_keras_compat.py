"""Each piece of `simclr_tf.keras_compat` against the upstream behaviour it relies on or
works around: when an upgrade changes that behaviour, one of these fails and names the
piece to re-check."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_tf import keras_compat
from simclr_tf.models import resnet

from conftest import cpu_devices


def test_installed_versions_are_the_ones_the_workarounds_were_written_for():
    installed = {"keras": keras.__version__, "tensorflow": tf.__version__}
    assert installed == keras_compat.WRITTEN_FOR, (
        "Keras/TF changed: re-check every piece of keras_compat.py against its test, "
        "then update WRITTEN_FOR"
    )


def test_all_sublayers_reaches_layers_that_model_layers_misses():
    # Selective kernels live in bottleneck blocks (ResNet-50 and deeper).
    encoder = resnet.resnet(50, 0.125, sk_ratio=0.0625, cifar_stem=True, input_shape=(16, 16, 3))
    sk = next(l for l in encoder.layers if isinstance(l, resnet.SelectiveKernel))
    inner = {id(l) for l in (sk.bn, sk.squeeze_bn, sk.conv)}
    assert not inner & {id(l) for l in encoder.layers}  # why the private walk is needed
    assert inner <= {id(l) for l in keras_compat.all_sublayers(encoder)}


def test_fit_still_calls_the_symbolic_build_hook_the_step_models_override():
    """If Keras stops calling `_maybe_symbolic_build`, the multi-worker skip is dead code
    and a renamed hook would again reduce a dict batch under MultiWorkerMirrored."""
    calls = []

    class Probe(keras_compat.StepModel):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            calls.append((iterator is not None, data_batch is not None))
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    strategy = keras_compat.mirrored_strategy(cpu_devices(2))
    with strategy.scope():
        model = Probe()
        model.compile(optimizer="sgd", loss="mse")
    x = np.ones((4, 3), np.float32)
    model.fit(x, x[:, :1], epochs=1, verbose=0)
    assert calls and calls[0][0]
    params = inspect.signature(keras.Model._maybe_symbolic_build).parameters
    assert list(params) == ["self", "iterator", "data_batch"]


def test_keras_reduces_multi_worker_logs_with_axis_0_which_rejects_scalars():
    from keras.src.backend.tensorflow import trainer

    source = inspect.getsource(trainer.reduce_per_replica)
    assert 'strategy.reduce("MEAN", v, axis=0)' in source  # what step_logs reshapes for
    strategy = keras_compat.mirrored_strategy(cpu_devices(2))
    scalar = strategy.run(lambda: tf.constant(2.0))
    with pytest.raises(Exception, match="reduction dimension"):
        strategy.reduce("MEAN", scalar, axis=0)
    vector = strategy.run(lambda: tf.reshape(tf.constant(2.0), [1]))
    assert float(strategy.reduce("MEAN", vector, axis=0)) == 2.0


def test_mirrored_strategies_read_the_collective_key_base_when_built():
    first = keras_compat.mirrored_strategy(cpu_devices(2))
    second = keras_compat.mirrored_strategy(cpu_devices(4))
    bases = [s.extended._collective_key_base for s in (first, second)]
    assert bases[0] != bases[1]
    # Both strategies still all-reduce correctly, one after the other.
    for strategy, n in ((first, 2), (second, 4), (first, 2)):
        ones = strategy.run(lambda: tf.constant(1.0))
        assert float(strategy.reduce("SUM", ones, axis=None)) == n


def test_stock_tensorboard_restarts_its_step_axis_and_ours_continues(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(7)
    for cls, expected in ((keras.callbacks.TensorBoard, 0), (keras_compat.ResumableTensorBoard, 7)):
        callback = cls(str(tmp_path / cls.__name__))
        callback.set_model(model)
        callback._global_train_batch = 3  # as after an earlier fit
        callback.on_train_begin()
        assert callback._global_train_batch == expected
        callback.on_train_end()


def _scalars(log_dir, tag):
    import glob

    points = []
    for path in glob.glob(f"{log_dir}/**/events.out.tfevents.*", recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    points.append((event.step, float(tf.make_ndarray(value.tensor))))
    return sorted(points)


def test_batch_summaries_are_means_since_the_last_summary(tmp_path):
    """Keras hands callbacks running means since the epoch began; written every 2 steps
    over two 4-step epochs of losses 1..8, the curve must be the mean of each 2-step
    window (1.5, 3.5 | 5.5, 7.5), with no jump back where the second epoch starts."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    names = {m.name for m in model.metrics}
    assert "loss" in names
    callback = keras_compat.ResumableTensorBoard(str(tmp_path), update_freq=2)
    callback.set_model(model)
    callback.on_train_begin()
    losses = np.arange(1.0, 9.0)
    for epoch in range(2):
        callback.on_epoch_begin(epoch)
        for batch in range(4):
            seen = losses[4 * epoch : 4 * epoch + batch + 1]
            callback.on_train_batch_begin(batch)
            callback.on_train_batch_end(batch, {"loss": seen.mean(), "learning_rate": 0.1})
        callback.on_epoch_end(epoch, {"loss": losses[4 * epoch : 4 * epoch + 4].mean()})
    callback.on_train_end()
    assert _scalars(tmp_path, "batch_loss") == [(2, 1.5), (4, 3.5), (6, 5.5), (8, 7.5)]
    # Values that are not running means (no metric of the model) pass through.
    assert [v for _, v in _scalars(tmp_path, "batch_learning_rate")] == pytest.approx([0.1] * 4)


def test_exclusions_are_added_to_those_the_optimizer_already_has():
    a, b, c = (keras.Variable(np.ones(2, np.float32), name=n) for n in ("a", "b", "skip_c"))
    optimizer = keras.optimizers.AdamW(0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_list=[a], var_names=["skip_"])
    keras_compat.exclude_from_weight_decay(optimizer, [b])
    assert [optimizer._use_weight_decay(v) for v in (a, b, c)] == [False, False, False]
    # The public call alone replaces what was there (the reason for the helper).
    plain = keras.optimizers.AdamW(0.1, weight_decay=0.5)
    plain.exclude_from_weight_decay(var_list=[a], var_names=["skip_"])
    plain.exclude_from_weight_decay(var_list=[b])
    assert [plain._use_weight_decay(v) for v in (a, b, c)] == [True, False, True]
    optimizer.build([a, b, c])
    with pytest.raises(ValueError, match="already built"):
        keras_compat.exclude_from_weight_decay(optimizer, [a])
