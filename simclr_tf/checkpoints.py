"""Checkpoints: what a checkpoint of a run holds, how it is written safely, and how
parts of it initialise another model.

Every kind of run (pretraining, linear eval, fine-tuning, supervised) saves its parts
under the same names (`encoder`, `projection_head`, `probe`, `linear_head`,
`optimizer`), so a pretraining checkpoint initialises a fine-tuning run and an export
reads any of them.
"""

import glob
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
        self.max_to_keep = max_to_keep
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
        """Restores the newest readable checkpoint; returns its path or None.

        A checkpoint that cannot be read (truncated data, garbled index: a full disk or
        a crashed file system) is skipped with a one-line warning for the one before
        it; the chief sets its files aside (`*.corrupt`) and drops it from the index, so
        retention never deletes a good checkpoint for it.

        Raises:
          UnreadableCheckpoint: checkpoints exist and none can be read.
        """
        state = tf.train.get_checkpoint_state(self.run_directory)
        paths = list(reversed(state.all_model_checkpoint_paths)) if state else []
        if state and state.model_checkpoint_path not in paths:
            paths.insert(0, state.model_checkpoint_path)
        bad = []
        for path in paths:
            path = _in_run(path, self.run_directory)
            try:
                self.checkpoint.restore(path).expect_partial()
            except (tf.errors.OpError, IndexError, ValueError, OSError) as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
                logging.warning(
                    "Checkpoint %s cannot be read (%s: %s); trying the one before it",
                    path,
                    type(error).__name__,
                    reason[:200],
                )
                bad.append(path)
                continue
            if bad:
                logging.warning("Resumed from %s instead of the unreadable %s", path, bad[0])
                self._set_aside(bad, [p for p in paths if p not in bad])
            logging.info("Resumed from %s", path)
            return path
        if bad:
            raise UnreadableCheckpoint(
                f"no checkpoint in {self.run_directory} can be read ({len(bad)} tried, "
                f"newest {bad[0]}); move them away to start afresh"
            )
        return None

    def _set_aside(self, bad, good):
        """Chief only: renames unreadable checkpoints' files and rewrites the index to
        the good ones, then reopens the manager on it."""
        if not self.is_chief:
            return
        for path in bad:
            for name in glob.glob(glob.escape(path) + ".*"):
                os.replace(name, name + ".corrupt")
        good = [_in_run(p, self.run_directory) for p in good]
        tf.compat.v1.train.update_checkpoint_state(  # TF2 exposes it only here
            self.run_directory,
            model_checkpoint_path=good[0] if good else "",
            all_model_checkpoint_paths=list(reversed(good)),
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.directory, max_to_keep=self.max_to_keep
        )

    def save(self, step):
        """Saves `step`; returns the path.

        Raises:
          CheckpointSaveError: the write failed (disk full, file-size limit, lost
            mount); the checkpoints before it are intact and a rerun resumes there.
        """
        try:
            path = self.manager.save(checkpoint_number=step)
        except (tf.errors.OpError, OSError) as error:
            for partial in glob.glob(os.path.join(glob.escape(self.directory), "*_temp*")):
                shutil.rmtree(partial, ignore_errors=True)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise CheckpointSaveError(
                f"saving step {step} in {self.directory} failed ({type(error).__name__}: "
                f"{reason[:200]}); {self.latest or 'no earlier checkpoint'} is intact: free "
                "space and rerun the same command to resume from it"
            ) from None
        if not self.is_chief:
            shutil.rmtree(self.directory, ignore_errors=True)
        return path


def _in_run(path, directory):
    """A checkpoint path from the index, relative ones taken in the run directory."""
    return path if os.path.isabs(path) else os.path.join(directory, path)


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written, in one line naming the intact one."""


class UnreadableCheckpoint(RuntimeError):
    """Every checkpoint of a run is unreadable, in one line."""


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
