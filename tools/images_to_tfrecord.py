"""Converts an image folder into sharded TFRecord files, with a progress bar.

  python tools/images_to_tfrecord.py --input=/data/photos --output=/data/tfr/train \
      --num_shards=64 [--validate]

Writes `{output}-00000-of-00064.tfrecord`, ... with the feature spec that
`--dataset=tfrecord:/data/tfr/{split}-*.tfrecord` reads (see simclr_tf/file_sources.py):
`image/encoded` (the file's bytes, not re-encoded), `image/class/label` (from class
sub-folders; -1 when there are none) and `image/filename` (the path below `--input`, the
example's id, as a folder source names it). Shards are written under a temporary name and
renamed when complete, so an interrupted conversion leaves no half-written shard.
With --validate, images that fail to decode are left out and counted.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Image folder (optionally with class sub-folders).")
flags.DEFINE_string("output", None, "Output prefix, e.g. /data/tfr/train.")
flags.DEFINE_integer("num_shards", 16, "Number of output files.")
flags.DEFINE_bool("validate", False, "Decode every image and leave out the ones that fail.")


def _example(contents, label, name):
    import tensorflow as tf

    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[contents])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def convert(input_dir, output_prefix, num_shards=16, validate=False, verbose=True):
    """Returns (written, skipped) counts."""
    import keras
    import tensorflow as tf

    from simclr_tf.data import file_sources
    from simclr_tf.data.source import DataError

    if not os.path.isdir(input_dir):
        raise DataError(f"image folder not found: {input_dir}")
    classes = file_sources.class_names(input_dir)
    paths, labels = file_sources.scan_split(input_dir, classes)
    num_shards = max(1, min(num_shards, len(paths)))
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
    progress = keras.utils.Progbar(len(paths), unit_name="image", verbose=1 if verbose else 0)
    written = skipped = 0
    for shard in range(num_shards):
        final = f"{output_prefix}-{shard:05d}-of-{num_shards:05d}.tfrecord"
        tmp = final + ".tmp"
        with tf.io.TFRecordWriter(tmp) as writer:
            for index in range(shard, len(paths), num_shards):
                with open(paths[index], "rb") as f:
                    contents = f.read()
                if validate:
                    try:
                        file_sources.decode(contents)
                    except tf.errors.OpError:
                        skipped += 1
                        progress.add(1)
                        continue
                name = os.path.relpath(paths[index], input_dir).replace(os.sep, "/")
                writer.write(_example(contents, labels[index], name))
                written += 1
                progress.add(1)
        os.replace(tmp, final)
    return written, skipped


def main(argv):
    del argv
    if not FLAGS.input or not FLAGS.output:
        print("images_to_tfrecord: error: --input and --output are required", file=sys.stderr)
        return 2
    from simclr_tf.data.source import DataError

    try:
        written, skipped = convert(FLAGS.input, FLAGS.output, FLAGS.num_shards, FLAGS.validate)
    except DataError as error:
        print(f"images_to_tfrecord: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {written} images to {FLAGS.num_shards} shards; {skipped} unreadable skipped")
    return 0


if __name__ == "__main__":
    app.run(main)
