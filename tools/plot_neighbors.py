"""Query images and their nearest neighbours by cosine similarity of a run's (or an
exported model's) representations, correct neighbours framed green, wrong red.

  python tools/plot_neighbors.py --model_dir=runs/quickstart --data_dir=... \
      --out=neighbors.png [--queries=8 --k=8 --bank_size=10000
      --bank_split=train --query_split=test]   (or --saved_model=DIR)

Queries come from --query_split, neighbours from a class-balanced sample of
--bank_split; both seeded (--seed). Unlabelled data is drawn without frames.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools import picture_data  # noqa: E402


def neighbours(bank_features, query_features, k):
    """Indices [queries, k] of each query's k most similar bank rows, best first."""
    import numpy as np

    sims = query_features @ bank_features.T
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def plot(queries, bank, k, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nearest = neighbours(bank.features, queries.features, k)
    rows = len(queries.images)
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.2 * (k + 1), 1.2 * rows), squeeze=False)
    for r in range(rows):
        cells = [(queries.images[r], None)] + [
            (bank.images[j], bank.labels[j] == queries.labels[r]) for j in nearest[r]
        ]
        for c, (image, correct) in enumerate(cells):
            ax = axes[r][c]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            labelled = queries.labels[r] >= 0
            colour = "black" if correct is None else "green" if correct else "red"
            for spine in ax.spines.values():
                spine.set_color(colour if labelled or correct is None else "white")
                spine.set_linewidth(3 if correct is not None and labelled else 1)
    axes[0][0].set_title("query", fontsize=8)
    for c in range(1, k + 1):
        axes[0][c].set_title(f"#{c}", fontsize=8)
    fig.tight_layout(pad=0.3)
    picture_data.save_figure(fig, out)
    return nearest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    picture_data.add_model_flags(parser)
    parser.add_argument("--bank_split", default="train")
    parser.add_argument("--query_split", default="test")
    parser.add_argument("--bank_size", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--out", required=True, help="the PNG file to write")
    args = parser.parse_args(argv)
    if args.queries < 1 or args.k < 1 or args.bank_size < args.k:
        parser.error("--queries and --k must be >= 1 and --bank_size >= --k")
    from simclr_tf.config import ConfigError
    from simclr_tf.data import DataError

    try:
        encoder_fn, size, source = picture_data.open_model_and_source(args)
        bank = picture_data.sample(
            source,
            args.bank_split,
            args.bank_size,
            encoder_fn,
            size,
            args.seed,
            args.batch_size,
            "bank",
        )
        queries = picture_data.sample(
            source,
            args.query_split,
            args.queries,
            encoder_fn,
            size,
            args.seed,
            args.batch_size,
            "queries",
        )
    except (ConfigError, DataError, FileNotFoundError, ValueError) as error:
        print(f"plot_neighbors: error: {error}", file=sys.stderr)
        return 2
    queries.images, queries.labels, queries.features = (
        queries.images[: args.queries],
        queries.labels[: args.queries],
        queries.features[: args.queries],
    )
    nearest = plot(queries, bank, args.k, args.out)
    if (queries.labels >= 0).all():
        hits = (bank.labels[nearest] == queries.labels[:, None]).mean()
        print(f"plot_neighbors: {hits:.0%} of the neighbours share the query's class")
    print(f"plot_neighbors: {len(queries.images)} queries x {args.k} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
