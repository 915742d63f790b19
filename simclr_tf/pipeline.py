"""tf.data pipelines: sharding, shuffling, seeded augmentation, batching, prefetch.

Each training pipeline is built per input pipeline from a `tf.distribute.InputContext`
(per-worker shard, per-replica batch) and is fed through
`strategy.distribute_datasets_from_function`. Augmentation seeds are
`[seed, pipeline id, element (or batch) index]`-derived, so a run is replayable when
`deterministic` is set. Pretraining views are made per batch where the images have one
size (`batch_augment.py`), else cropped image by image and coloured per batch.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import logging

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


def class_balanced_subset(ids, labels, fraction, seed):
    """Sorted ids of `fraction` of each class (at least one), chosen by `seed`.

    Chosen from the examples sorted by id, so the same data and seed give the same
    subset whatever order the source lists them in.
    """
    ids, labels = np.asarray(ids), np.asarray(labels)
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    if np.any(labels < 0):
        raise DataError("label_fraction needs labeled data, but some examples have no label")
    order = np.argsort(ids, kind="stable")
    ids, labels = ids[order], labels[order]
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, int(round(fraction * len(members))))
        chosen.append(ids[rng.permutation(members)[:count]])
    return np.sort(np.concatenate(chosen))


def read_subset_file(path):
    """Ids listed one per line (blank lines and `#` comments skipped); the format of the
    SimCLR ImageNet 1%/10% files. A line may be a path: its last component is the id
    when the source names examples by file name."""
    with tf.io.gfile.GFile(path) as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    ids = sorted({line for line in lines if line})
    if not ids:
        raise DataError(f"label subset file {path} lists no examples")
    return np.array(ids, dtype=object)


def write_subset_file(path, ids):
    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write("".join(f"{i}\n" for i in ids))
    tf.io.gfile.rename(tmp, path, overwrite=True)


def match_subset(subset, all_ids):
    """The subset's ids as the split names them; a DataError naming what is missing.
    Ids may match whole or by file name (the last path component)."""
    known = set(all_ids)
    by_name = {}
    for i in all_ids:
        by_name.setdefault(i.rsplit("/", 1)[-1], []).append(i)
    matched, missing = [], []
    for wanted in subset:
        if wanted in known:
            matched.append(wanted)
        elif len(by_name.get(wanted.rsplit("/", 1)[-1], ())) == 1:
            matched.append(by_name[wanted.rsplit("/", 1)[-1]][0])
        else:
            missing.append(wanted)
    if missing:
        raise DataError(f"{len(missing)} of {len(subset)} ids in the label subset are not "
                        f"in the split (first: {missing[0]!r})")
    return np.array(sorted(set(matched)), dtype=object)


def sample_ids(source, split, size, seed, what):
    """Ids of a seeded class-balanced sample of about `size` examples (None: the whole
    split, when it is no larger), never the first `size` in storage order (which, for
    a folder sorted by class, would hold the first classes only)."""
    total = source.num_examples(split)
    if size <= 0 or size >= total:
        logging.info("%s: all %d examples of %r", what, total, split)
        return None
    ids, labels = source.index(split)
    chosen = class_balanced_subset(ids, labels, size / total, seed)
    logging.info("%s: %d of %d examples of %r, class-balanced, seed %d", what, len(chosen),
                 total, split, seed)
    return chosen


SUBSET_FILE = "label_subset.txt"


def label_subset(config, source, chief):
    """The ids of the labelled examples to train on (None: all), chosen by identity and
    written to model_dir/label_subset.txt, so every epoch, worker and rerun uses the
    same examples and the file says which."""
    d = config.data
    if d.label_fraction >= 1.0 and d.label_subset is None:
        return None
    ids, labels = source.index(d.train_split)
    if d.label_subset is not None:
        subset = match_subset(read_subset_file(d.label_subset), ids)
        how = f"listed in {d.label_subset}"
    else:
        subset = class_balanced_subset(ids, labels, d.label_fraction, d.seed)
        how = f"{100 * d.label_fraction:g}% per class, seed {d.seed}"
    if chief:
        tf.io.gfile.makedirs(config.run.model_dir)
        write_subset_file(os.path.join(config.run.model_dir, SUBSET_FILE), subset)
    logging.info("Training on %d of %d labelled examples (%s); ids in %s", len(subset),
                 len(ids), how, os.path.join(config.run.model_dir, SUBSET_FILE))
    return subset


def _examples(source, split, data: DataConfig, ctx, subset=None, train=True):
    # A subset by identity: the same examples in every pass and on every worker.
    ds = source.load(split, shuffle_files=train and subset is None and not data.deterministic,
                     ids=subset)
    if ctx is not None and ctx.num_input_pipelines > 1:
        # By identity too: disjoint shards however the source interleaves its files.
        n, index = ctx.num_input_pipelines, ctx.input_pipeline_id
        ds = ds.filter(lambda ex: tf.equal(
            tf.strings.to_hash_bucket_fast(ex["id"], n), index))
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


def eval_dataset(source, split, data: DataConfig, batch_size, subset=None):
    """One finite pass of `{"image", "label"}` with the eval preprocessing, over the
    examples whose ids are in `subset` (None: all of them)."""
    size = data.image_size
    ds = _examples(source, split, data, None, subset=subset, train=False)
    ds = ds.map(lambda ex: {"image": augment.eval_view(ex["image"], size, size),
                            "label": ex["label"]}, num_parallel_calls=AUTOTUNE)
    return _finish(ds, batch_size, data, drop_remainder=False)
