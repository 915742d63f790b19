"""Which examples a run reads, chosen by identity: label subsets (1% / 10% of the
labels, or a listed file such as SimCLR's ImageNet subsets) and seeded class-balanced
samples (the kNN bank, evaluation samples).

By identity, never by position: a source may list or interleave its examples in any
order, and the same data and seed must give the same examples on every worker and
every rerun.
"""

import os

import numpy as np
import tensorflow as tf
from absl import logging

from simclr_tf.data.source import DataError


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
    try:
        with tf.io.gfile.GFile(path) as f:
            lines = [line.split("#", 1)[0].strip() for line in f]
    except UnicodeDecodeError:
        raise DataError(f"label subset file {path} is not a text file of ids") from None
    except tf.errors.NotFoundError:
        raise DataError(f"label subset file {path} not found") from None
    for number, line in enumerate(lines, start=1):
        if len(line.split()) > 1:
            raise DataError(
                f"label subset file {path}, line {number}: {line[:80]!r} is not one id "
                "(one id or file name per line)"
            )
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
        raise DataError(
            f"{len(missing)} of {len(subset)} ids in the label subset are not "
            f"in the split (first: {missing[0]!r})"
        )
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
    logging.info(
        "%s: %d of %d examples of %r, class-balanced, seed %d",
        what,
        len(chosen),
        total,
        split,
        seed,
    )
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
    logging.info(
        "Training on %d of %d labelled examples (%s); ids in %s",
        len(subset),
        len(ids),
        how,
        os.path.join(config.run.model_dir, SUBSET_FILE),
    )
    return subset
