"""Pictures of what the network is trained on: a grid of view pairs.

One picture of each pair's two views, side by side, pairs in rows and columns; written
to TensorBoard once per pretraining run (`views` under `logs/train`) and to PNG by
`tools/plot_views.py`, so augmentation flags can be tuned by looking at them.
"""

import math

import numpy as np

GAP = 2  # pixels of white between tiles


def pair_grid(view1, view2, max_pairs=16, columns=4):
    """float [B, S, S, 3] views in [0, 1] -> uint8 [H, W, 3] image: each pair's two
    views side by side, `columns` pairs per row, at most `max_pairs` pairs."""
    view1, view2 = np.asarray(view1, np.float32), np.asarray(view2, np.float32)
    if view1.shape != view2.shape or view1.ndim != 4:
        raise ValueError(f"two view batches of one shape needed, got {view1.shape}, {view2.shape}")
    pairs = min(len(view1), max_pairs)
    columns = max(1, min(columns, pairs))
    rows = math.ceil(pairs / columns)
    size_h, size_w = view1.shape[1:3]
    tile_w = 2 * size_w + GAP
    grid = np.ones((rows * (size_h + GAP) + GAP, columns * (tile_w + 2 * GAP) + GAP, 3), np.float32)
    for i in range(pairs):
        top = GAP + (i // columns) * (size_h + GAP)
        left = GAP + (i % columns) * (tile_w + 2 * GAP)
        grid[top : top + size_h, left : left + size_w] = view1[i]
        grid[top : top + size_h, left + size_w + GAP : left + tile_w] = view2[i]
    return (np.clip(grid, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_summary(log_dir, view1, view2, step, name="views"):
    """The grid as one TensorBoard image at `step` in `log_dir`."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        tf.summary.image(name, pair_grid(view1, view2)[None], step=step)
    writer.close()
