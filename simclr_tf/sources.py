"""Opens a data source from its spec: a TFDS name, `folder:PATH` or `tfrecord:GLOB`."""

from simclr_tf.datasource import DataError, Source  # noqa: F401  (re-exported)
from simclr_tf.file_sources import folder_source, tfrecord_source
from simclr_tf.tfds_source import tfds_source


def open_source(spec, data_dir=None, download=True, strict=False) -> Source:
    if not spec:
        raise DataError("no dataset given")
    if spec.startswith("folder:"):
        return folder_source(spec[len("folder:"):], strict)
    if spec.startswith("tfrecord:"):
        return tfrecord_source(spec[len("tfrecord:"):], strict)
    if spec.startswith("tfds:"):
        spec = spec[len("tfds:"):]
    return tfds_source(spec, data_dir, download)
