"""The common shape of every data source, and the one error type users see.

A source yields `{"image": uint8 [H, W, 3], "label": int64, "id": string}` (label -1
when the data has none) and knows its split sizes and class count, so the pipeline, the
models and the CLI never care whether it reads TFDS, an image folder or TFRecord files.
`id` names the example whatever order it is read in (a file path, a TFDS file name or
id, a TFRecord's `image/filename` or file:index), so label subsets and worker shards
are chosen by identity, never by position in a pipeline that may reorder.
"""

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf


class DataError(ValueError):
    """Bad or missing input data, described in one line for the user."""


class SkipCounter:
    """Counts images that failed to decode and were skipped.

    Created before any strategy scope so its variable lives on the host, where the
    input pipeline increments it.
    """

    def __init__(self):
        with tf.init_scope():
            self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_images")

    def count(self, ok):
        return self.variable.assign_add(tf.cast(tf.logical_not(ok), tf.int64))

    @property
    def value(self):
        return int(self.variable.numpy())


def id_filter(ids):
    """A predicate on an example id: whether it is one of `ids` (a hash table, so the
    same examples pass in every pass whatever order they arrive in)."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(ids), tf.string), tf.ones([len(ids)], tf.bool)
        ),
        False,
    )
    return table.lookup


@dataclasses.dataclass
class Source:
    name: str
    num_classes: int  # 0 when unlabeled
    split_sizes: Mapping[str, int]
    # (split, shuffle_files, ids or None) -> dataset of {"image", "label", "id"}; with
    # ids, only those examples, chosen before any image is decoded
    load_fn: Callable[[str, bool, np.ndarray | None], tf.data.Dataset]
    skipped: SkipCounter | None = None  # sources that decode files count failures
    # split -> dataset of (id, label) without decoding images; None: read load_fn's
    index_fn: Callable[[str], tf.data.Dataset] | None = None

    def check_split(self, split):
        if split not in self.split_sizes:
            raise DataError(
                f"{self.name}: no split {split!r}; available: {', '.join(sorted(self.split_sizes))}"
            )

    def load(self, split, shuffle_files=False, ids=None):
        """The split's examples; with `ids`, only those (by identity)."""
        self.check_split(split)
        return self.load_fn(split, shuffle_files, ids)

    def index(self, split):
        """(ids as str, labels int64) of every example of a split, in storage order; read
        once per split (a run asks for it for the kNN bank, its queries and evaluation)."""
        self.check_split(split)
        cache = self.__dict__.setdefault("_index_cache", {})
        if split not in cache:
            cache[split] = self._read_index(split)
        return cache[split]

    def _read_index(self, split):
        ds = (
            self.index_fn(split)
            if self.index_fn is not None
            else self.load_fn(split, False, None).map(lambda ex: (ex["id"], ex["label"]))
        )
        ids, labels = [], []
        for batch_ids, batch_labels in ds.batch(8192):
            ids.extend(i.decode() for i in batch_ids.numpy())
            labels.append(batch_labels.numpy())
        return (
            np.array(ids, dtype=object),
            np.concatenate(labels) if labels else np.zeros([0], np.int64),
        )

    def num_examples(self, split):
        self.check_split(split)
        return self.split_sizes[split]

    @property
    def labeled(self):
        return self.num_classes > 0
