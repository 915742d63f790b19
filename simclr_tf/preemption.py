"""Preemption-safe multi-worker runs: on SIGTERM every worker saves at one agreed step
and exits with a restartable code; the restarted job resumes from that checkpoint.

TensorFlow's `PreemptionCheckpointHandler` does the cluster-wide agreement (through the
coordination service of MultiWorkerMirroredStrategy); the save itself is the run's own
`checkpoints.CheckpointManager`, so a preemption checkpoint is an ordinary checkpoint
of the run. Any worker may be signalled; all of them stop after the same step, so no
collective is left waiting. On Cloud TPU VMs and GCE CPU VMs TensorFlow's handler does
nothing (its own documented limit); those runs resume from their last regular checkpoint.
"""

import contextlib
import os
import signal
import sys
import threading

import keras
import tensorflow as tf
from absl import logging

# 128 + SIGTERM: what a SIGTERM-killed process returns, and what Kubeflow's TFJob
# (restartPolicy: ExitCode) and TensorFlow's own GCE handler treat as retryable.
RESTARTABLE_EXIT_CODE = 143
_DIR = ".preemption"


def applies(strategy):
    """Multi-worker runs: there a lost worker stalls every other one, so they must stop
    together. One-machine runs resume from their last regular checkpoint."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class SaveOnPreemption(keras.callbacks.Callback):
    """Asks the handler after every step (or `steps_per_execution` steps) whether any
    worker was signalled; at the agreed step it saves through `manager` and exits."""

    def __init__(self, handler_factory):
        super().__init__()
        self._factory = handler_factory
        self.handler = None

    def on_train_begin(self, logs=None):
        if self.handler is None:
            self.handler = self._factory()

    def on_train_batch_end(self, batch, logs=None):
        self.handler.save_checkpoint_if_preempted()


@contextlib.contextmanager
def saving_on_preemption(strategy, save_now, model_dir):
    """Yields the callbacks that make `fit` preemption-safe under `strategy` (none where
    it does not apply, or off the main thread, where no signal handler can be set);
    restores the process's SIGTERM handler afterwards.

    `save_now()` is the run's guarded save (`callbacks.SaveCheckpoint.save_now`): it
    returns (step, path), or None when the run diverged and nothing may be saved (or
    the step is saved already), so a preempted diverged worker never writes
    non-finite weights."""
    if not applies(strategy):
        yield []
        return
    if threading.current_thread() is not threading.main_thread():
        logging.warning("Not on the main thread: no SIGTERM handler, no preemption saves")
        yield []
        return

    def save():
        saved = save_now()
        logging.warning(
            "Preempted: %s; exiting with %d so the job is restarted",
            f"saved step {saved[0]} ({saved[1]})"
            if saved
            else "no new save (step saved already, or diverged)",
            RESTARTABLE_EXIT_CODE,
        )

    def leave():
        sys.stdout.flush()
        sys.exit(RESTARTABLE_EXIT_CODE)

    def handler():
        config = tf.distribute.experimental.TerminationConfig(exit_fn=leave, save_fn=save)
        # The handler's own checkpoint holds only its call counter, which starts at 0 in
        # every process, so all workers count alike after a restart; it is never written
        # (save_fn saves the run's checkpoint instead).
        return tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver,
            tf.train.Checkpoint(),
            checkpoint_dir=os.path.join(model_dir, _DIR, "handler"),
            termination_config=config,
        )

    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield [SaveOnPreemption(handler)]
    finally:
        signal.signal(signal.SIGTERM, previous)
        task_id = getattr(strategy.cluster_resolver, "task_id", 0) or 0
        _remove_handler_dirs(os.path.join(model_dir, _DIR), task_id)


def _remove_handler_dirs(directory, task_id):
    """The handler makes an empty directory per non-chief worker (and deletes its own
    when it exits on a preemption); each worker removes its own, the last the parent."""
    with contextlib.suppress(tf.errors.OpError):
        tf.io.gfile.rmtree(os.path.join(directory, f"workertemp_{task_id}"))
    with contextlib.suppress(tf.errors.OpError):
        if not tf.io.gfile.listdir(directory):
            tf.io.gfile.rmtree(directory)
