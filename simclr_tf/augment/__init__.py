"""SimCLR's augmentations as stateless `tf.image` graphs: the same seed gives the same
views eagerly and inside `tf.data`.

- `params`: jitter ranges, crop sampler, grayscale weights, blur kernel (shared).
- `image_ops`: one image at a time (any size; the reference for the batched ops).
- `batch_ops`, `batch_colour`: whole batches of one size at once (the fast path).
- `ablation_ops`: the paper's other transforms (rotation, cutout, noise, Sobel).
"""
