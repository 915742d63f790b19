"""Nearest neighbours and near-duplicates in the embeddings `tools/embed.py` wrote.

  python tools/similar.py --embeddings=DIR --query=ID_OR_IMAGE --k=8 --out=grid.png
  python tools/similar.py --embeddings=DIR --duplicates --threshold=0.95 --out=dups.csv

Similarity is the cosine of the embeddings; the search is exact (one matrix product
per query, in numpy), which stays fast up to a few hundred thousand images. A query
is an id from `ids.txt` or an image file, which is embedded with the encoder that
made DIR. `--duplicates` lists every pair at or above `--threshold` (each pair once,
most similar first) as CSV: id_a, id_b, cosine.
"""

import argparse
import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embeddings", required=True, help="a directory tools/embed.py wrote")
    parser.add_argument("--query", help="an id from ids.txt, or an image file")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--duplicates", action="store_true")
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--out", required=True, help="grid .png, or .csv with --duplicates")
    args = parser.parse_args(argv)
    if args.duplicates == bool(args.query):
        parser.error("give either --query or --duplicates")
    if args.k < 1 or not -1 <= args.threshold <= 1:
        parser.error("--k must be >= 1 and --threshold in [-1, 1]")
    return args


def load(directory):
    """(unit vectors float32 [n, C], ids, labels or None, embed.json's record)."""
    import numpy as np

    vectors = np.load(os.path.join(directory, "embeddings.npy")).astype(np.float32)
    with open(os.path.join(directory, "ids.txt")) as f:
        ids = f.read().splitlines()
    if len(ids) != len(vectors):
        raise ValueError(f"{directory}: {len(ids)} ids for {len(vectors)} embeddings")
    labels_path = os.path.join(directory, "labels.txt")
    labels = (
        np.loadtxt(labels_path, dtype=np.int64, ndmin=1) if os.path.exists(labels_path) else None
    )
    with open(os.path.join(directory, "embed.json")) as f:
        record = json.load(f)
    return unit(vectors), ids, labels, record


def unit(vectors):
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def nearest(vectors, query, k, exclude=None):
    """(indices, cosines) of the k rows most similar to the unit vector `query`, best
    first (ties in row order); `exclude`: a row left out (the query itself)."""
    import numpy as np

    sims = vectors @ query
    if exclude is not None:
        sims[exclude] = -np.inf
    k = min(k, len(sims) - (exclude is not None))
    top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
    top = top[np.lexsort((top, -sims[top]))]
    return top, sims[top]


def duplicate_pairs(vectors, threshold, chunk=1024):
    """Every (i, j, cosine) with i < j and cosine >= threshold, most similar first."""
    import numpy as np

    pairs = []
    for start in range(0, len(vectors), chunk):
        block = vectors[start : start + chunk] @ vectors.T
        rows, cols = np.nonzero(block >= threshold)
        rows += start
        keep = cols > rows
        pairs += zip(
            rows[keep].tolist(), cols[keep].tolist(), block[rows[keep] - start, cols[keep]].tolist()
        )
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return pairs


def embed_file(path, record):
    """The unit embedding of one image file, by the encoder that made the embeddings."""
    import numpy as np
    import tensorflow as tf

    from simclr_tf import representations
    from simclr_tf.augment import image_ops
    from simclr_tf.data import file_sources

    encoder_fn, size = representations.load_encoder(record["encoder"], record["output"] == "z")
    image = file_sources.decode(tf.io.read_file(path), record.get("max_image_pixels", 2**27))
    batch = image_ops.eval_view(image, size, size)[None]
    key = "final_avg_pool" if record["output"] == "h" else "proj_head_output"
    return unit(np.asarray(encoder_fn(batch, training=False)[key]))[0], image


def images_of(record, wanted):
    """{id: uint8 image} for the ids in `wanted`, read from the data DIR was made from."""
    import numpy as np

    from simclr_tf.data import open_source

    source = open_source(record["images_spec"], record.get("data_dir"))
    found = {}
    for example in source.load(record["split"], False, ids=list(wanted)):
        image = example["image"].numpy()
        found[example["id"].numpy().decode()] = np.asarray(image, np.uint8)
    return found


def plot_grid(query_image, query_name, rows, out):
    """The query, then (image, id, cosine) per neighbour, in one row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tools import picture_data

    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(1.6 * (len(rows) + 1), 2.0))
    cells = [(query_image, f"query\n{query_name}")] + [
        (image, f"{cosine:.3f}\n{name}") for image, name, cosine in rows
    ]
    for ax, (image, title) in zip(axes, cells):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title[:40], fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    picture_data.save_figure(fig, out, dpi=150)


def main(argv=None):
    args = parse_args(argv)
    try:
        vectors, ids, _, record = load(args.embeddings)
    except (OSError, ValueError) as error:
        print(f"similar: error: {error}", file=sys.stderr)
        return 2
    if args.duplicates:
        pairs = duplicate_pairs(vectors, args.threshold)
        with open(args.out, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id_a", "id_b", "cosine"])
            writer.writerows((ids[i], ids[j], f"{c:.6f}") for i, j, c in pairs)
        print(f"similar: {len(pairs)} pairs at cosine >= {args.threshold} -> {args.out}")
        return 0
    row = {name: i for i, name in enumerate(ids)}.get(args.query)
    if row is not None:
        query, exclude = vectors[row], row
        query_image = None
    elif os.path.isfile(args.query):
        query, query_image = embed_file(args.query, record)
        query_image = query_image.numpy()
        exclude = None
    else:
        print(
            f"similar: error: {args.query!r} is neither an id in ids.txt nor a file",
            file=sys.stderr,
        )
        return 2
    top, cosines = nearest(vectors, query, args.k, exclude)
    wanted = {ids[i] for i in top} | ({args.query} if query_image is None else set())
    images = images_of(record, wanted)
    if query_image is None:
        query_image = images[args.query]
    rows = [(images[ids[i]], ids[i], float(c)) for i, c in zip(top, cosines)]
    plot_grid(query_image, os.path.basename(args.query), rows, args.out)
    for _, name, cosine in rows:
        print(f"{cosine:.4f}\t{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
