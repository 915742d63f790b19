"""Embeddings of every image in a folder (or any simclr_tf dataset split), for search,
deduplication and TensorBoard's Embedding Projector.

  python tools/embed.py --encoder=runs/cpu30 --images=folder:PATH --out=DIR
      [--output=h|z] [--split=train] [--batch_size=256] [--projector_max=10000]

`--encoder` is a run directory or a SavedModel from `--mode=export`. Images of any size
are centre-cropped and resized as the run's evaluation does; files that cannot be
decoded (or whose header claims more than --max_image_pixels) are skipped and counted.

Writes to DIR:
- `embeddings.npy`: float32 [n, C], h (the representation) or z (`--output=z`, the
  projection head's output), as the network gives them (not normalised);
- `ids.txt`: one image id per row (the file's path relative to the folder);
- `labels.txt`: the class index per row (-1 unlabelled) where the data has classes;
- `projector/`: TensorBoard Projector files for up to --projector_max images (a
  seeded sample beyond that): `projector_config.pbtxt`, `tensors.tsv`, `metadata.tsv`
  (id, label) and `sprite.png`. `tensorboard --logdir DIR/projector` shows the map
  (Projector tab).
With `--map_out=PNG`, also a 2-D t-SNE map (tools/tsne.py) of `--map_size` rows,
coloured by class.
"""

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SPRITE_CELL = 32  # pixels per image in the sprite
SPRITE_MAX_SIDE = 8192  # the Projector's limit on the sprite's side


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", required=True, help="run directory or SavedModel")
    parser.add_argument("--images", required=True, help="folder:PATH, tfrecord:..., or a TFDS name")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory")
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", required=True)
    parser.add_argument("--output", choices=("h", "z"), default="h")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--projector_max", type=int, default=10000)
    parser.add_argument("--max_image_pixels", type=int, default=2**27)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--map_out", default=None, help="also a 2-D t-SNE map of a sample, as a PNG"
    )
    parser.add_argument("--map_size", type=int, default=1000, help="rows in the map")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.projector_max < 0:
        parser.error("--batch_size must be >= 1 and --projector_max >= 0")
    return args


def embed(encoder_fn, image_size, source, split, batch_size, output, progress=True):
    """(embeddings float32 [n, C], ids [n] str, labels int64 [n], thumbnails uint8)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from simclr_tf.augment import image_ops

    key = "final_avg_pool" if output == "h" else "proj_head_output"
    source.check_split(split)
    total = source.num_examples(split)
    dataset = (
        source.load(split, False)
        .map(
            lambda ex: {
                "image": image_ops.eval_view(ex["image"], image_size, image_size),
                "label": ex["label"],
                "id": ex["id"],
            },
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    bar = keras.utils.Progbar(total, unit_name="image") if progress else None
    vectors, ids, labels, thumbs = [], [], [], []
    for batch in dataset:
        vectors.append(encoder_fn(batch["image"], training=False)[key].numpy())
        ids += [i.decode() for i in batch["id"].numpy()]
        labels.append(batch["label"].numpy())
        small = tf.image.resize(batch["image"], (SPRITE_CELL, SPRITE_CELL), antialias=True)
        thumbs.append(np.round(np.clip(small.numpy(), 0, 1) * 255).astype(np.uint8))
        if bar is not None:
            bar.add(len(batch["id"]))
    if not vectors:
        raise ValueError(f"no image of split {split!r} could be read")
    return (
        np.concatenate(vectors).astype(np.float32),
        ids,
        np.concatenate(labels),
        np.concatenate(thumbs),
    )


def write_projector(directory, vectors, ids, labels, thumbs, name, limit, seed):
    """The Projector's files for at most `limit` rows; returns the rows written."""
    import numpy as np
    from PIL import Image

    os.makedirs(directory, exist_ok=True)
    rows = np.arange(len(ids))
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
    per_side = max(1, math.ceil(math.sqrt(len(rows))))
    cell = min(SPRITE_CELL, SPRITE_MAX_SIDE // per_side)
    np.savetxt(os.path.join(directory, "tensors.tsv"), vectors[rows], delimiter="\t", fmt="%.6g")
    with open(os.path.join(directory, "metadata.tsv"), "w") as f:
        f.write("id\tlabel\n")
        for r in rows:
            f.write(f"{ids[r].replace(chr(9), ' ')}\t{int(labels[r])}\n")
    sprite = Image.new("RGB", (per_side * cell, per_side * cell))
    for n, r in enumerate(rows):
        thumb = Image.fromarray(thumbs[r]).resize((cell, cell))
        sprite.paste(thumb, ((n % per_side) * cell, (n // per_side) * cell))
    sprite.save(os.path.join(directory, "sprite.png"))
    config = (
        "embeddings {\n"
        f'  tensor_name: "{name}"\n'
        '  tensor_path: "tensors.tsv"\n'
        '  metadata_path: "metadata.tsv"\n'
        "  sprite {\n"
        '    image_path: "sprite.png"\n'
        f"    single_image_dim: {cell}\n"
        f"    single_image_dim: {cell}\n"
        "  }\n"
        "}\n"
    )
    with open(os.path.join(directory, "projector_config.pbtxt"), "w") as f:
        f.write(config)
    return rows


def write_map(vectors, labels, out, size, seed, title):
    """A t-SNE map of `size` seeded rows of the (unit) embeddings."""
    import numpy as np

    from tools import plot_embedding, tsne

    rows = np.arange(len(vectors))
    if len(rows) > size:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size, replace=False))
    unit = vectors[rows] / np.maximum(np.linalg.norm(vectors[rows], axis=1, keepdims=True), 1e-12)
    points = tsne.tsne(unit, seed=seed)
    plot_embedding.plot(points, labels[rows], out, f"{title}: {len(rows)} images, t-SNE")


def main(argv=None):
    args = parse_args(argv)
    import numpy as np

    from simclr_tf import representations
    from simclr_tf.data import DataError, open_source

    start = time.time()
    try:
        encoder_fn, size = representations.load_encoder(args.encoder, args.output == "z")
        source = open_source(args.images, args.data_dir, max_pixels=args.max_image_pixels)
        vectors, ids, labels, thumbs = embed(
            encoder_fn, size, source, args.split, args.batch_size, args.output
        )
    except (FileNotFoundError, ValueError, DataError) as error:
        print(f"embed: error: {error}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "embeddings.npy"), vectors)
    with open(os.path.join(args.out, "ids.txt"), "w") as f:
        f.write("".join(i + "\n" for i in ids))
    if (labels >= 0).any():
        np.savetxt(os.path.join(args.out, "labels.txt"), labels, fmt="%d")
    projected = write_projector(
        os.path.join(args.out, "projector"),
        vectors,
        ids,
        labels,
        thumbs,
        args.output,
        args.projector_max,
        args.seed,
    )
    if args.map_out:
        write_map(vectors, labels, args.map_out, args.map_size, args.seed, args.encoder)
    skipped = source.skipped.value if source.skipped is not None else 0
    summary = {
        "images": len(ids),
        "skipped_images": skipped,
        "dim": int(vectors.shape[1]),
        "output": args.output,
        "encoder": args.encoder,
        "images_spec": args.images,
        "data_dir": args.data_dir,
        "split": args.split,
        "max_image_pixels": args.max_image_pixels,
        "projector_images": len(projected),
        "seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(args.out, "embed.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(
        f"embed: {len(ids)} images -> {args.out}/embeddings.npy {list(vectors.shape)}"
        f" ({skipped} unreadable skipped); projector: tensorboard --logdir {args.out}/projector"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
