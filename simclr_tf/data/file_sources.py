"""Image folders and TFRecord files as sources, with corrupt images skipped and counted.

Folder layout: images anywhere below the root (unlabeled), or one sub-folder per class
(labels from the sorted folder names). A root holding `train/`, `test/`, `val/` or
`validation/` folders gets those as splits; otherwise everything is split `train`.

TFRecord feature spec (written by `tools/images_to_tfrecord.py`):
  image/encoded      bytes   JPEG/PNG/BMP/GIF file contents        (required)
  image/class/label  int64   class index; absent or -1 = unlabeled (optional)
  image/filename     bytes   the example's id; absent: `file:index` (optional)
Folder examples are identified by their path relative to the split's root.
A spec may contain `{split}`, e.g. `tfrecord:/data/{split}-*.tfrecord`; without it
the files form split `train`. Class count: the largest label + 1, read once at open.
"""

import os

import tensorflow as tf

from simclr_tf.data.image_header import DEFAULT_MAX_PIXELS, check_pixels
from simclr_tf.data.source import DataError, SkipCounter, Source, id_filter

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SPLIT_DIRS = ("train", "test", "val", "validation")
FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def decode(contents, max_pixels=DEFAULT_MAX_PIXELS):
    """Any of JPEG/PNG/BMP/GIF to uint8 RGB; grayscale, RGBA and palettes converted.
    An image whose header claims over `max_pixels` pixels is an error, not decoded."""
    contents = check_pixels(contents, max_pixels)
    return tf.io.decode_image(contents, channels=3, expand_animations=False)


def _load_image(item, is_path, max_pixels=DEFAULT_MAX_PIXELS):
    return decode(tf.io.read_file(item) if is_path else item, max_pixels)


def decode_skipping_errors(item, fields, counter, is_path=False, max_pixels=DEFAULT_MAX_PIXELS):
    """One element per input: the decoded image with `fields` (label, id), or none if
    decoding fails (counted).

    With `is_path`, reading happens here too, so a file deleted mid-run is skipped
    like a corrupt one.
    """
    good = (
        tf.data.Dataset.from_tensors(item)
        .map(lambda x: _load_image(x, is_path, max_pixels))
        .ignore_errors()
        .map(lambda image: (image, True))
    )
    bad = tf.data.Dataset.from_tensors((tf.zeros([1, 1, 3], tf.uint8), False))
    first = good.concatenate(bad).take(1)
    return (
        first.map(lambda image, ok: (image, ok, counter.count(ok)))
        .filter(lambda image, ok, _: ok)
        .map(lambda image, ok, _: {"image": image, **fields})
    )


