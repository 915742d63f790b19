"""tf.data pipelines: sharding, shuffling, seeded augmentation, batching, prefetch.

Each training pipeline is built per input pipeline from a `tf.distribute.InputContext`
(per-worker shard, per-replica batch) and is fed through
`strategy.distribute_datasets_from_function`. Augmentation seeds are
`[seed, pipeline id, element (or batch) index]`-derived, so a run is replayable when
`deterministic` is set; then `skip_batches` resumes the very stream an uninterrupted
run would read (the skipped examples are read and shuffled, not augmented).
Pretraining views are made per batch where the images have one size (`batch_ops.py`),
else cropped image by image and coloured per batch.
"""

import dataclasses

import tensorflow as tf

from simclr_tf.augment import batch_ops, image_ops
from simclr_tf.config import AugmentConfig, DataConfig
from simclr_tf.data.source import id_filter

AUTOTUNE = tf.data.AUTOTUNE
COLOUR_TAG = 0xC010  # folds a batch's seed away from its images' own seeds


def _options(deterministic):
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    return options


def _examples(source, split, data: DataConfig, ctx, subset=None, train=True):
    # A subset by identity: the same examples in every pass and on every worker.
    ds = source.load(
        split, shuffle_files=train and subset is None and not data.deterministic, ids=subset
    )
    if ctx is not None and ctx.num_input_pipelines > 1:
        # By identity too: disjoint shards however the source interleaves its files.
        n, index = ctx.num_input_pipelines, ctx.input_pipeline_id
        ds = ds.filter(lambda ex: tf.equal(tf.strings.to_hash_bucket_fast(ex["id"], n), index))
    if data.cache:
        ds = ds.cache()
    if train:
        pipeline_id = ctx.input_pipeline_id if ctx is not None else 0
        ds = ds.shuffle(
            data.shuffle_buffer, seed=data.seed * 7919 + pipeline_id, reshuffle_each_iteration=True
        ).repeat()
    return ds


def _seeded(ds, data: DataConfig, ctx):
    """Attaches a distinct [2] seed to every element."""
    pipeline_id = ctx.input_pipeline_id if ctx is not None else 0
    base = tf.constant(data.seed * 100_003 + pipeline_id, tf.int64)
    return ds.enumerate().map(lambda i, ex: (tf.stack([base, i]), ex))


def _finish(ds, batch_size, data, drop_remainder=True):
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)
    return ds.with_options(_options(data.deterministic))


