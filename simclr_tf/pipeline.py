"""tf.data pipelines: sharding, shuffling, seeded augmentation, batching, prefetch.

Each training pipeline is built per input pipeline from a `tf.distribute.InputContext`
(per-worker shard, per-replica batch) and is fed through
`strategy.distribute_datasets_from_function`. Augmentation seeds are
`[seed, pipeline id, element (or batch) index]`-derived, so a run is replayable when
`deterministic` is set. Pretraining views are made per batch where the images have one
size (`batch_augment.py`), else cropped image by image and coloured per batch.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from simclr_tf import augment, batch_augment
from simclr_tf.config import AugmentConfig, DataConfig
from simclr_tf.datasource import DataError

AUTOTUNE = tf.data.AUTOTUNE
COLOUR_TAG = 0xC010  # folds a batch's seed away from its images' own seeds


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
    batched = aug.batched_augment and batch_augment.supports(aug)
    examples = _examples(source, split, data, ctx)
    if batched and examples.element_spec["image"].shape.is_fully_defined():
        # One size: batch first; the whole view graph runs once per batch, seeded by
        # the batch's index, so no per-image op is left.
        def views(seed, ex):
            v1, v2 = batch_augment.two_views_of_batch(ex["image"], seed, size, aug)
            return {"view1": v1, "view2": v2, "label": ex["label"]}

        ds = _seeded(examples.batch(batch_size, drop_remainder=True), data, ctx)
        ds = ds.map(views, num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE).with_options(_options(data.deterministic))

    ds = _seeded(examples, data, ctx)
    per_image = (dataclasses.replace(aug, color_jitter_prob=0.0, grayscale_prob=0.0,
                                     blur_prob=0.0) if batched else aug)

    def cropped_views(seed, ex):
        v1, v2 = augment.two_views(ex["image"], seed, size, size, config=per_image)
        views = {"view1": v1, "view2": v2, "label": ex["label"]}
        return dict(views, seed=seed) if batched else views

    def colour(batch):
        seeds = tf.random.experimental.stateless_split(_batch_seed(batch.pop("seed")), 2)
        return dict(batch, view1=batch_augment.colour_stage(batch["view1"], seeds[0], aug),
                    view2=batch_augment.colour_stage(batch["view2"], seeds[1], aug))

    ds = ds.map(cropped_views, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    if batched:
        ds = ds.map(colour, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(_options(data.deterministic))


def _batch_seed(element_seeds):
    """One seed per batch, from its first element's; each image still draws its own."""
    return tf.random.experimental.stateless_fold_in(element_seeds[0], COLOUR_TAG)


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
