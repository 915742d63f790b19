"""Data: every source (TFDS, image folder, TFRecord) behind one `Source`, and the
tf.data pipelines that turn a source into training and evaluation batches.

`open_source(spec)` is the front door: a TFDS name (`cifar10`, `tfds:imagenet2012`),
`folder:PATH` or `tfrecord:GLOB` (see `file_sources` for the layouts).
"""

from simclr_tf.data import file_sources, tfds_source
from simclr_tf.data.image_header import DEFAULT_MAX_PIXELS
from simclr_tf.data.source import DataError, SkipCounter, Source

__all__ = ["DataError", "SkipCounter", "Source", "open_source"]


def open_source(
    spec, data_dir=None, download=True, strict=False, max_pixels=DEFAULT_MAX_PIXELS
) -> Source:
    """Opens the data source a spec names.

    Args:
      spec: `NAME` or `tfds:NAME` (a TFDS dataset), `folder:PATH` or `tfrecord:GLOB`
        (a glob that may contain `{split}`).
      data_dir: TFDS data directory (None: TFDS' default, `TFDS_DATA_DIR`).
      download: whether TFDS may download and prepare an unprepared dataset.
      strict: fail on an undecodable image instead of skipping and counting it.
      max_pixels: images (folder, TFRecord) whose header claims more pixels are
        refused before decoding, as undecodable ones are.

    Returns:
      A `Source` yielding `{"image": uint8 [H, W, 3], "label": int64 (-1 when
      unlabelled), "id": string}` per example.

    Raises:
      DataError: the spec names nothing readable (one line saying why).
    """
    if not spec:
        raise DataError("no dataset given")
    if spec.startswith("folder:"):
        return file_sources.folder_source(spec[len("folder:") :], strict, max_pixels)
    if spec.startswith("tfrecord:"):
        return file_sources.tfrecord_source(spec[len("tfrecord:") :], strict, max_pixels)
    if spec.startswith("tfds:"):
        spec = spec[len("tfds:") :]
    return tfds_source.tfds_source(spec, data_dir, download)
