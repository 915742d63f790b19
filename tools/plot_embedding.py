"""A 2-D t-SNE map of a split's representations from a run (or an exported model),
coloured by class: how well the classes separate without any labels in training.

  python tools/plot_embedding.py --model_dir=runs/quickstart --data_dir=... \
      --out=embedding.png [--split=test --size=1000 --perplexity=30]   (or --saved_model)

t-SNE is tools/tsne.py (exact, numpy): a few thousand points take a minute or so.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools import picture_data, tsne  # noqa: E402


def plot(points, labels, out, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    classes = sorted(set(labels.tolist()))
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        chosen = labels == c
        name = "unlabelled" if c < 0 else str(c)
        ax.scatter(*points[chosen].T, s=6, color=colours(i % colours.N), label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    if len(classes) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    fig.tight_layout()
    picture_data.save_figure(fig, out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    picture_data.add_model_flags(parser)
    parser.add_argument("--split", default="test")
    parser.add_argument("--size", type=int, default=1000, help="examples (class-balanced)")
    parser.add_argument("--perplexity", type=float, default=30.0)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--out", required=True, help="the PNG file to write")
    args = parser.parse_args(argv)
    if args.size < 10:
        parser.error("--size must be >= 10")
    from simclr_tf.config import ConfigError
    from simclr_tf.data import DataError

    try:
        encoder_fn, size, source = picture_data.open_model_and_source(args)
        data = picture_data.sample(
            source, args.split, args.size, encoder_fn, size, args.seed, args.batch_size, "map"
        )
    except (ConfigError, DataError, FileNotFoundError, ValueError) as error:
        print(f"plot_embedding: error: {error}", file=sys.stderr)
        return 2
    points = tsne.tsne(data.features, args.perplexity, args.iterations, args.seed)
    kept = tsne.trustworthiness(data.features, points)
    model = args.model_dir or args.saved_model
    plot(points, data.labels, args.out, f"{model}: {args.split}, {len(points)} examples")
    print(f"plot_embedding: {len(points)} points, {kept:.0%} of 5-NN kept -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
