"""A grid of augmented view pairs, made by the training pipeline from the same flags as
a run, so augmentations can be tuned by looking at them.

  python tools/plot_views.py --flagfile=flags/quickstart.cfg --data_dir=... \
      --out=views.png [--pairs=16 --columns=4 --seed=0]

Any dataset the project reads (`--dataset=folder:/photos`, `tfrecord:...`, TFDS) and
any augmentation flag (`--color_jitter_strength=0.5 --blur_prob=0`, ...) work as in
`python -m simclr_tf.main`. Each tile holds one image's two views side by side.
"""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from simclr_tf import main as cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "The PNG file to write.")
flags.DEFINE_integer("pairs", 16, "How many images (pairs of views).")
flags.DEFINE_integer("columns", 4, "Pairs per row.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.out or FLAGS.pairs < 1 or FLAGS.columns < 1:
        print("plot_views: needs --out=FILE.png, --pairs >= 1, --columns >= 1", file=sys.stderr)
        return 2
    from PIL import Image

    from simclr_tf import view_grid
    from simclr_tf.config import ConfigError
    from simclr_tf.data import DataError, open_source, pipeline

    try:
        config = cli.config_from_flags(FLAGS)
        cli.validate(config)
        d = dataclasses.replace(config.data, shuffle_buffer=max(FLAGS.pairs, 64), cache=False)
        source = open_source(d.dataset, d.data_dir, strict=d.strict_decoding)
        source.check_split(d.train_split)
        dataset = pipeline.pretrain_dataset(source, d.train_split, d, config.augment, FLAGS.pairs)
        batch = next(iter(dataset))
    except (ConfigError, DataError, FileNotFoundError) as error:
        print(f"plot_views: error: {error}", file=sys.stderr)
        return 2
    grid = view_grid.pair_grid(batch["view1"], batch["view2"], FLAGS.pairs, FLAGS.columns)
    scale = max(1, 256 // config.data.image_size)  # small images drawn larger
    image = Image.fromarray(grid)
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    image.save(FLAGS.out)
    print(f"plot_views: {FLAGS.pairs} pairs of {d.dataset} {d.train_split} -> {FLAGS.out}")
    return 0


if __name__ == "__main__":
    cli.define_flags()
    app.run(main)