def _decoded(records, strict, counter, is_path=False, max_pixels=DEFAULT_MAX_PIXELS):
    """(contents or path, {"label", "id"}) records -> {"image", "label", "id"}, decoded
    in parallel."""
    if strict:
        return records.map(
            lambda x, fields: {"image": _load_image(x, is_path, max_pixels), **fields},
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return records.interleave(
        lambda x, fields: decode_skipping_errors(x, fields, counter, is_path, max_pixels),
        cycle_length=16,
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
    )


# --- Folders ------------------------------------------------------------------------


def list_images(root):
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        found.extend(
            os.path.join(dirpath, f)
            for f in sorted(filenames)
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
    return found


def scan_split(root, classes):
    """(paths, labels) of one split; labels are -1 without class folders."""
    paths = list_images(root)
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    if classes is None:
        return paths, [-1] * len(paths)
    index = {name: i for i, name in enumerate(classes)}
    labels = []
    for path in paths:
        top = os.path.relpath(path, root).split(os.sep)[0]
        labels.append(index.get(top, -1))
    return paths, labels


def class_names(root):
    """Sorted class folder names, or None when some image lies directly in `root`."""
    entries = sorted(os.listdir(root))
    if any(
        e.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(root, e))
        for e in entries
    ):
        return None
    dirs = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    return dirs or None


def folder_source(root, strict=False, max_pixels=DEFAULT_MAX_PIXELS):
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise DataError(f"image folder not found: {root}")
    split_roots = {
        s: os.path.join(root, s) for s in SPLIT_DIRS if os.path.isdir(os.path.join(root, s))
    }
    if not split_roots:
        split_roots = {"train": root}
    classes = class_names(split_roots.get("train", next(iter(split_roots.values()))))
    listing = {split: scan_split(path, classes) for split, path in split_roots.items()}
    counter = SkipCounter()

    def load(split, shuffle_files, wanted=None):
        paths, labels = listing[split]
        ids = ids_of(split)
        if wanted is not None:  # the listing is in memory: keep only those files
            keep = set(wanted)
            chosen = [i for i, name in enumerate(ids) if name in keep]
            paths, labels, ids = ([x[i] for i in chosen] for x in (paths, labels, ids))
        records = tf.data.Dataset.from_tensor_slices(
            (
                tf.constant(paths, tf.string),
                {"label": tf.constant(labels, tf.int64), "id": tf.constant(ids, tf.string)},
            )
        )
        if shuffle_files:
            records = records.shuffle(len(paths), reshuffle_each_iteration=True)
        return _decoded(records, strict, counter, is_path=True, max_pixels=max_pixels)

    def ids_of(split):
        return [
            os.path.relpath(p, split_roots[split]).replace(os.sep, "/") for p in listing[split][0]
        ]

    def index(split):
        return tf.data.Dataset.from_tensor_slices(
            (ids_of(split), tf.constant(listing[split][1], tf.int64))
        )

    sizes = {split: len(paths) for split, (paths, _) in listing.items()}
    return Source(f"folder:{root}", len(classes or []), sizes, load, counter, index)


# --- TFRecords ----------------------------------------------------------------------


def _check_image_feature(path):
    """The first record of `path` must hold `image/encoded` (a DataError before any
    training, not a parse error mid-run)."""
    try:
        first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as error:
        raise DataError(f"cannot read TFRecords {path}: {error.message.splitlines()[0]}") from None
    if first is None:
        return
    example = tf.train.Example()
    try:
        example.ParseFromString(first.numpy())
    except Exception:  # noqa: BLE001 (protobuf's DecodeError)
        raise DataError(f"{path}: its records are not tf.train.Example protos") from None
    features = sorted(example.features.feature)
    if "image/encoded" not in features:
        raise DataError(
            f"{path}: records have no 'image/encoded' feature (found: "
            f"{', '.join(features) or 'none'}; tools/images_to_tfrecord.py writes the format)"
        )


def tfrecord_source(pattern, strict=False, max_pixels=DEFAULT_MAX_PIXELS):
    pattern = os.path.expanduser(pattern)
    if "{split}" in pattern:
        splits = {}
        for split in SPLIT_DIRS:
            files = sorted(tf.io.gfile.glob(pattern.format(split=split)))
            if files:
                splits[split] = files
    else:
        files = sorted(tf.io.gfile.glob(pattern))
        splits = {"train": files} if files else {}
    if not splits:
        raise DataError(f"no TFRecord files match {pattern}")

    def parse(path, index, serialized):
        example = tf.io.parse_single_example(serialized, FEATURES)
        fallback = tf.strings.join(
            [tf.strings.split(path, "/")[-1], ":", tf.strings.as_string(index)]
        )
        name = example["image/filename"]
        return example["image/encoded"], {
            "label": example["image/class/label"],
            "id": tf.where(tf.strings.length(name) > 0, name, fallback),
        }

    for files in splits.values():
        _check_image_feature(files[0])
    # One pass over the labels (not the images) to size splits and count classes.
    sizes, max_label = {}, -1
    for split, files in splits.items():
        count = 0
        label_only = {"image/class/label": FEATURES["image/class/label"]}
        try:
            labels = tf.data.TFRecordDataset(files).map(
                lambda s: tf.io.parse_single_example(s, label_only)["image/class/label"]
            )
            for batch in labels.batch(4096):
                count += int(batch.shape[0])
                max_label = max(max_label, int(tf.reduce_max(batch)))
        except tf.errors.OpError as error:
            raise DataError(
                f"cannot read TFRecords {files[0]}...: {error.message.splitlines()[0]}"
            ) from None
        sizes[split] = count
    counter = SkipCounter()

    def records(split, shuffle_files):
        files = tf.data.Dataset.from_tensor_slices(splits[split])
        if shuffle_files:
            files = files.shuffle(len(splits[split]))
        return files.interleave(
            lambda path: tf.data.TFRecordDataset(path).enumerate().map(lambda i, s: (path, i, s)),
            cycle_length=8,
            num_parallel_calls=tf.data.AUTOTUNE,
        ).map(parse, num_parallel_calls=tf.data.AUTOTUNE)

    def load(split, shuffle_files, wanted=None):
        parsed = records(split, shuffle_files)
        if wanted is not None:  # before decoding
            keep = id_filter(wanted)
            parsed = parsed.filter(lambda _, fields: keep(fields["id"]))
        return _decoded(parsed, strict, counter, max_pixels=max_pixels)

    def index(split):
        return records(split, False).map(lambda _, fields: (fields["id"], fields["label"]))

    return Source(f"tfrecord:{pattern}", max_label + 1, sizes, load, counter, index)
