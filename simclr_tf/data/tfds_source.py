"""TFDS datasets: downloaded where the network allows, read from `data_dir` otherwise."""

import collections.abc
import socket
import urllib.parse

import tensorflow as tf

from simclr_tf.data.source import DataError, Source, id_filter


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


PROBE_TIMEOUT_S = 8  # per host, at most 3 hosts: an offline machine knows within 24 s


def reachable(urls, timeout=PROBE_TIMEOUT_S):
    """Whether one of the download hosts accepts a connection (the download's own first
    step), so an offline machine fails at once instead of after minutes of retries.
    None when there is no URL to try (manually downloaded datasets)."""
    hosts = sorted(
        {
            (u.hostname, u.port or (443 if u.scheme == "https" else 80))
            for u in map(urllib.parse.urlparse, urls)
            if u.hostname
        }
    )
    if not hosts:
        return None
    for address in hosts[:3]:
        try:
            socket.create_connection(address, timeout=timeout).close()
            return True
        except OSError:
            continue
    return False


def _rgb(image, channels):
    """Grayscale and RGBA images as RGB (alpha dropped), as the folder source does."""
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 4:
        return image[..., :3]
    return image


def tfds_source(name, data_dir=None, download=True, probe=reachable):
    import tensorflow_datasets as tfds  # heavy; only when a TFDS dataset is asked for

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError and friends
        first_line = str(error).strip().splitlines()[0]
        raise DataError(f"unknown TFDS dataset {name!r}: {first_line}") from None
    if not builder.is_prepared():
        where = data_dir or "the TFDS default directory (TFDS_DATA_DIR)"
        if not download:
            raise DataError(
                f"TFDS dataset {name!r} is not prepared under {where} and downloading is off"
            )
        hint = (
            "prepare it on a machine with network access and pass --data_dir or set TFDS_DATA_DIR"
        )
        if probe(list(builder.url_infos or {})) is False:
            raise DataError(
                f"TFDS dataset {name!r} is not prepared under {where} and its "
                f"download hosts cannot be reached; {hint}"
            )
        try:
            builder.download_and_prepare()
        except Exception as error:
            raise DataError(
                f"TFDS dataset {name!r} is not prepared under {where} and could not be "
                f"downloaded ({type(error).__name__}); {hint}"
            ) from None
    features = builder.info.features
    if "image" not in features:
        raise DataError(f"TFDS dataset {name!r} has no 'image' feature")
    channels = features["image"].shape[-1]
    if channels not in (None, 1, 3, 4):
        raise DataError(
            f"TFDS dataset {name!r} has {channels}-channel images; "
            "1 (grayscale), 3 (RGB) or 4 (RGBA) are read"
        )
    has_label = "label" in features
    num_classes = features["label"].num_classes if has_label else 0
    sizes = _SplitSizes(builder.info.splits)
    # The name the published subsets use (ImageNet's 1%/10% lists name files), else the
    # dataset's own id, else TFDS' per-record id.
    id_key = next((k for k in ("file_name", "id") if k in features), "tfds_id")

    image_feature = features["image"]

    def load(split, shuffle_files, wanted=None):
        # Images stay encoded until the id filter has run, so a sample of a large split
        # decodes only its own images.
        ds = builder.as_dataset(
            split=split,
            shuffle_files=shuffle_files,
            read_config=tfds.ReadConfig(add_tfds_id=id_key == "tfds_id"),
            decoders={"image": tfds.decode.SkipDecoding()},
        )
        if wanted is not None:
            keep = id_filter(wanted)
            ds = ds.filter(lambda example: keep(example[id_key]))

        def select(example):
            label = tf.cast(example["label"], tf.int64) if has_label else tf.constant(-1, tf.int64)
            image = image_feature.decode_example(example["image"])
            return {"image": _rgb(image, channels), "label": label, "id": example[id_key]}

        return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE)

    def index(split):
        ds = builder.as_dataset(
            split=split,
            shuffle_files=False,
            read_config=tfds.ReadConfig(add_tfds_id=id_key == "tfds_id"),
            decoders={"image": tfds.decode.SkipDecoding()},
        )
        return ds.map(
            lambda ex: (
                ex[id_key],
                tf.cast(ex["label"], tf.int64) if has_label else tf.constant(-1, tf.int64),
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    return Source(f"tfds:{name}", num_classes, sizes, load, index_fn=index)
