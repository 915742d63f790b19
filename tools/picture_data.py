"""What the representation pictures share: the encoder of a run or SavedModel, and a
class-balanced sample of a split with its images, labels and L2-normalised features."""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Sample:
    images: np.ndarray  # uint8 [n, s, s, 3], the network's input (eval view)
    labels: np.ndarray  # int64 [n]; -1 where unlabelled
    features: np.ndarray  # float32 [n, C], L2-normalised final_avg_pool


def add_model_flags(parser):
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model_dir", help="a simclr_tf run directory (latest checkpoint)")
    group.add_argument("--saved_model", help="a SavedModel exported by --mode=export")
    parser.add_argument("--dataset", default="cifar10", help="as simclr_tf.main's --dataset")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=256)


def sample(source, split, size, encoder_fn, image_size, seed, batch_size, what):
    """`size` class-balanced examples of `split` (all of them when it is smaller)."""
    from simclr_tf import evaluation
    from simclr_tf.config import DataConfig
    from simclr_tf.data import pipeline, subsets

    source.check_split(split)
    ids = subsets.sample_ids(source, split, size, seed, what)
    data = DataConfig(image_size=image_size, deterministic=True, seed=seed)
    dataset = pipeline.eval_dataset(source, split, data, batch_size, subset=ids)
    features, labels = evaluation.extract_features(encoder_fn, dataset)
    # The same deterministic pass again for the pictures, as uint8 to keep them small.
    images = np.concatenate([np.round(b["image"].numpy() * 255).astype(np.uint8) for b in dataset])
    return Sample(images, labels, features)


def open_model_and_source(args):
    from simclr_tf import representations
    from simclr_tf.data import open_source

    encoder_fn, image_size = representations.load_encoder(args.model_dir or args.saved_model)
    return encoder_fn, image_size, open_source(args.dataset, args.data_dir)


def save_figure(fig, out, dpi=100):
    """Writes a matplotlib figure to the PNG `out` (its directory made) and frees it."""
    import os

    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