def pretrain_dataset(
    source, split, data: DataConfig, aug: AugmentConfig, batch_size, ctx=None, skip_batches=0
):
    """Endless batches of view pairs for contrastive pretraining.

    Args:
      source: a `Source` (`open_source`).
      split: the split to read (TFDS slices such as `train[:10%]` work).
      data: `DataConfig` (image size, seed, shuffle buffer, determinism, cache).
      aug: `AugmentConfig` of the views.
      batch_size: images per batch (per replica under a strategy).
      ctx: the `tf.distribute.InputContext`, or None outside a strategy.
      skip_batches: batches an earlier part of the run already trained on (a resumed
        run); skipped only when `data.deterministic`, where the stream replays.

    Returns:
      A `tf.data.Dataset` of {"view1", "view2": float32 [B, S, S, 3] in [0, 1],
      "label": int64 [B] (-1 when unlabelled)}, S = `aug.view_size` or else
      `data.image_size`.
    """
    size = aug.view_side(data.image_size)
    batched = aug.batched_augment and batch_ops.supports(aug)
    examples = _examples(source, split, data, ctx)
    if batched and examples.element_spec["image"].shape.is_fully_defined():
        # One size: batch first; the whole view graph runs once per batch, seeded by
        # the batch's index, so no per-image op is left.
        def views(seed, ex):
            v1, v2 = batch_ops.two_views_of_batch(ex["image"], seed, size, aug)
            return {"view1": v1, "view2": v2, "label": ex["label"]}

        ds = _seeded(examples.batch(batch_size, drop_remainder=True), data, ctx)
        ds = ds.skip(_replayed(data, skip_batches))
        ds = ds.map(views, num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE).with_options(_options(data.deterministic))

    ds = _seeded(examples, data, ctx).skip(_replayed(data, skip_batches) * batch_size)
    per_image = (
        dataclasses.replace(aug, color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
        if batched
        else aug
    )

    def cropped_views(seed, ex):
        v1, v2 = image_ops.two_views(ex["image"], seed, size, size, config=per_image)
        views = {"view1": v1, "view2": v2, "label": ex["label"]}
        return dict(views, seed=seed) if batched else views

    def colour(batch):
        seeds = tf.random.experimental.stateless_split(_batch_seed(batch.pop("seed")), 2)
        return dict(
            batch,
            view1=batch_ops.colour_stage(batch["view1"], seeds[0], aug),
            view2=batch_ops.colour_stage(batch["view2"], seeds[1], aug),
        )

    ds = ds.map(cropped_views, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    if batched:
        ds = ds.map(colour, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(_options(data.deterministic))


def _replayed(data: DataConfig, skip_batches):
    """Batches to skip: a non-deterministic stream never replays, so none there."""
    return skip_batches if data.deterministic else 0


def _batch_seed(element_seeds):
    """One seed per batch, from its first element's; each image still draws its own."""
    return tf.random.experimental.stateless_fold_in(element_seeds[0], COLOUR_TAG)


def classifier_train_dataset(
    source, split, data: DataConfig, batch_size, ctx=None, subset=None, skip_batches=0
):
    """Endless crop-and-flip batches for linear eval, fine-tuning or supervised training.

    Args:
      source, split, data, batch_size, ctx, skip_batches: as in `pretrain_dataset`.
      subset: ids of the labelled examples to train on (None: all of them).

    Returns:
      A `tf.data.Dataset` of {"image": float32 [B, S, S, 3], "label": int64 [B]}.
    """
    size = data.image_size

    def view(seed, ex):
        return {"image": image_ops.train_view(ex["image"], seed, size, size), "label": ex["label"]}

    ds = _seeded(_examples(source, split, data, ctx, subset), data, ctx)
    ds = ds.skip(_replayed(data, skip_batches) * batch_size)
    return _finish(ds.map(view, num_parallel_calls=AUTOTUNE), batch_size, data)


def eval_dataset(source, split, data: DataConfig, batch_size, subset=None):
    """One finite pass with the eval preprocessing (centre crop above 32 px, resize).

    Args:
      source, split, data: as in `pretrain_dataset`.
      batch_size: images per batch; the last batch may be smaller.
      subset: ids of the examples to read (None: all of them).

    Returns:
      A `tf.data.Dataset` of {"image": float32 [B, S, S, 3], "label": int64 [B]}.
    """
    size = data.image_size
    ds = _examples(source, split, data, None, subset=subset, train=False)
    ds = ds.map(
        lambda ex: {"image": image_ops.eval_view(ex["image"], size, size), "label": ex["label"]},
        num_parallel_calls=AUTOTUNE,
    )
    return _finish(ds, batch_size, data, drop_remainder=False)


def distill_dataset(
    source,
    split,
    data: DataConfig,
    batch_size,
    ctx=None,
    labelled=None,
    read_labels=False,
    skip_batches=0,
):
    """Endless crop-and-flip batches of every example of `split`, for distillation (the
    paper augments with random crop and flip only).

    Args:
      source, split, data, batch_size, ctx, skip_batches: as in `pretrain_dataset`.
      labelled: ids whose labels the student may read (None: all of them).
      read_labels: False: every label is -1 and none is read (the labelled loss is off).

    Returns:
      A `tf.data.Dataset` of {"image": float32 [B, S, S, 3], "label": int64 [B]}, the
      label -1 where the example is unlabelled or not in `labelled`.
    """
    size = data.image_size
    keep = id_filter(labelled) if read_labels and labelled is not None else None

    def view(seed, ex):
        if not read_labels:
            label = tf.constant(-1, tf.int64)
        elif keep is None:
            label = ex["label"]
        else:
            label = tf.where(keep(ex["id"]), ex["label"], tf.constant(-1, tf.int64))
        return {"image": image_ops.train_view(ex["image"], seed, size, size), "label": label}

    ds = _seeded(_examples(source, split, data, ctx), data, ctx)
    ds = ds.skip(_replayed(data, skip_batches) * batch_size)
    return _finish(ds.map(view, num_parallel_calls=AUTOTUNE), batch_size, data)
