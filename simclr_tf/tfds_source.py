"""TFDS datasets: downloaded where the network allows, read from `data_dir` otherwise."""

import collections.abc

import tensorflow as tf

from simclr_tf.datasource import DataError, Source


class _SplitSizes(collections.abc.Mapping):
    """Split sizes that also resolve TFDS slices such as `train[:10%]`."""

    def __init__(self, splits):
        self._splits = splits

    def __getitem__(self, split):
        try:
            return self._splits[split].num_examples
        except Exception:
            raise KeyError(split) from None

    def __contains__(self, split):
        try:
            self[split]
            return True
        except KeyError:
            return False

    def __iter__(self):
        return iter(self._splits.keys())

    def __len__(self):
        return len(self._splits)


def tfds_source(name, data_dir=None, download=True):
    import tensorflow_datasets as tfds  # heavy; only when a TFDS dataset is asked for

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError and friends
        first_line = str(error).strip().splitlines()[0]
        raise DataError(f"unknown TFDS dataset {name!r}: {first_line}") from None
    if not builder.is_prepared():
        where = data_dir or "the TFDS default directory (TFDS_DATA_DIR)"
        if not download:
            raise DataError(f"TFDS dataset {name!r} is not prepared under {where} "
                            "and downloading is off")
        try:
            builder.download_and_prepare()
        except Exception as error:
            raise DataError(
                f"TFDS dataset {name!r} is not prepared under {where} and could not be "
                f"downloaded ({type(error).__name__}); prepare it on a machine with network "
                "access and pass --data_dir or set TFDS_DATA_DIR") from None
    features = builder.info.features
    if "image" not in features:
        raise DataError(f"TFDS dataset {name!r} has no 'image' feature")
    has_label = "label" in features
    num_classes = features["label"].num_classes if has_label else 0
    sizes = _SplitSizes(builder.info.splits)

    def load(split, shuffle_files):
        ds = builder.as_dataset(split=split, shuffle_files=shuffle_files)

        def select(example):
            label = (tf.cast(example["label"], tf.int64) if has_label
                     else tf.constant(-1, tf.int64))
            return {"image": example["image"], "label": label}

        return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE)

    return Source(f"tfds:{name}", num_classes, sizes, load)
