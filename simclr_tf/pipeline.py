"""tf.data pipelines: sharding, shuffling, seeded augmentation, batching, prefetch.

Each training pipeline is built per input pipeline from a `tf.distribute.InputContext`
(per-worker shard, per-replica batch) and is fed through
`strategy.distribute_datasets_from_function`. Augmentation seeds are
`[seed, pipeline id, element index]`-derived, so a run is replayable when
`deterministic` is set.
"""

import numpy as np
import tensorflow as tf

from simclr_tf import augment
from simclr_tf.config import AugmentConfig, DataConfig
from simclr_tf.datasource import DataError

AUTOTUNE = tf.data.AUTOTUNE


def _options(deterministic):
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    return options


def class_balanced_subset(labels, fraction, seed):
    """Sorted indices of `fraction` of each class (at least one), chosen by `seed`."""
    labels = np.asarray(labels)
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    if np.any(labels < 0):
        raise DataError("label_fraction needs labeled data, but some examples have no label")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, int(round(fraction * len(members))))
        chosen.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(chosen))


def read_labels(source, split):
    """All labels of a split, in the source's fixed order."""
    ds = source.load(split).map(lambda ex: ex["label"], num_parallel_calls=AUTOTUNE)
    batches = [b.numpy() for b in ds.batch(8192)]
    return np.concatenate(batches) if batches else np.zeros([0], np.int64)


def _examples(source, split, data: DataConfig, ctx, subset=None, train=True, limit=0):
    ds = source.load(split, shuffle_files=train and subset is None and not data.deterministic)
    if subset is not None:
        mask = np.zeros(source.num_examples(split), bool)
        mask[subset] = True
        keep = tf.constant(mask)
        ds = ds.enumerate().filter(lambda i, ex: keep[i]).map(lambda i, ex: ex)
    if ctx is not None and ctx.num_input_pipelines > 1:
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
    if limit:
        ds = ds.take(limit)  # before the cache, so the cache holds a complete pass
    if data.cache:
        ds = ds.cache()
    if train:
        pipeline_id = ctx.input_pipeline_id if ctx is not None else 0
        ds = ds.shuffle(data.shuffle_buffer, seed=data.seed * 7919 + pipeline_id,
                        reshuffle_each_iteration=True).repeat()
    return ds


def _seeded(ds, data: DataConfig, ctx):
    """Attaches a distinct [2] seed to every element."""
    pipeline_id = ctx.input_pipeline_id if ctx is not None else 0
    base = tf.constant(data.seed * 100_003 + pipeline_id, tf.int64)
    return ds.enumerate().map(lambda i, ex: (tf.stack([base, i]), ex))


def _finish(ds, batch_size, data, drop_remainder=True):
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)
    return ds.with_options(_options(data.deterministic))


def pretrain_dataset(source, split, data: DataConfig, aug: AugmentConfig, batch_size,
                     ctx=None):
    """Batches of `{"view1", "view2", "label"}` for contrastive pretraining."""
    size = data.image_size

    def views(seed, ex):
        v1, v2 = augment.two_views(ex["image"], seed, size, size, config=aug)
        return {"view1": v1, "view2": v2, "label": ex["label"]}

    ds = _seeded(_examples(source, split, data, ctx), data, ctx)
    return _finish(ds.map(views, num_parallel_calls=AUTOTUNE), batch_size, data)


def classifier_train_dataset(source, split, data: DataConfig, batch_size, ctx=None,
                             subset=None):
    """Batches of `{"image", "label"}` with crop-and-flip, for linear eval / fine-tuning."""
    size = data.image_size

    def view(seed, ex):
        return {"image": augment.train_view(ex["image"], seed, size, size),
                "label": ex["label"]}

    ds = _seeded(_examples(source, split, data, ctx, subset), data, ctx)
    return _finish(ds.map(view, num_parallel_calls=AUTOTUNE), batch_size, data)


def eval_dataset(source, split, data: DataConfig, batch_size, limit=0):
    """One finite pass of `{"image", "label"}` with the eval preprocessing."""
    size = data.image_size
    ds = _examples(source, split, data, None, train=False, limit=limit)
    ds = ds.map(lambda ex: {"image": augment.eval_view(ex["image"], size, size),
                            "label": ex["label"]}, num_parallel_calls=AUTOTUNE)
    return _finish(ds, batch_size, data, drop_remainder=False)
