"""Every reliance on private Keras or TensorFlow behaviour, in one place.

Each piece names the upstream behaviour it works around and the versions it was
written for (`WRITTEN_FOR`). `tests/test_keras_compat.py` checks that behaviour is
still there, so an upgrade that changes it fails a test instead of silently making a
workaround wrong or useless; when one fails, re-check the piece and its test together.
"""

import itertools

import keras
import tensorflow as tf

WRITTEN_FOR = {"keras": "3.15.1", "tensorflow": "2.21.0"}


def _multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


# --- Layers nested inside custom layers ----------------------------------------------


def all_sublayers(model):
    """Every layer inside `model`, however deeply nested.

    Keras 3.15 has no public walk: `Model.layers` stops at a functional model's own
    nodes, so the BN layers inside a `SelectiveKernel` or a projection-head block are
    missed. `Layer._flatten_layers` reaches them.
    """
    return list(model._flatten_layers(include_self=False))


# --- Custom train steps under MultiWorkerMirroredStrategy ------------------------------


class StepModel(keras.Model):
    """Base for models with their own `train_step` that must run under every strategy.

    - Keras 3.15's `fit` first builds the model by reducing one distributed batch with
      `strategy.reduce("MEAN", batch)`, which MultiWorkerMirroredStrategy cannot do for
      a dict of per-replica values. Models built and compiled before `fit` have
      nothing left to build, so under multi-worker the step is skipped.
    - Under multi-worker, Keras reduces step outputs with
      `strategy.reduce("MEAN", v, axis=0)`, which rejects scalars
      (tensorflow/tensorflow#72388); `step_logs` makes them one-element vectors.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if _multi_worker(self.distribute_strategy):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def step_logs(self, logs):
        """The train/test step's logs in the shape Keras can reduce under this strategy."""
        if _multi_worker(self.distribute_strategy):
            return {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs


# --- Several MirroredStrategy objects in one process ---------------------------------

# Collective group keys start at 1 in every MirroredStrategy (TF 2.21 reads the class
# attribute `_collective_key_base` when a strategy is built); two strategies of
# different sizes in one process then collide ("joining a group with size 4, but that
# group has size 2"). Each strategy gets its own key range, so a process (a test
# session, a notebook) can build several.
_key_bases = itertools.count(0, 10_000)


def mirrored_strategy(devices=None):
    """`tf.distribute.MirroredStrategy(devices)` with collective keys of its own."""
    tf.distribute.MirroredStrategy._collective_key_base = next(_key_bases)
    return tf.distribute.MirroredStrategy(devices)


# --- TensorBoard across resumed runs -------------------------------------------------


class ResumableTensorBoard(keras.callbacks.TensorBoard):
    """Batch summaries on the optimizer's step axis, so a resumed run continues its
    curves instead of restarting them at 0: Keras 3.15 resets its private batch
    counter `_global_train_batch` at the start of every `fit`.

    Each batch summary of a metric is the mean over the steps since the previous one,
    not Keras' running mean since the epoch began: the fit "epochs" here are checkpoint
    loops, and running means would make every curve jump where a loop starts. Values
    are read only on the steps that are written (`update_freq`), as Keras itself does.
    """

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._global_train_batch = int(self.model.optimizer.iterations.numpy())
        self._last_written = (0, {})

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._last_written = (0, {})  # (batches into the epoch, running means then)

    def on_train_batch_end(self, batch, logs=None):
        every = self.update_freq
        if isinstance(logs, dict) and every != "epoch" and self._global_train_batch % every == 0:
            logs = self._window_means(batch + 1, logs)
        super().on_train_batch_end(batch, logs)

    def _window_means(self, count, logs):
        means = {m.name for m in self.model.metrics}
        last_count, last = self._last_written
        if count <= last_count:  # a new epoch this callback was not told of
            last_count, last = 0, {}
        out, now = dict(logs), {}
        for name, value in logs.items():
            if name in means:
                now[name] = float(value)
                total = now[name] * count - last.get(name, 0.0) * last_count
                out[name] = total / (count - last_count)
        self._last_written = (count, now)
        return out


# --- Adding weight-decay exclusions --------------------------------------------------


def exclude_from_weight_decay(optimizer, variables):
    """Adds `variables` to the optimizer's weight-decay exclusions.

    Keras 3.15's public `exclude_from_weight_decay(var_list, var_names)` replaces the
    exclusions instead of adding to them (and drops a name pattern given earlier), so
    the existing ones are read back from `_exclude_from_weight_decay` (variable keys)
    and `_exclude_from_weight_decay_pattern` and kept.
    """
    if optimizer.built:
        raise ValueError(
            "the optimizer is already built, so its weight-decay exclusions "
            "are fixed; pass compile() an optimizer that has not been built"
        )
    kept_keys = set(getattr(optimizer, "_exclude_from_weight_decay", set()))
    pattern = getattr(optimizer, "_exclude_from_weight_decay_pattern", None)
    optimizer.exclude_from_weight_decay(var_list=list(variables))
    optimizer._exclude_from_weight_decay |= kept_keys
    optimizer._exclude_from_weight_decay_pattern = pattern
