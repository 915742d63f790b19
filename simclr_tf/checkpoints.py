"""Checkpoints: what a checkpoint of a run holds, how it is written safely, and how
parts of it initialise another model.

Every kind of run (pretraining, linear eval, fine-tuning, supervised) saves its parts
under the same names (`encoder`, `projection_head`, `probe`, `linear_head`,
`optimizer`), so a pretraining checkpoint initialises a fine-tuning run and an export
reads any of them.
"""

import os
import shutil

import tensorflow as tf
from absl import logging

PARTS = ("projection_head", "probe", "linear_head")


def checkpoint_items(model, optimizer=True):
    """The objects a checkpoint holds, under names shared by every kind of run.

    Args:
      model: a `PretrainModel` or `ClassifierModel` (anything with an `encoder`).
      optimizer: include the model's optimizer (its slots and step), if it has one.

    Returns:
      A dict of name -> trackable object for `tf.train.Checkpoint(**items)`.
    """
    items = {"encoder": model.encoder}
    if optimizer and getattr(model, "optimizer", None) is not None:
        items["optimizer"] = model.optimizer
    for name in PARTS:
        part = getattr(model, name, None)
        if part is not None:
            items[name] = part
    return items


class CheckpointManager:
    """`tf.train.CheckpointManager` that is safe to kill at any moment.

    TF writes checkpoint data under temporary names and updates the `checkpoint`
    index file atomically after the data is complete, so a kill mid-save leaves the
    previous checkpoint as the latest one. In a multi-worker run every worker saves
    (the save may need collectives) but only the chief keeps its files, and every
    worker resumes from the chief's.
    """

    def __init__(self, items, directory, max_to_keep=3, is_chief=True, worker_id=0):
        self.checkpoint = tf.train.Checkpoint(**items)
        self.is_chief = is_chief
        self.run_directory = directory
        self.directory = (
            directory if is_chief else os.path.join(directory, f".worker_tmp_{worker_id}")
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.directory, max_to_keep=max_to_keep
        )

    @property
    def latest(self):
        """The run's newest checkpoint (the chief's, on every worker)."""
        return tf.train.latest_checkpoint(self.run_directory)

    def restore_latest(self):
        """Restores the newest checkpoint; returns its path or None."""
        path = self.latest
        if path:
            self.checkpoint.restore(path).expect_partial()
            logging.info("Resumed from %s", path)
        return path

    def save(self, step):
        path = self.manager.save(checkpoint_number=step)
        if not self.is_chief:
            shutil.rmtree(self.directory, ignore_errors=True)
        return path


class CheckpointMismatch(ValueError):
    """The checkpoint's variables do not fit the objects (another architecture)."""


def restore_parts(items, path):
    """Initialises the given objects (e.g. encoder, projection head) from a checkpoint."""
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {path}")
        path = latest
    try:
        status = tf.train.Checkpoint(**items).read(path)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointMismatch(f"{path} does not fit this model: {first}") from None
    return path


def restore_model(model, path):
    """Loads every part of `model` except the optimizer from a checkpoint (a path or the
    latest in a directory); returns the checkpoint path."""
    return restore_parts(checkpoint_items(model, optimizer=False), path)


def head_classes(checkpoint, head):
    """Class count of the `head` (`probe` or `linear_head`) saved in `checkpoint`."""
    for name, shape in tf.train.list_variables(checkpoint):
        if name.startswith(head + "/") and len(shape) == 1 and "OPTIMIZER" not in name:
            return shape[0]
    raise ValueError(f"{checkpoint} has no {head} bias")
